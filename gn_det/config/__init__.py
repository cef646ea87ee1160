"""Config: fvcore CfgNode with detectron2's key names (see defaults.py).

:func:`get_cfg` gives a fresh copy of the defaults of one task: the shared tree plus the keys
the task declares (``add_config``, registered with :func:`register_task_config` when the task
registers itself). :func:`load_config` reads ``TASK`` first (from the file, its ``_BASE_``
chain and the overrides), builds that task's defaults, then merges the YAML file and the
``KEY VALUE`` overrides on top, checking every key and value type on the way, so a typo is an
error that names the key and suggests the closest existing ones instead of being silently
ignored; a key of another task says which task it belongs to. Then the shared keys' values are
checked (:func:`shared_value_problems`: SOLVER.MAX_ITER >= 1, ...; a ``_BASE_`` cycle is refused
when the file is read). Last, the task's ``check`` refuses values its builders cannot honour
(one :class:`ConfigError` naming key, value and what is supported), so nothing is built from a
value that would be ignored.

detectron2's own YAML files name no ``TASK``: a config file whose ``_BASE_`` chain names no TASK
(and no ``TASK`` override) is read as detectron2 reads it, as a detection config whose keys left
out take detectron2's defaults (the task's ``add_detectron2_defaults``), not gn_det's. Name
``TASK: detection`` to start from gn_det's defaults instead.

Tasks not registered yet are found through the ``gn_det_tasks`` entry points of the installed
packages (:mod:`gn_det.utils.plugins`); this package names no task.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from typing import Any, Callable, Iterable, Sequence

import yaml
from fvcore.common.config import CfgNode
from yacs.config import _check_and_coerce_cfg_value_type

from ..utils.plugins import entry_point_names, load_entry_point
from .defaults import _C

__all__ = ["CfgNode", "ConfigError", "config_value", "get_cfg", "load_config", "merge_overrides", "peek_task",
           "register_task_config", "refuse_unsupported", "shared_value_problems", "SUPPORTED_VERSION"]

SUPPORTED_VERSION = 2
# task name -> function adding that task's keys (and defaults) to a config, in place
_TASK_CONFIGS: dict[str, Callable[[CfgNode], None]] = {}
# task name -> function refusing (ConfigError) values the task cannot honour, run after every merge
_TASK_CHECKS: dict[str, Callable[..., None]] = {}
# task name -> function setting detectron2's defaults where they differ from the task's (in place)
_DETECTRON2_DEFAULT_HOOKS: dict[str, Callable[[CfgNode], None]] = {}
_DETECTRON2_HINT = ("({key} is detectron2's default here: this config file names no TASK, so it is read as "
                    "detectron2's, and keys it leaves out take detectron2's defaults; set {key}, or add "
                    "TASK: detection to start from gn_det's defaults)")


class ConfigError(ValueError):
    """A user error in a config file or a command-line override (message says how to fix it).

    Attributes:
        keys: the config keys refused, when the error is about values (see :func:`refuse_unsupported`).
    """

    def __init__(self, message: str, keys: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.keys = list(keys)


def register_task_config(task: str, add_config: Callable[[CfgNode], None], *,
                         check: Callable[..., None] | None = None,
                         add_detectron2_defaults: Callable[[CfgNode], None] | None = None) -> None:
    """Declare the keys of ``task``: ``add_config(cfg)`` adds them to a config (in place).

    Called by :func:`gn_det.engine.task.register_task` for task classes with ``add_config``.

    Args:
        task: the TASK name.
        add_config: adds the task's keys with gn_det's defaults.
        check: ``check(cfg, detectron2_file=...)`` raises :class:`ConfigError` for a value the task
            cannot honour; :func:`load_config` runs it on every config it returns, saying whether
            the file was read as detectron2's (where a few keys mean something else).
        add_detectron2_defaults: sets detectron2's defaults where they differ from gn_det's; applied
            to config files that name no TASK (detectron2's own files), before they are merged.
    """
    _TASK_CONFIGS[task] = add_config
    _TASK_CHECKS.pop(task, None)
    _DETECTRON2_DEFAULT_HOOKS.pop(task, None)
    if check is not None:
        _TASK_CHECKS[task] = check
    if add_detectron2_defaults is not None:
        _DETECTRON2_DEFAULT_HOOKS[task] = add_detectron2_defaults


def refuse_unsupported(problems: Iterable[str]) -> None:
    """Raise one :class:`ConfigError` for the values a builder cannot honour, or return if none.

    Args:
        problems: one sentence per refused value, each ``"KEY = value: what is supported"``
            (``"MODEL.ROI_HEADS.NAME = 'Res5ROIHeads': gn_det builds StandardROIHeads only"``).
            The first is shown in full, the keys of the others after it, on one line.
    """
    problems = list(problems)
    if not problems:
        return
    keys = [p.split(" = ", 1)[0] for p in problems]
    more = "; also unsupported: " + ", ".join(keys[1:]) if len(problems) > 1 else ""
    raise ConfigError(problems[0] + more, keys)


def _task_config_hook(task: str) -> Callable[[CfgNode], None] | None:
    """The ``add_config`` of ``task``: registered, installed (entry point) or ``module:Class``."""
    if task in _TASK_CONFIGS:
        return _TASK_CONFIGS[task]
    if ":" in task:
        import importlib

        module, _, attr = task.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"TASK {task!r}: cannot import {attr!r} from module {module!r} ({e})") from None
        if getattr(factory, "add_config", None) is not None:
            register_task_config(task, factory.add_config, check=getattr(factory, "check_config", None),
                                 add_detectron2_defaults=getattr(factory, "add_detectron2_defaults", None))
        return _TASK_CONFIGS.get(task)
    load_entry_point(task)  # an installed task registers itself (and its keys) on import
    return _TASK_CONFIGS.get(task)


def get_cfg(task: str | None = None) -> CfgNode:
    """A mutable copy of the defaults of ``task`` (default: the default TASK, "detection").

    The shared keys (:mod:`gn_det.config.defaults`) plus the task's own keys. A task that
    declares no keys gets the shared tree only.

    Raises:
        ConfigError: ``task`` is neither registered nor installed (the message lists the known ones).
    """
    cfg = _C.clone()
    task = cfg.TASK if task is None else task
    hook = _task_config_hook(task)
    if hook is None and ":" not in task and task not in _known_tasks():
        raise ConfigError(f"Unknown TASK {task!r}; known tasks: {_known_tasks()}, or "
                          f"'package.module:TaskClass' for a task of your own")
    cfg.TASK = task
    if hook is not None:
        hook(cfg)
    return cfg


def _known_tasks() -> list[str]:
    return sorted(set(_TASK_CONFIGS) | set(entry_point_names()))


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

    A config file that names no TASK (neither in its ``_BASE_`` chain nor as an override) is a
    detectron2 config: it starts from detectron2's defaults where they differ from gn_det's.

    Raises:
        ConfigError: missing or unreadable file, invalid YAML, unknown key (the message names it
            and suggests the closest existing keys), a value of the wrong type, or a value the
            task cannot honour (named with what is supported).
    """
    detectron2_file = False
    if base is not None:
        cfg = base.clone()
    else:
        task, named = _peek_task(config_file, opts)
        cfg = get_cfg(task)
        detectron2_file = bool(config_file) and not named and task in _DETECTRON2_DEFAULT_HOOKS
        if detectron2_file:
            _DETECTRON2_DEFAULT_HOOKS[task](cfg)
    cfg.defrost()
    given: set[str] = set()
    if config_file:
        given |= _merge_file(cfg, config_file)
    if opts:
        merge_overrides(cfg, opts)
        given |= set(list(opts)[0::2])
    if cfg.VERSION != SUPPORTED_VERSION:
        raise ConfigError(f"VERSION {cfg.VERSION}: only detectron2's config VERSION {SUPPORTED_VERSION} "
                          f"(its current key names) is understood; upgrade the file with detectron2's "
                          f"tools or rename its keys, then set VERSION: {SUPPORTED_VERSION}")
    check = _TASK_CHECKS.get(cfg.TASK)
    refuse_unsupported(shared_value_problems(cfg))
    if check is not None:
        try:
            check(cfg, detectron2_file=detectron2_file)
        except ConfigError as e:
            if not detectron2_file or not e.keys or e.keys[0] in given:
                raise
            # the refused value is one the file did not write: say where it came from
            raise ConfigError(f"{e} {_DETECTRON2_HINT.format(key=e.keys[0])}", e.keys) from None
    if freeze:
        cfg.freeze()
    return cfg


def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda v: v >= low


def _positive(v: Any) -> bool:
    return math.isfinite(v) and v > 0


AMP_DTYPES = ("auto", "float16", "bfloat16")
COMPILE_MODES = ("", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_SCOPES = ("backbone", "model")

# (shared key, test its value must pass, what it must be): values every task's engine or loaders
# would otherwise refuse deep inside (fvcore's scheduler, torch's optimizer, the DataLoader).
_SHARED_RANGES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("SOLVER.MAX_ITER", _at_least(1), "the number of training iterations, >= 1"),
    ("SOLVER.IMS_PER_BATCH", _at_least(1), "the global batch (images per step over all GPUs), >= 1"),
    ("SOLVER.ACCUM_STEPS", _at_least(1), "micro-batches per optimizer step, >= 1"),
    ("SOLVER.BASE_LR", _positive, "the learning rate, > 0"),
    ("SOLVER.MOMENTUM", _at_least(0), "SGD momentum, >= 0"),
    ("SOLVER.WEIGHT_DECAY", _at_least(0), ">= 0"),
    ("SOLVER.WEIGHT_DECAY_NORM", _at_least(0), ">= 0"),
    ("SOLVER.WEIGHT_DECAY_BIAS", lambda v: v is None or v >= 0, ">= 0, or None for SOLVER.WEIGHT_DECAY"),
    ("SOLVER.BIAS_LR_FACTOR", _at_least(0), ">= 0 (a factor on SOLVER.BASE_LR for biases)"),
    ("SOLVER.GAMMA", _positive, "the lr factor at each of SOLVER.STEPS, > 0"),
    ("SOLVER.STEPS", lambda v: all(s >= 1 for s in v), "iterations >= 1 at which the lr drops (steps at or "
                                                       "past SOLVER.MAX_ITER are never reached)"),
    ("SOLVER.WARMUP_ITERS", _at_least(0), "iterations of lr warmup, >= 0 (0: none)"),
    ("SOLVER.WARMUP_FACTOR", _at_least(0), "the lr factor warmup starts from, >= 0"),
    ("SOLVER.CHECKPOINT_PERIOD", _at_least(1), "iterations between checkpoints, >= 1"),
    ("SOLVER.CHECKPOINT_MAX_TO_KEEP", _at_least(0), "periodic checkpoints kept, >= 0 (0: all)"),
    ("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", _positive, "the gradient clipping threshold, > 0"),
    ("SOLVER.CLIP_GRADIENTS.NORM_TYPE", lambda v: v > 0, "the p of the clipped gradient p-norm, > 0 (inf: max)"),
    ("TEST.EVAL_PERIOD", _at_least(0), "iterations between evaluations, >= 0 (0: only after training)"),
    ("DATALOADER.NUM_WORKERS", _at_least(0), "data-loading worker processes per GPU, >= 0 (0: in the main one)"),
    ("LOG_PERIOD", _at_least(1), "iterations between log lines, >= 1"),
    ("MODEL.DEVICE", lambda v: re.fullmatch(r"auto|cpu|(cuda|xpu|mps)(:\d+)?", v) is not None,
     "'auto' (this rank's GPU if there is one, else the CPU), 'cpu' or 'cuda'"),
    ("MODEL.GROUP_NORM.NUM_GROUPS", _at_least(1), "GroupNorm groups per layer, >= 1"),
    ("MODEL.GROUP_NORM.CHANNELS_PER_GROUP", _at_least(0), "channels per GN group, >= 0 (0: use NUM_GROUPS)"),
    ("MODEL.GROUP_NORM.EPS", _positive, "the norm's epsilon, > 0"),
    ("MODEL.BACKBONE.FREEZE_AT", lambda v: 0 <= v <= 5, "0 (train all) to 5 (freeze the stem and res2..res5)"),
    ("MODEL.RESNETS.NUM_GROUPS", _at_least(1), "ResNeXt cardinality, >= 1 (1: ResNet)"),
    ("MODEL.RESNETS.WIDTH_PER_GROUP", _at_least(1), "channels per ResNeXt group, >= 1 (64: ResNet)"),
    ("SOLVER.AMP.DTYPE", lambda v: v in AMP_DTYPES, f"one of {AMP_DTYPES}"),
    ("MODEL.COMPILE.MODE", lambda v: v in COMPILE_MODES, f"one of {COMPILE_MODES} ('': no torch.compile)"),
    ("MODEL.COMPILE.SCOPE", lambda v: v in COMPILE_SCOPES, f"one of {COMPILE_SCOPES}"),
)


def shared_value_problems(cfg: CfgNode) -> list[str]:
    """The values of the shared keys (:mod:`gn_det.config.defaults`) no task can run with, one
    ``"KEY = value: what it must be"`` sentence each (for :func:`refuse_unsupported`).

    :func:`load_config` refuses them for every task, so a bad SOLVER or DATALOADER value is a
    one-line error before anything is built, not a traceback from fvcore or torch.
    """
    problems = []
    for key, ok, must_be in _SHARED_RANGES:
        value = config_value(cfg, key)
        try:
            good = bool(ok(value))
        except TypeError:  # e.g. a string where a number belongs
            good = False
        if not good:
            problems.append(f"{key} = {value!r}: must be {must_be}")
    if cfg.SOLVER.NESTEROV and cfg.SOLVER.MOMENTUM <= 0:
        problems.append(f"SOLVER.NESTEROV = True: Nesterov needs SOLVER.MOMENTUM > 0 (got {cfg.SOLVER.MOMENTUM}); "
                        f"set SOLVER.MOMENTUM or SOLVER.NESTEROV False")
    return problems


def peek_task(config_file: str | None = None, opts: Sequence[str] | None = None) -> str:
    """The TASK a config file (with its ``_BASE_`` chain) and overrides select, before any merge.

    The task's keys must exist before the file is merged, so TASK is read first: the last
    ``TASK`` override wins, then the file, then the default ("detection", the task of
    detectron2's configs, which name none).
    """
    return _peek_task(config_file, opts)[0]


def _peek_task(config_file: str | None, opts: Sequence[str] | None) -> tuple[str, bool]:
    """(TASK, whether the file chain or an override names it)."""
    task, named = _C.TASK, False
    if config_file:
        loaded = _load_yaml(config_file)
        if isinstance(loaded, dict) and "TASK" in loaded:
            task, named = str(loaded["TASK"]), True
    opts = list(opts or [])
    for key, value in zip(opts[0::2], opts[1::2]):
        if key == "TASK":
            task, named = str(CfgNode._decode_cfg_value(value)), True
    return task, named


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


def _load_yaml(config_file: str) -> Any:
    """The merged YAML content of ``config_file`` and its ``_BASE_`` chain (keys unchecked)."""
    if not os.path.isfile(config_file):
        raise ConfigError(f"Config file not found: {config_file!r}. Pass an existing YAML file to "
                          f"--config-file (paths are relative to the current directory).")
    _check_base_chain(config_file)
    try:
        loaded = CfgNode.load_yaml_with_base(config_file, allow_unsafe=False)
    except FileNotFoundError as e:
        raise ConfigError(f"{config_file}: a _BASE_ config file does not exist: {e.filename!r}. "
                          f"_BASE_ paths are relative to the file that names them.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{config_file} (or one of its _BASE_ files) is not valid YAML: {e}") from None
    except AssertionError as e:  # fvcore: a key is a dict in one file and a value in another
        raise ConfigError(f"{config_file}: {e}") from None
    return loaded


def _base_paths(config_file: str) -> list[str]:
    """The ``_BASE_`` files ``config_file`` names, resolved as fvcore does (relative to the file);
    [] when it names none or cannot be read (fvcore's own loading then reports that)."""
    try:
        with open(config_file, encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    bases = loaded.get("_BASE_") if isinstance(loaded, dict) else None
    bases = [bases] if isinstance(bases, str) else bases if isinstance(bases, list) else []
    paths = []
    for base in (b for b in bases if isinstance(b, str)):
        base = os.path.expanduser(base) if base.startswith("~") else base
        if not base.startswith(("/", "https://", "http://")):
            base = os.path.join(os.path.dirname(config_file), base)
        paths.append(os.path.normpath(base))
    return paths


def _check_base_chain(config_file: str, chain: tuple[str, ...] = ()) -> None:
    """Refuse a ``_BASE_`` cycle (a.yaml -> b.yaml -> a.yaml, or a file naming itself), which
    fvcore would follow until RecursionError; a file reached twice by two branches is fine."""
    chain = chain + (config_file,)
    seen = [os.path.realpath(p) for p in chain[:-1]]
    if os.path.realpath(config_file) in seen:
        start = seen.index(os.path.realpath(config_file))
        raise ConfigError(f"_BASE_ cycle: {' -> '.join(chain[start:])}; a config file cannot be its own "
                          f"_BASE_ (directly or through others): remove the _BASE_ entry that closes the loop")
    for base in _base_paths(config_file):
        _check_base_chain(base, chain)


def _merge_file(cfg: CfgNode, config_file: str) -> set[str]:
    """Merge ``config_file`` (with its ``_BASE_`` chain) into ``cfg``; returns the keys it sets."""
    loaded = _load_yaml(config_file)
    if loaded is None:
        return set()
    if not isinstance(loaded, dict):
        raise ConfigError(f"{config_file} must hold a mapping of config keys, got {type(loaded).__name__}")
    given = set()
    for full_key, value in _flatten(loaded):
        _merge_value(cfg, full_key, value, f"config file {config_file}")
        given.add(full_key)
    return given


def _flatten(d: dict, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Leaf ``("A.B.C", value)`` pairs of a nested dict (what a YAML file sets)."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def config_value(cfg: CfgNode, full_key: str) -> Any:
    """The value of ``full_key`` ("MODEL.RPN.NMS_THRESH") in ``cfg``."""
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
            owners = _tasks_with_key(bad, exclude=cfg.TASK)
            if owners:
                hint = (f" It is a key of TASK {' and '.join(repr(t) for t in owners)}, but this config's "
                        f"TASK is {cfg.TASK!r}.{hint}")
            raise ConfigError(f"Unknown config key {bad!r} (in {source}).{hint} "
                              f"The shared keys are listed in gn_det/config/defaults.py, each task's "
                              f"in its add_config (gn_det/tasks/).")
        node = node[part]


def _tasks_with_key(full_key: str, exclude: str) -> list[str]:
    """The installed tasks (other than ``exclude``) whose config has ``full_key``."""
    for name in entry_point_names():
        _task_config_hook(name)
    owners = []
    for task, hook in sorted(_TASK_CONFIGS.items()):
        if task == exclude:
            continue
        other = _C.clone()
        hook(other)
        node: Any = other
        for part in full_key.split("."):
            node = node.get(part) if isinstance(node, CfgNode) else None
            if node is None:
                break
        else:
            owners.append(task)
    return owners


def _type_message(cfg: CfgNode, key: str, value: Any, err: Exception, source: str) -> str:
    default = config_value(cfg, key)
    return (f"Bad value for config key {key!r} (in {source}): got {value!r} "
            f"({type(value).__name__}), expected a {type(default).__name__} like the default "
            f"{default!r}. ({err})")
