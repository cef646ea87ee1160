"""Config: fvcore CfgNode with detectron2's key names (see defaults.py).

:func:`get_cfg` gives a fresh copy of the defaults; :func:`load_config` merges a YAML file
(which may inherit from others through ``_BASE_``) and ``KEY VALUE`` overrides on top, and
checks every key and value type on the way, so a typo is an error that names the key and
suggests the closest existing ones instead of being silently ignored.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Iterable, Sequence

import yaml
from fvcore.common.config import CfgNode
from yacs.config import _check_and_coerce_cfg_value_type

from .defaults import _C

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_config", "merge_overrides"]


class ConfigError(ValueError):
    """A user error in a config file or a command-line override (message says how to fix it)."""


def get_cfg() -> CfgNode:
    """A mutable copy of the default config (:mod:`gn_det.config.defaults`)."""
    return _C.clone()


def load_config(config_file: str | None = None, opts: Sequence[str] | None = None, *,
                freeze: bool = True, base: CfgNode | None = None) -> CfgNode:
    """Build a config: defaults, then ``config_file`` (with its ``_BASE_`` chain), then ``opts``.

    Args:
        config_file: path to a YAML file, or None/"" for the defaults only. ``_BASE_`` may be a
            path (relative to the file) or a list of paths; later files override earlier ones.
        opts: flat ``["KEY", "VALUE", ...]`` overrides, as on detectron2's command line. Values
            are parsed as Python literals ("0.01", "(8, 16)", "True"), else kept as strings.
        freeze: freeze the result so later code cannot change it by accident.
        base: start from this config instead of :func:`get_cfg` (it is cloned, not modified).

    Raises:
        ConfigError: missing or unreadable file, invalid YAML, unknown key (the message names it
            and suggests the closest existing keys), or a value of the wrong type.
    """
    cfg = (base if base is not None else _C).clone()
    cfg.defrost()
    if config_file:
        _merge_file(cfg, config_file)
    if opts:
        merge_overrides(cfg, opts)
    if freeze:
        cfg.freeze()
    return cfg


def merge_overrides(cfg: CfgNode, opts: Sequence[str]) -> None:
    """Merge ``["KEY", "VALUE", ...]`` into ``cfg`` (in place), checking keys and types."""
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"Overrides must be KEY VALUE pairs; got an odd number of items: {opts}. "
                          f"The last key {opts[-1]!r} has no value.")
    for key, value in zip(opts[0::2], opts[1::2]):
        _merge_value(cfg, key, value, "command-line override")


def _merge_value(cfg: CfgNode, full_key: str, value: Any, source: str) -> None:
    """Check ``full_key`` exists, decode ``value`` as yacs does (so detectron2's tuple style
    ``TRAIN: ("coco_2017_train",)`` works) and set it with a type check."""
    _check_key(cfg, full_key.split("."), source=source)
    try:
        _set(cfg, full_key, CfgNode._decode_cfg_value(value))
    except ValueError as e:
        raise ConfigError(_type_message(cfg, full_key, value, e, source)) from None


def _merge_file(cfg: CfgNode, config_file: str) -> None:
    if not os.path.isfile(config_file):
        raise ConfigError(f"Config file not found: {config_file!r}. Pass an existing YAML file to "
                          f"--config-file (paths are relative to the current directory).")
    try:
        loaded = CfgNode.load_yaml_with_base(config_file, allow_unsafe=False)
    except FileNotFoundError as e:
        raise ConfigError(f"{config_file}: a _BASE_ config file does not exist: {e.filename!r}. "
                          f"_BASE_ paths are relative to the file that names them.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{config_file} (or one of its _BASE_ files) is not valid YAML: {e}") from None
    except AssertionError as e:  # fvcore: a key is a dict in one file and a value in another
        raise ConfigError(f"{config_file}: {e}") from None
    if loaded is None:
        return
    if not isinstance(loaded, dict):
        raise ConfigError(f"{config_file} must hold a mapping of config keys, got {type(loaded).__name__}")
    for full_key, value in _flatten(loaded):
        _merge_value(cfg, full_key, value, f"config file {config_file}")


def _flatten(d: dict, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Leaf ``("A.B.C", value)`` pairs of a nested dict (what a YAML file sets)."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def _get(cfg: CfgNode, full_key: str) -> Any:
    node = cfg
    for part in full_key.split("."):
        node = node[part]
    return node


def _closest(key: str, candidates: list[str]) -> list[str]:
    """Up to 3 close keys, only those nearly as close as the best (a shared "SOLVER." prefix alone
    makes every SOLVER key look similar)."""
    scored = sorted(((difflib.SequenceMatcher(None, key, c).ratio(), c) for c in candidates), reverse=True)
    if not scored or scored[0][0] < 0.6:
        return []
    return [c for r, c in scored[:3] if r >= scored[0][0] - 0.05]


def _set(cfg: CfgNode, full_key: str, value: Any) -> None:
    """Set a checked key, with yacs' type check (list<->tuple, None) plus int->float."""
    *parents, leaf = full_key.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    default = node[leaf]
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # YAML "BASE_LR: 1" is an int; accept it where the default is a float
    node[leaf] = _check_and_coerce_cfg_value_type(value, default, leaf, full_key)


def _all_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        keys.append(prefix + k)
        if isinstance(v, CfgNode):
            keys.extend(_all_keys(v, prefix + k + "."))
    return keys


def _check_key(cfg: CfgNode, parts: list[str], source: str) -> None:
    node = cfg
    for i, part in enumerate(parts):
        if not isinstance(node, CfgNode) or part not in node:
            bad = ".".join(parts)
            if not isinstance(node, CfgNode):
                raise ConfigError(f"Unknown config key {bad!r} (in {source}): "
                                  f"{'.'.join(parts[:i])} is a value, not a section.")
            candidates = _all_keys(cfg)
            close = _closest(bad, candidates)
            # the right leaf in another section: MODEL.NORM -> MODEL.RESNETS.NORM, MODEL.FPN.NORM, ...
            close += [c for c in candidates if c.split(".")[-1] == parts[-1] and c not in close]
            close = close[:5]
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"Unknown config key {bad!r} (in {source}).{hint} "
                              f"All keys are listed in gn_det/config/defaults.py.")
        node = node[part]


def _type_message(cfg: CfgNode, key: str, value: Any, err: Exception, source: str) -> str:
    default = _get(cfg, key)
    return (f"Bad value for config key {key!r} (in {source}): got {value!r} "
            f"({type(value).__name__}), expected a {type(default).__name__} like the default "
            f"{default!r}. ({err})")
