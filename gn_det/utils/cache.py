"""Where gn_det keeps what it makes or downloads once: ``$GN_DET_CACHE`` (default ``~/.cache/gn_det``).

Sub-folders: ``synthetic/`` and ``synthetic_cls/`` (generated data sets), ``weights/`` (downloaded
pretrained weights, :mod:`gn_det.checkpoint.weight_urls`).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_root"]

CACHE_ENV = "GN_DET_CACHE"


def cache_root() -> Path:
    """``$GN_DET_CACHE``, default ``~/.cache/gn_det``."""
    return Path(os.environ.get(CACHE_ENV, "~/.cache/gn_det")).expanduser()
