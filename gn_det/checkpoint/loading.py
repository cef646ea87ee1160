"""Load a :class:`~gn_det.checkpoint.formats.Checkpoint` into a model, refusing anything silently wrong.

Refused (raises :class:`~gn_det.checkpoint.io.CheckpointError`):

- a shape mismatch (the message names the key and both shapes);
- a model parameter or buffer with no value in the checkpoint, unless ``allow_missing``
  (``num_batches_tracked`` is bookkeeping and is never required);
- a stride placement (1x1 vs 3x3 conv of a bottleneck) different from the model's, or a model
  whose actual strides contradict the placement the caller states;
- Weight-Standardized weights going into a model without WS convs (they only make sense
  standardized).

Source keys that map to nothing in the model are listed in the :class:`LoadReport`, not refused.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..layers.norm import parse_norm
from ..layers.ws_conv import WSConv2d, WSConv3d
from .formats import Checkpoint, read_checkpoint
from .io import CheckpointError
from .model_loading import WeightsForModel
from .names import parse_name

__all__ = ["LoadReport", "load_into_model", "check_resnet_compatible", "resnet_weights_for"]

logger = logging.getLogger(__name__)

_LIST_LIMIT = 10


@dataclass
class LoadReport:
    """What :func:`load_into_model` did.

    Attributes:
        loaded: model keys (with prefix) that received a checkpoint value.
        missing: model keys left at their initial value (only non-empty with ``allow_missing``).
        unused: checkpoint keys that map to nothing in the model.
        defaults: model keys left at their initial value because they carry no learned state
            (``num_batches_tracked``).
        source: the checkpoint file, format and meta.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    defaults: list[str] = field(default_factory=list)
    source: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return asdict(self)

    def to_text(self) -> str:
        """A short human-readable summary, listing missing and unused keys."""
        lines = [f"loaded {len(self.loaded)} tensors from {self.source.get('path')} "
                 f"({self.source.get('source_format')}, norm {self.source.get('norm')}, "
                 f"stride_in_1x1={self.source.get('stride_in_1x1')})"]
        for title, keys in (("missing (left at init)", self.missing), ("unused source keys", self.unused)):
            if keys:
                lines.append(f"{title}: {len(keys)}")
                lines.extend(f"  {k}" for k in keys)
        return "\n".join(lines)


def _listing(keys: list[str], sep: str = ", ") -> str:
    more = f" ... and {len(keys) - _LIST_LIMIT} more" if len(keys) > _LIST_LIMIT else ""
    return sep.join(keys[:_LIST_LIMIT]) + more


def _actual_stride_in_1x1(model: nn.Module) -> bool | None:
    """Stride placement of a torchvision-named ResNet's first strided bottleneck (None: can't tell)."""
    try:
        model.get_submodule("layer2.0.conv3")  # only bottlenecks have a 1x1/3x3 choice
        conv1, conv2 = model.get_submodule("layer2.0.conv1"), model.get_submodule("layer2.0.conv2")
    except AttributeError:
        return None
    s1, s2 = tuple(getattr(conv1, "stride", (1,))), tuple(getattr(conv2, "stride", (1,)))
    if max(s1) > 1 and max(s2) == 1:
        return True
    if max(s2) > 1 and max(s1) == 1:
        return False
    return None


def _check_stride(target: nn.Module, meta: dict, stride_in_1x1: bool, where: str) -> None:
    actual = _actual_stride_in_1x1(target)
    if actual is not None and actual != stride_in_1x1:
        raise CheckpointError(f"the model's layer2.0 bottleneck has its stride on the "
                              f"{'1x1' if actual else '3x3'} conv but stride_in_1x1={stride_in_1x1} "
                              f"was passed; pass the model's real placement")
    source = meta.get("stride_in_1x1")
    if source is None:
        raise CheckpointError(f"{where} does not record where its stride is (1x1 or 3x3 conv); state it "
                              f"when reading (read_checkpoint(..., stride_in_1x1=...) or "
                              f"--stride-in-1x1 true/false)")
    if bool(source) != bool(stride_in_1x1):
        have = "1x1 conv (Caffe2/MSRA style)" if source else "3x3 conv (torchvision style)"
        want = "1x1" if stride_in_1x1 else "3x3"
        raise CheckpointError(f"{where} puts the stride on the {have}, the model on the {want} conv: "
                              f"loading would be silently wrong. Build the model with stride_in_1x1="
                              f"{bool(source)} (MODEL.RESNETS.STRIDE_IN_1X1) "
                              f"[{meta.get('stride_source', 'no source recorded')}]")


