"""Atomic file writes: the ground floor every package writes files through.

A write goes to a temporary file in the target's folder, is flushed and fsynced, and is then moved
in place with ``os.replace``; a crash or a full disk at any moment leaves either the old file or
the new one, never a half-written one. Temporary files are named ``.<name>.<random>.tmp``
(:func:`temporary_name`); a process killed mid-write leaves one behind, which
:func:`remove_stale_temporaries` clears on the next start.

Files are created like ordinary files: mode ``0o666`` minus the process umask (``0o644`` with the
usual umask 022, ``0o664`` with 002), so a team can read a shared output folder. (``mkstemp``
would make them ``0o600`` whatever the umask.)
"""

from __future__ import annotations

import io
import os
import pickle
import re
import secrets
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write_file", "atomic_save", "atomic_write_pickle", "atomic_write_text", "temporary_name",
           "remove_stale_temporaries"]

_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]+\.tmp$")


def temporary_name(name: str) -> str:
    """The name of a temporary file for target ``name``: ``.<name>.<8 random hex digits>.tmp``."""
    return f".{name}.{secrets.token_hex(4)}.tmp"


def _create_temporary(folder: Path, name: str) -> tuple[int, Path]:
    """Create and open a new temporary file for ``name`` in ``folder``; mode 0o666 minus the umask
    (the kernel applies the umask and any default ACL, as for any new file)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = folder / temporary_name(name)
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file for {name} in {folder}")


def atomic_write_file(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(f)`` on a temp file next to ``path``, fsync it, then ``os.replace`` it in place."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(p.parent, p.name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, Exception) and not hasattr(e, "target_file"):
            # Names the file for error messages: a full disk surfaces as torch.save's RuntimeError
            # (or an OSError without a file name), which does not say what was being written.
            e.target_file = str(p)
        raise
    return p


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically (temp file in the same directory + ``os.replace``)."""
    import torch  # here: the CLIs write text files through this module before they need torch

    return atomic_write_file(path, lambda f: torch.save(obj, f))


def atomic_write_pickle(obj: Any, path: str | os.PathLike, protocol: int = 4) -> Path:
    """Pickle ``obj`` to ``path`` atomically; protocol 4 keeps files readable by older Pythons."""
    return atomic_write_file(path, lambda f: pickle.dump(obj, f, protocol=protocol))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write UTF-8 text to ``path`` atomically."""
    return atomic_write_file(path, lambda f: f.write(text.encode("utf-8")))


def remove_stale_temporaries(folder: str | os.PathLike, targets: str | re.Pattern) -> list[tuple[str, int]]:
    """Delete the temporary files that atomic writes to ``folder`` left behind when killed.

    Only call this when no other process writes to ``folder``: a temporary file in use would go.

    Args:
        folder: the folder (not recursive); a missing folder has none.
        targets: a regular expression the *target* name must match in full (``model_.*\\.pth``
            removes ``.model_0000099.pth.3fa9c2d1.tmp``), so other programs' files stay.

    Returns:
        ``(file name, size in bytes)`` of each file removed.
    """
    pattern = re.compile(targets) if isinstance(targets, str) else targets
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if not m or not pattern.fullmatch(m.group("target")) or not entry.is_file(follow_symlinks=False):
            continue
        size = entry.stat(follow_symlinks=False).st_size
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed.append((entry.name, size))
    return sorted(removed)
