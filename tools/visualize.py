#!/usr/bin/env python
"""Draw detections on images to PNG; see ``python tools/visualize.py --help`` and gn_det/cli/visualize.py."""

import sys

from gn_det.cli.visualize import main

if __name__ == "__main__":
    sys.exit(main())