def _has_ws_conv(model: nn.Module) -> bool:
    return any(isinstance(m, (WSConv2d, WSConv3d)) for m in model.modules())


def _plain_norm(meta: dict) -> str:
    """The converter's --norm that keeps a WS checkpoint's norm and folds its WS ("GN+WS" -> "gn")."""
    name = str(meta.get("norm") or "GN")
    return name.upper().replace("+WS", "").lower() or "gn"


def check_resnet_compatible(ckpt: Checkpoint, target: nn.Module, *, stride_in_1x1: bool) -> None:
    """Refuse ResNet weights that would load into ``target`` but compute something else.

    Raises:
        CheckpointError: the stride placement (1x1 vs 3x3) differs from ``stride_in_1x1`` or from
            ``target``'s real strides, or WS weights go into a model without WS convs.
    """
    where = f"checkpoint {ckpt.path}" if ckpt.path else "the checkpoint"
    _check_stride(target, ckpt.meta, stride_in_1x1, where)
    if ckpt.meta.get("ws") and not _has_ws_conv(target):
        src = ckpt.path or "FILE.pth"
        folded = str(Path(src).with_name(Path(src).stem + "_ws_folded.pth"))
        raise CheckpointError(f"{where} holds Weight-Standardized conv weights but the model has no WS "
                              f"convs; build it with a '+WS' norm (e.g. MODEL.RESNETS.NORM 'GN+WS'), or fold WS "
                              f"into plain conv weights first (exact at inference) and load that file: "
                              f"gn-det-convert {src} --norm {_plain_norm(ckpt.meta)} --output {folded}")


def load_into_model(model: nn.Module, ckpt: Checkpoint | str | os.PathLike, *, stride_in_1x1: bool,
                    allow_missing: bool = False, prefix: str = "") -> LoadReport:
    """Copy checkpoint tensors into ``model`` (in place), refusing anything that would be wrong.

    Args:
        model: the target; its keys under ``prefix`` must use torchvision's ResNet names
            (gn_det's ResNet does; so does torchvision's).
        ckpt: a :class:`Checkpoint` or a path (read with auto-detected format).
        stride_in_1x1: where the model's bottlenecks put their stride (True: the 1x1 conv).
        allow_missing: leave model tensors without a checkpoint value at their init instead of failing.
        prefix: load into the sub-module whose keys start with this (e.g. ``"backbone.body."``);
            model keys outside it are ignored.

    Returns:
        A :class:`LoadReport` (loaded, missing, unused keys).

    Raises:
        CheckpointError: see the module docstring.
    """
    if not isinstance(ckpt, Checkpoint):
        ckpt = read_checkpoint(ckpt)
    where = f"checkpoint {ckpt.path}" if ckpt.path else "the checkpoint"
    if prefix and not prefix.endswith("."):
        prefix += "."
    target_module = model.get_submodule(prefix[:-1]) if prefix else model
    check_resnet_compatible(ckpt, target_module, stride_in_1x1=stride_in_1x1)

    target = {k[len(prefix):]: v for k, v in model.state_dict(keep_vars=False).items()
              if k.startswith(prefix)}
    if not target:
        raise CheckpointError(f"the model has no parameters under prefix {prefix!r}")
    report = LoadReport(source={"path": ckpt.path, **ckpt.meta})
    mismatches, missing = [], []
    for key, dest in target.items():
        src = ckpt.state_dict.get(key)
        if src is None:
            (report.defaults if key.endswith("num_batches_tracked") else missing).append(prefix + key)
        elif tuple(src.shape) != tuple(dest.shape):
            mismatches.append(f"{prefix + key}: checkpoint {tuple(src.shape)} vs model {tuple(dest.shape)}")
    if mismatches:
        raise CheckpointError(f"shape mismatch loading {where}: {_listing(mismatches, sep='; ')}")
    if missing and not allow_missing:
        raise CheckpointError(f"{len(missing)} model tensors have no value in {where}: {_listing(missing)}; "
                              f"pass allow_missing=True (--allow-missing) to keep their initial values")
    report.missing = missing
    with torch.no_grad():
        for key, dest in target.items():
            src = ckpt.state_dict.get(key)
            if src is not None:
                # state_dict() tensors share storage with the model's parameters and buffers.
                dest.copy_(src.to(dtype=dest.dtype))
                report.loaded.append(prefix + key)
    report.unused = sorted([k for k in ckpt.state_dict if k not in target] + list(ckpt.unmapped))
    return report


