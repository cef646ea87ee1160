#!/usr/bin/env python
"""Re-encode a folder of videos: short side, constant fps, short GOP (see gn_det.cli.prepare_videos)."""

import sys

from gn_det.cli.prepare_videos import main

if __name__ == "__main__":
    sys.exit(main())
