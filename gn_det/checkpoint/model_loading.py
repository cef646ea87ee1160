"""The one way weights get into a model: read the file once, transform it, load it under a policy.

Every caller (``--resume``, MODEL.WEIGHTS for training, ``--eval-only``, ``tools/visualize.py``)
goes through :func:`load_weights`:

1. **read** the file once and safely (:func:`gn_det.checkpoint.formats.load_raw`:
   ``weights_only`` for ``.pth``, the restricted unpickler for ``.pkl``); a name such as
   ``catalog://ImageNetPretrained/FAIR/R-50-GN`` or ``torchvision://resnet50`` is first resolved to
   a file downloaded once into the cache (:mod:`gn_det.checkpoint.weight_urls`);
2. **transform** its content into the model's state-dict names: a task's
   ``weights_transform`` renames between formats, converts norms, inflates 2D to 3D, ... and
   returns :class:`WeightsForModel`; the default takes the file's ``"model"`` entry (or the file
   itself) and strips DDP's ``module.`` prefix;
3. **load** it with a :class:`LoadPolicy` named at the call:

   - :data:`RESUME` (``--resume`` of the run's own checkpoint): strict. The file must be a
     training checkpoint and fit the model exactly; a missing or unexpected key or a wrong shape
     is refused with an error naming the first keys and shapes. Nothing is loaded then.
   - :func:`init_policy` (MODEL.WEIGHTS): loads what fits and reports loaded / missing /
     unexpected / shape-mismatched keys (each key counted once). Refused: a load that gives no
     tensor to a required part of the model (the backbone, say) unless the user allows it
     (MODEL.WEIGHTS_ALLOW_EMPTY_PARTS), and any gap inside a region the transform declared
     complete (a ResNet checkpoint must fill the whole backbone it was made for).

Nothing is copied into the model before every check has passed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .formats import load_raw
from .io import CheckpointError
from .weight_urls import is_weights_url, resolve_weights

__all__ = ["LoadPolicy", "IncompleteWeightsError", "RESUME", "init_policy", "WeightsForModel", "ModelLoadReport", "load_weights",
           "apply_weights", "default_weights_transform", "WeightsTransform"]

logger = logging.getLogger(__name__)
_SHOW = 5  # keys named in an error or a log line


@dataclass(frozen=True)
class LoadPolicy:
    """How strictly weights must fit the model.

    Attributes:
        name: "resume" or "init" (named in messages).
        strict: every model key must be loaded with the right shape and no file key may be left.
        required_parts: ``{part: state-dict prefix}`` that must receive at least one tensor.
        allow_empty_parts: parts of ``required_parts`` the user allows to stay at their init.
        complete: every model key must be loaded with the right shape (file keys may be left);
            checked before anything is copied or logged (:class:`IncompleteWeightsError`).
    """

    name: str
    strict: bool
    required_parts: Mapping[str, str] = field(default_factory=dict)
    allow_empty_parts: tuple[str, ...] = ()
    complete: bool = False


RESUME = LoadPolicy("resume", strict=True)


def init_policy(required_parts: Mapping[str, str] | None = None,
                allow_empty_parts: tuple[str, ...] | list[str] = (), *, complete: bool = False) -> LoadPolicy:
    """The MODEL.WEIGHTS policy: report what does not fit, refuse empty required parts
    (``complete``: refuse weights that leave any model key unfilled, before logging anything).

    Raises:
        ValueError: ``allow_empty_parts`` names a part that is not in ``required_parts``.
    """
    required = dict(required_parts or {})
    unknown = [p for p in allow_empty_parts if p not in required]
    if unknown:
        raise ValueError(f"MODEL.WEIGHTS_ALLOW_EMPTY_PARTS names {unknown}, which this model does not have; "
                         f"its parts are {sorted(required)}")
    return LoadPolicy("init", strict=False, required_parts=required, allow_empty_parts=tuple(allow_empty_parts),
                      complete=complete)


class IncompleteWeightsError(CheckpointError):
    """Weights that leave model keys unfilled under a ``complete`` policy: ``missing`` keys and
    ``shape_mismatched`` ``(key, file shape, model shape)`` items; nothing was loaded or logged."""

    def __init__(self, message: str, missing: list[str], shape_mismatched: list[tuple[str, tuple, tuple]]):
        super().__init__(message)
        self.missing, self.shape_mismatched = missing, shape_mismatched


@dataclass
class WeightsForModel:
    """A file's content in the model's names, as a transform returns it.

    Attributes:
        state_dict: model key -> tensor.
        complete: prefixes whose every model key must be filled (num_batches_tracked excepted)
            with the right shape, e.g. ``"backbone.body."`` for a ResNet checkpoint.
        unused: file entries the transform could not map (reported as unexpected).
        notes: what the transform did, one line each (logged with the report).
    """

    state_dict: dict[str, torch.Tensor]
    complete: tuple[str, ...] = ()
    unused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


WeightsTransform = Callable[[Any, str], WeightsForModel]


@dataclass
class ModelLoadReport:
    """What :func:`load_weights` did; each model key is in exactly one of loaded, missing and
    shape_mismatched (or in defaults)."""

    source: str
    policy: str
    num_model_tensors: int
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    defaults: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """``Loaded N of M model tensors from X`` plus the counts that are not zero."""
        parts = [f"Loaded {len(self.loaded)} of {self.num_model_tensors} model tensors from {self.source}"]
        for name, items in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("shape-mismatched", self.shape_mismatched)):
            if items:
                parts.append(f"{len(items)} {name}")
        return "; ".join(parts)

    def to_text(self) -> str:
        """The summary, the transform's notes and the first keys of each non-empty list."""
        lines = [self.summary(), *self.notes]
        if self.missing:
            lines.append(f"missing (left at init): {_names(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected (in the file, not in the model): {_names(self.unexpected)}")
        if self.shape_mismatched:
            lines.append("shape-mismatched (skipped): " + _shapes(self.shape_mismatched))
        return "\n".join(lines)


