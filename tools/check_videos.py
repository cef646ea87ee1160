#!/usr/bin/env python
"""Pre-flight check of a video list and its files (see gn_det.cli.check_videos)."""

import sys

from gn_det.cli.check_videos import main

if __name__ == "__main__":
    sys.exit(main())
