#!/usr/bin/env python
"""Run a trained model on your own images or videos; see ``python tools/demo.py --help`` and
gn_det/cli/demo.py."""

import sys

from gn_det.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