def _names(keys: list[str], n: int = _SHOW) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def _shapes(items: list[tuple[str, tuple, tuple]], n: int = _SHOW) -> str:
    text = "; ".join(f"{k}: file {tuple(a)} vs model {tuple(b)}" for k, a, b in items[:n])
    return text + (f"; ... ({len(items) - n} more)" if len(items) > n else "")


def default_weights_transform(raw: Any, source: str) -> WeightsForModel:
    """A gn_det checkpoint's ``"model"`` (or ``"state_dict"``) entry, or a plain state dict,
    with DDP's ``module.`` prefix stripped.

    Raises:
        CheckpointError: the content holds no dict of tensors.
    """
    state = raw
    if isinstance(raw, dict):
        for wrapper in ("model", "state_dict"):
            if isinstance(raw.get(wrapper), dict):
                state = raw[wrapper]
                break
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        kind = f"keys {list(state)[:_SHOW]}" if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{source} holds no model state dict ({kind}); expected a gn_det checkpoint "
                              f"or a dict of tensors")
    return WeightsForModel({k.removeprefix("module."): v for k, v in state.items()})


def load_weights(model: nn.Module, path: str | os.PathLike, policy: LoadPolicy, *,
                 transform: WeightsTransform | None = None, raw: Any = None) -> ModelLoadReport:
    """Read ``path`` once, transform its content into ``model``'s names, load it under ``policy``.

    Args:
        model: the (unwrapped) model, changed in place.
        path: the weights file, or a name :mod:`gn_det.checkpoint.weight_urls` resolves
            (``catalog://``, ``detectron2://``, ``torchvision://``, ``https://``, ``file://``):
            downloaded once into the cache, converted once where its format needs it.
        policy: :data:`RESUME` or :func:`init_policy`.
        transform: ``transform(raw, path) -> WeightsForModel``; default
            :func:`default_weights_transform`.
        raw: the file's content when the caller already read it (with
            :func:`gn_det.checkpoint.formats.load_raw`): it is not read again.

    Returns:
        The :class:`ModelLoadReport`, also logged (warnings for what did not load).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: unreadable or unsafe file, weights the policy refuses, or a name that
            cannot be resolved (:class:`~gn_det.checkpoint.weight_urls.WeightsUnavailableError` offline).
    """
    source = os.fspath(path)
    if raw is None:
        if is_weights_url(source):
            source = os.fspath(resolve_weights(source))
        if not os.path.exists(source):  # a directory is named as such by load_raw
            raise FileNotFoundError(f"weights file not found: {source!r}")
        raw = load_raw(source)
    weights = (transform or default_weights_transform)(raw, source)
    return apply_weights(model, weights, policy, source)


