"""A module imported on first use, so that a command line answers ``--help`` or a config error
without paying for torch (about 2 s warm on a small machine, more cold)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["lazy_module"]


class _LazyModule:
    """Stands for module ``name``; the first attribute read imports it (then reads go straight to it)."""

    def __init__(self, name: str) -> None:
        self.__dict__["_name"] = name
        self.__dict__["_module"] = None

    def _load(self) -> ModuleType:
        if self._module is None:
            self.__dict__["_module"] = importlib.import_module(self._name)
        return self._module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (imported)' if self._module is not None else ''}>"


def lazy_module(name: str) -> Any:
    """A stand-in for ``import name`` at module level that imports ``name`` on first attribute access.

    Args:
        name: the absolute module name, e.g. ``"torch.distributed"``.
    """
    return _LazyModule(name)
