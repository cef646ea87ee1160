"""Folders made once on first use (generated data sets): filled in a temporary sibling folder,
then renamed into place, so a crash or a concurrent rank never leaves half a folder behind."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["build_folder_once"]

logger = logging.getLogger(__name__)


def build_folder_once(folder: str | os.PathLike, fill: Callable[[Path], None], what: str = "data") -> Path:
    """Return ``folder``, first making it with ``fill(tmp)`` if it does not exist.

    ``fill`` writes into an empty temporary folder next to ``folder``, which is then renamed to
    ``folder`` (atomic on one file system): ``folder`` exists only when complete. When another
    process (another rank) finishes first, its copy is kept and this one is dropped, so ``fill``
    must be deterministic.

    Args:
        folder: the finished folder.
        fill: writes the content into the folder it is given.
        what: named in the log line.
    """
    folder = Path(folder)
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    logger.info("generating %s into %s", what, folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        fill(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
