"""A module, or a package's names, imported on first use, so that a command line answers ``--help``
or a config error without paying for torch (about 2 s warm on a small machine, more cold)."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

__all__ = ["lazy_module", "lazy_exports"]


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


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]) -> tuple[Callable[[str], Any],
                                                                           Callable[[], list[str]]]:
    """PEP 562 ``__getattr__`` and ``__dir__`` for a package whose names come from its submodules on
    first use, so that importing one light submodule (a list of names for a parser's ``choices``) does
    not import the heavy ones (torch) beside it. ``from package import name`` works as before.

    Args:
        package: the package's ``__name__``.
        exports: relative submodule name -> the names the package re-exports from it,
            e.g. ``{".norm": ("NormSpec", "parse_norm")}``.

    Example::

        _EXPORTS = {".norm": ("NormSpec", "parse_norm")}
        __all__ = [name for names in _EXPORTS.values() for name in names]
        __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
    """
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        setattr(sys.modules[package], name, value)  # later reads skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
