"""Atomic file writes: the ground floor every package writes files through.

A write goes to a temporary file in the target's folder, is flushed and fsynced, and is then moved
in place with ``os.replace``; a crash or a full disk at any moment leaves either the old file or
the new one, never a half-written one. Temporary files are named ``.<name>.<random>.tmp``.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["atomic_write_file", "atomic_save", "atomic_write_pickle", "atomic_write_text"]


def atomic_write_file(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(f)`` on a temp file next to ``path``, fsync it, then ``os.replace`` it in place."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically (temp file in the same directory + ``os.replace``)."""
    return atomic_write_file(path, lambda f: torch.save(obj, f))


def atomic_write_pickle(obj: Any, path: str | os.PathLike, protocol: int = 4) -> Path:
    """Pickle ``obj`` to ``path`` atomically; protocol 4 keeps files readable by older Pythons."""
    return atomic_write_file(path, lambda f: pickle.dump(obj, f, protocol=protocol))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write UTF-8 text to ``path`` atomically."""
    return atomic_write_file(path, lambda f: f.write(text.encode("utf-8")))