def apply_weights(model: nn.Module, weights: WeightsForModel, policy: LoadPolicy, source: str
                  ) -> ModelLoadReport:
    """Check ``weights`` against ``model`` under ``policy``, then copy them in (all or nothing)."""
    own = model.state_dict()
    report = ModelLoadReport(source=source, policy=policy.name, num_model_tensors=len(own),
                             notes=list(weights.notes))
    for key, dest in own.items():
        src = weights.state_dict.get(key)
        if src is None:
            bookkeeping = key.endswith("num_batches_tracked") and not policy.strict
            (report.defaults if bookkeeping else report.missing).append(key)
        elif tuple(src.shape) != tuple(dest.shape):
            report.shape_mismatched.append((key, tuple(src.shape), tuple(dest.shape)))
        else:
            report.loaded.append(key)
    report.unexpected = sorted([k for k in weights.state_dict if k not in own] + list(weights.unused))
    _enforce(policy, weights, report)
    with torch.no_grad():
        for key in report.loaded:
            # state_dict() tensors share storage with the model's parameters and buffers.
            own[key].copy_(weights.state_dict[key].to(dtype=own[key].dtype))
    _log(report)
    return report


def _enforce(policy: LoadPolicy, weights: WeightsForModel, report: ModelLoadReport) -> None:
    src = report.source
    if policy.complete and (report.missing or report.shape_mismatched):
        raise IncompleteWeightsError(
            f"{src} does not fill this model ({len(report.missing)} keys missing: {_names(report.missing)}; "
            f"{len(report.shape_mismatched)} of another shape: {_shapes(report.shape_mismatched)})",
            report.missing, report.shape_mismatched)
    if policy.strict:
        problems = []
        if report.shape_mismatched:
            problems.append(f"{len(report.shape_mismatched)} wrong shapes ({_shapes(report.shape_mismatched)})")
        if report.missing:
            problems.append(f"{len(report.missing)} model keys missing from the file ({_names(report.missing)})")
        if report.unexpected:
            problems.append(f"{len(report.unexpected)} file keys not in the model ({_names(report.unexpected)})")
        if problems:
            raise CheckpointError(
                f"{src} does not fit this model ({policy.name} is strict; matched {len(report.loaded)} of "
                f"{report.num_model_tensors} tensors): {'; '.join(problems)}. It was not loaded. Resume only "
                f"with the config that wrote it, or start a fresh run with MODEL.WEIGHTS {src}")
        return
    for prefix in weights.complete:
        gaps = [k for k in report.missing if k.startswith(prefix)]
        bad = [m for m in report.shape_mismatched if m[0].startswith(prefix)]
        if gaps or bad:
            detail = "; ".join(x for x in (f"missing: {_names(gaps)}" if gaps else "",
                                           f"wrong shapes: {_shapes(bad)}" if bad else "") if x)
            raise CheckpointError(f"{src} does not fill {prefix}* of this model ({detail}); check that "
                                  f"MODEL.RESNETS.DEPTH and the norm match the checkpoint")
    if not report.loaded:
        raise CheckpointError(f"{src}: none of its {len(weights.state_dict)} tensors fit the model's "
                              f"{report.num_model_tensors} (file keys: {_names(sorted(weights.state_dict))}; "
                              f"model keys: {_names(list(report.missing))}); nothing was loaded")
    for part, prefix in policy.required_parts.items():
        if part in policy.allow_empty_parts:
            continue
        if not any(k.startswith(prefix) for k in report.loaded):
            raise CheckpointError(
                f"{src} gives no tensor to the model's {part} ({prefix}*): its keys look like "
                f"{_names(sorted(weights.state_dict), 3)}. Convert it to this model's format, or set "
                f"MODEL.WEIGHTS_ALLOW_EMPTY_PARTS ['{part}'] to train the {part} from its random init")


def _log(report: ModelLoadReport) -> None:
    logger.info("%s", report.summary())
    for note in report.notes:
        logger.info("%s: %s", report.source, note)
    if report.missing:
        logger.warning("%s: %d model keys were not in the file (left at init): %s", report.source,
                       len(report.missing), _names(report.missing, 10))
    if report.unexpected:
        logger.warning("%s: %d keys in the file are not in the model: %s", report.source,
                       len(report.unexpected), _names(report.unexpected, 10))
    if report.shape_mismatched:
        logger.warning("%s: %d tensors skipped for their shape: %s", report.source,
                       len(report.shape_mismatched), _shapes(report.shape_mismatched, 10))
