#!/usr/bin/env python
"""Export a trained model to TorchScript or ONNX (WS folded, checked against the eager model); see
``python tools/export.py --help`` and gn_det/cli/export.py."""

import sys

from gn_det.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