_NORM_FAMILY = {"BN": "BN", "FrozenBN": "BN", "SyncBN": "BN"}


def resnet_weights_for(ckpt: Checkpoint, body: nn.Module, prefix: str, *, stride_in_1x1: bool,
                       body_norm: str) -> WeightsForModel:
    """ResNet weights (torchvision names) for the ResNet ``body`` found at ``prefix`` in a model:
    the transform every task's MODEL.WEIGHTS path uses for a backbone checkpoint.

    Refuses (before anything is loaded) a stride placement or WS mismatch
    (:func:`check_resnet_compatible`) and a checkpoint with ResNet blocks the body does not have
    (a deeper ResNet); the body must then be filled completely (``complete=(prefix,)``), so a
    shallower checkpoint is refused by the loading policy. The classifier (``fc``) and
    ``num_batches_tracked`` entries the body lacks are reported as unexpected. A BN checkpoint
    going into a GN body (legal, but it needs fine-tuning) is logged as a warning.

    Args:
        ckpt: from :func:`~gn_det.checkpoint.formats.parse_checkpoint`.
        body: the model's ResNet (torchvision key names).
        prefix: the body's state-dict prefix in the model, e.g. ``"backbone.body."``.
        stride_in_1x1: the model's placement (MODEL.RESNETS.STRIDE_IN_1X1).
        body_norm: the body's norm (MODEL.RESNETS.NORM).
    """
    check_resnet_compatible(ckpt, body, stride_in_1x1=stride_in_1x1)
    where = ckpt.path or "the checkpoint"
    own = set(body.state_dict())
    extra = sorted(k for k in ckpt.state_dict if k not in own and _is_block_param(k))
    if extra:
        raise CheckpointError(f"{where} holds ResNet layers this model does not have ({_listing(extra)}): it is "
                              f"a deeper or wider ResNet; set MODEL.RESNETS.DEPTH (and NUM_GROUPS) to match it")
    source_norm, model_norm = ckpt.meta.get("norm"), parse_norm(body_norm).name
    if source_norm and _NORM_FAMILY.get(parse_norm(source_norm).name, source_norm) != _NORM_FAMILY.get(
            model_norm, model_norm):
        logger.warning("%s holds %s weights but the backbone uses %s: the norm layers' parameters load, but "
                       "the model needs fine-tuning before it is accurate", where, source_norm, model_norm or "no norm")
    state = {prefix + k: v for k, v in ckpt.state_dict.items() if k in own}
    unused = sorted([k for k in ckpt.state_dict if k not in own] + list(ckpt.unmapped))
    note = (f"ResNet checkpoint ({ckpt.meta.get('source_format')}, norm {source_norm}, "
            f"stride_in_1x1={ckpt.meta.get('stride_in_1x1')}) into {prefix}*")
    return WeightsForModel(state, complete=(prefix,), unused=unused, notes=[note])


def _is_block_param(key: str) -> bool:
    """A learned conv/norm parameter of the stem or a block: not the classifier, and not BN's running
    statistics (a BN checkpoint going into a GN body leaves those over, legitimately)."""
    p = parse_name(key, "torchvision")
    return p is not None and p.part != "head" and p.param in ("weight", "bias")
