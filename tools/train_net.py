#!/usr/bin/env python
"""Train or evaluate a model from a YAML config; see ``python tools/train_net.py --help`` and
gn_det/cli/train_net.py."""

import sys

from gn_det.cli.train_net import main

if __name__ == "__main__":
    sys.exit(main())
