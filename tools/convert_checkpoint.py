#!/usr/bin/env python
"""Convert a BatchNorm ResNet checkpoint to GN / GN+WS (see gn_det.cli.convert_checkpoint)."""

import sys

from gn_det.cli.convert_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
