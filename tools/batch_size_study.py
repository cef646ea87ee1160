#!/usr/bin/env python
"""BN vs GN validation error at batch sizes 32 ... 2 (the GN paper's Figure 1, small scale); see
``python tools/batch_size_study.py --help`` and gn_det/cli/batch_size_study.py."""

import sys

from gn_det.cli.batch_size_study import main

if __name__ == "__main__":
    sys.exit(main())
