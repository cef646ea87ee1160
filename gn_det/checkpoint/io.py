"""Safe reading and atomic writing of checkpoint files.

Checkpoints come from the internet, so they are treated as untrusted:

- ``.pth`` files load through :func:`safe_torch_load`, i.e. ``torch.load(weights_only=True)``,
  which only rebuilds tensors and plain containers.
- ``.pkl`` files (detectron2 and Detectron/Caffe2 checkpoints) load through
  :class:`RestrictedUnpickler`, which only builds numpy arrays, numpy dtypes and scalars, plain
  containers and Python scalars. Anything else (``os.system``, ``eval``, arbitrary classes) is
  refused before it is called.

Every failure is raised as :class:`CheckpointError` naming the file and saying what to do, never as
a deep unpickling traceback. Atomic writes (:mod:`gn_det.utils.io`) are re-exported here.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Re-exported for callers that save checkpoints; the writers live on the ground floor (utils).
from ..utils.io import atomic_save, atomic_write_file, atomic_write_pickle, atomic_write_text

__all__ = ["CheckpointError", "safe_torch_load", "RestrictedUnpickler", "load_pickle", "atomic_save",
           "atomic_write_pickle", "atomic_write_text", "atomic_write_file"]


class CheckpointError(ValueError):
    """A checkpoint file or its contents cannot be used; the message names the file or key."""


_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pkl", ".pickle", ".ckpt", ".bin")


# (module, name) pairs the restricted unpickler may resolve. numpy moved its internals from
# numpy.core to numpy._core in 2.0; old pickles name the former, new ones the latter.
_NUMPY_GLOBALS = {
    ("multiarray", "_reconstruct"),   # ndarray.__reduce__ (protocols 0-4)
    ("multiarray", "scalar"),         # numpy scalars (np.float32(1.0))
    ("numeric", "_frombuffer"),       # ndarray.__reduce_ex__ with protocol 5
}
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "complex"),
    ("builtins", "slice"),
    ("builtins", "bytearray"),
    # Python-3 pickles of bytes at protocol <= 2 encode them with _codecs.encode(str, "latin1").
    ("_codecs", "encode"),
    ("codecs", "encode"),
}
for _pkg in ("numpy.core", "numpy._core"):
    for _mod, _name in _NUMPY_GLOBALS:
        _ALLOWED_GLOBALS.add((f"{_pkg}.{_mod}", _name))


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only builds numpy arrays/dtypes/scalars, plain containers and scalars.

    ``find_class`` is the only way a pickle can reach code; it is answered from an allow-list and
    refuses everything else with :class:`pickle.UnpicklingError` naming the refused global.
    Python-2 era Detectron pickles need ``encoding="latin1"`` (the default here).
    """

    def __init__(self, file, *, encoding: str = "latin1", **kwargs) -> None:
        super().__init__(file, encoding=encoding, **kwargs)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refused to load global '{module}.{name}': only numpy arrays and plain containers are "
            f"allowed in a checkpoint pickle")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused a persistent id: plain pickles do not use them")


def _check_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint file not found: {p}")
    if p.is_dir():
        raise CheckpointError(f"{p} is a directory, not a checkpoint file: {_files_inside(p)}")
    if not p.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {p}")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p} is empty (0 bytes); re-download it")
    return p


def _files_inside(folder: Path) -> str:
    """What to give instead of ``folder``: the checkpoint files in it."""
    names = sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.endswith(_CHECKPOINT_SUFFIXES))
    if not names:
        return "it holds no checkpoint file (.pth, .pkl); give the path of the weights file itself"
    best = "model_final.pth" if "model_final.pth" in names else names[-1]
    listed = ", ".join(names[:4]) + (f", ... ({len(names) - 4} more)" if len(names) > 4 else "")
    return f"give the file inside it, e.g. {folder / best} (it holds {listed})"


def _object_array_entry(obj: Any, where: str = "", depth: int = 0) -> str | None:
    """The key path of the first numpy object array inside ``obj`` (dicts, lists, tuples), or None."""
    if isinstance(obj, np.ndarray):
        return (where or "the top level") if obj.dtype.hasobject else None
    if depth > 8:  # checkpoints nest two or three levels; deeper is not worth walking
        return None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        found = _object_array_entry(value, f"{where}/{key}" if where else str(key), depth + 1)
        if found:
            return found
    return None


def load_pickle(path: str | os.PathLike) -> Any:
    """Read a ``.pkl`` file through :class:`RestrictedUnpickler` (latin1 for Python-2 pickles).

    Raises:
        CheckpointError: missing/empty/truncated/corrupt file, a pickle that asks for anything
            beyond numpy arrays and plain containers (nothing in it is executed), or one holding
            a numpy array of Python objects (``dtype=object``), which is no weight tensor.
    """
    p = _check_file(path)
    data = _unpickle(p)
    entry = _object_array_entry(data)
    if entry is not None:
        raise CheckpointError(f"{p}: entry '{entry}' is a numpy array of Python objects (dtype=object), not "
                              f"numbers, so it cannot be a weight; re-export the checkpoint with numeric arrays "
                              f"(np.asarray(x, dtype=np.float32))")
    return data


def _unpickle(p: Path) -> Any:
    with open(p, "rb") as f:
        try:
            return RestrictedUnpickler(f).load()
        except pickle.UnpicklingError as e:
            if "refused" in str(e):
                raise CheckpointError(f"{p} is not a plain weights pickle and was not loaded: {e}. "
                                      f"Only load checkpoints from sources you trust; re-export it "
                                      f"as a dict of numpy arrays") from None
            raise CheckpointError(f"{p} is corrupt or not a pickle ({e}); re-download it") from None
        except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
                UnicodeDecodeError, OverflowError, MemoryError) as e:
            raise CheckpointError(f"{p} is truncated or corrupt ({type(e).__name__}: {e}); "
                                  f"re-download it") from None


def _weights_only_detail(message: str) -> tuple[bool, str]:
    """(is it a refused global?, the one informative line) from torch's long weights_only error."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported global" in line:
            return True, line
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[-1].strip()
            return False, rest or (lines[i + 1] if i + 1 < len(lines) else line)
    return False, lines[0] if lines else "unpickling failed"


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with clear errors.

    Raises:
        CheckpointError: missing, empty, truncated or corrupt file, or a file holding arbitrary
            Python objects (refused by ``weights_only``; nothing in it is executed).
    """
    p = _check_file(path)
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        refused, detail = _weights_only_detail(str(e))
        if refused:
            raise CheckpointError(f"{p} holds Python objects that weights_only loading refuses "
                                  f"({detail}); it was not loaded. Re-save only the state dict "
                                  f"(torch.save(model.state_dict(), ...))") from None
        raise CheckpointError(f"{p} is corrupt or not a PyTorch file ({detail}); re-download it") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            UnicodeDecodeError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{p} is truncated or corrupt ({first}); re-download it") from None
