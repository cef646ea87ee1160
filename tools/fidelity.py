#!/usr/bin/env python
"""BN -> GN / GN+WS fidelity, naive vs calibrated; see ``python tools/fidelity.py --help`` and gn_det/cli/fidelity.py."""

import sys

from gn_det.cli.fidelity import main

if __name__ == "__main__":
    sys.exit(main())
