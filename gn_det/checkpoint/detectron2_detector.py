"""Whole FPN Mask R-CNN checkpoints: detectron2 and Detectron (Caffe2) <-> gn_det, names and rows.

Names come from :mod:`~gn_det.checkpoint.names` (the ResNet, ``backbone.bottom_up.*`` in
detectron2, ``backbone.body.*`` in gn_det) and :mod:`~gn_det.checkpoint.detector_names`
(FPN, RPN, box and mask heads). Some tensors also change rows, because the formats order or
count their outputs differently (K foreground classes; S anchor sizes and R aspect ratios per
location):

===============  ===================================  ========================  ==============================
tensor           detectron2                           Detectron (Caffe2)        gn_det (torchvision)
===============  ===================================  ========================  ==============================
cls_score        K+1 rows, background LAST (row K)    K+1, background row 0     K+1, background row 0
bbox_pred        4K rows, class-specific, no bg       4(K+1), bg rows 0-3       4(K+1), bg rows 0-3
mask predictor   K channels, no bg                    K+1, bg channel 0         K+1, bg channel 0
RPN outputs      anchor s*R + r (sizes outer)         r*S + s (ratios outer)    its anchor generator's order
                                                                                (r*S + s for both of gn_det's)
===============  ===================================  ========================  ==============================

Into gn_det, detectron2's background row of ``cls_score`` moves to row 0, and the background rows
that detectron2 does not have (4 of ``bbox_pred``, 1 channel of the mask predictor) are set to
**0**: torchvision never reads them (inference takes the box and mask of the predicted class,
>= 1; the losses index the ground-truth class, >= 1), so they change no output and no gradient.
Out to detectron2 those rows are **dropped** and the background of ``cls_score`` moves to the
last row. Caffe2's class rows already follow gn_det's order and are taken whole (detectron2's
c2_model_loading drops and moves them only because *its* order differs). RPN rows are permuted
between anchor orders (:class:`AnchorLayout`); with one anchor size per level (every FPN config)
the orders agree and nothing moves. Both sides regress boxes as (dx, dy, dw, dh), by default with
weights (10, 10, 5, 5) in the box head and (1, 1, 1, 1) in the RPN.

Detectron (Caffe2) models expect BGR images with pixel std 1 (mean 102.98, 115.95, 122.77);
detectron2 files do not say (its default is BGR, std 1, mean 103.53, 116.28, 123.675).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .detector_names import HeadParam, format_names, parse_names
from .io import CheckpointError, atomic_write_pickle
from .names import convert_name

__all__ = ["AnchorLayout", "SIZES_OUTER", "RATIOS_OUTER", "DetectorConversion", "find_detectron2_detector",
           "find_caffe2_detector", "from_detectron2", "from_caffe2", "to_detectron2", "write_detectron2_detector",
           "input_convention_warning", "DETECTRON2_DEFAULT_INPUT", "CAFFE2_INPUT"]

D2_BACKBONE, GN_BACKBONE = "backbone.bottom_up.", "backbone.body."
DETECTRON2_DEFAULT_INPUT = {"format": "BGR", "pixel_mean": [103.53, 116.28, 123.675], "pixel_std": [1.0, 1.0, 1.0]}
CAFFE2_INPUT = {"format": "BGR", "pixel_mean": [102.9801, 115.9465, 122.7717], "pixel_std": [1.0, 1.0, 1.0]}
_D2_MARKERS = (D2_BACKBONE, "proposal_generator.", "backbone.fpn_lateral", "backbone.fpn_output")
_D2_NOT_WEIGHTS = {  # detectron2 buffers older checkpoints saved; not weights of gn_det's model
    "pixel_mean": "input normalisation: compared with MODEL.PIXEL_MEAN, not loaded",
    "pixel_std": "input normalisation: compared with MODEL.PIXEL_STD, not loaded",
}


@dataclass
class DetectorConversion:
    """A whole detector's weights moved between formats, with what happened to each tensor.

    Attributes:
        source_format: "detectron2", "caffe2" or "gn_det".
        target_format: "gn_det" or "detectron2".
        state_dict: the converted tensors in the target's names (on import: the heads; the
            ResNet is in ``backbone``).
        backbone: import only: the ResNet's tensors under the source's own ResNet names (prefix
            removed), for :func:`gn_det.checkpoint.formats.parse_checkpoint`.
        mapped: source name -> target name, for every tensor mapped (the ResNet included).
        converted: target name -> how its rows changed (class order, background, anchor order).
        dropped: source name -> why it was deliberately not converted.
        unmapped: source names that are no parameter of an FPN Mask R-CNN.
        input_convention: what the file says about the images it expects ({} if nothing):
            "format", "pixel_mean", "pixel_std", "source".
    """

    source_format: str
    target_format: str
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    backbone: dict[str, torch.Tensor] = field(default_factory=dict)
    mapped: dict[str, str] = field(default_factory=dict)
    converted: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    input_convention: dict[str, Any] = field(default_factory=dict)
    part_counts: dict[str, int] = field(default_factory=dict)

    def notes(self) -> list[str]:
        """The report, one line each: counts per part, row conversions, dropped, not mapped."""
        order = ("backbone", "fpn", "rpn", "box_head", "box_predictor", "mask_head")
        parts = ", ".join(f"{part} {self.part_counts[part]}" for part in order if part in self.part_counts)
        lines = [f"{self.source_format} detector -> {self.target_format}: {len(self.mapped)} tensors mapped "
                 f"({parts})"]
        lines += [f"converted {k}: {v}" for k, v in self.converted.items()]
        if self.dropped:
            dropped = sorted(self.dropped.items())
            lines.append(f"dropped {len(dropped)}: " + "; ".join(f"{k} ({v})" for k, v in dropped))
        if self.unmapped:
            lines.append(f"not mapped {len(self.unmapped)} (no FPN Mask R-CNN parameter): {', '.join(self.unmapped)}")
        return lines

    def to_dict(self) -> dict:
        """Plain-JSON form, without the tensors."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("state_dict", "backbone")}


def _tensor(value: Any) -> torch.Tensor:
    """A tensor of the same shape (0-d arrays stay 0-d), owning its memory."""
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value))


def _is_array(value: Any) -> bool:
    return isinstance(value, (np.ndarray, torch.Tensor))


def find_detectron2_detector(raw: Any) -> dict[str, Any] | None:
    """The state dict of a detectron2 whole detector inside a loaded file, or None.

    Recognises a ``model_final.pkl`` (``{"model": {name: array}, "__author__": ...}``), a
    ``DetectionCheckpointer`` ``.pth`` (``{"model": {name: tensor}, "iteration": ...}``) and a bare
    state dict, by detectron2's detector names (``backbone.bottom_up.``, ``proposal_generator.``,
    ``backbone.fpn_lateral``). DDP's ``module.`` prefix is removed.
    """
    state = raw.get("model", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        return None
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(k, str)}
    return state if any(k.startswith(_D2_MARKERS) for k in state) else None


def find_caffe2_detector(raw: Any) -> dict[str, Any] | None:
    """The blobs of a Detectron (Caffe2) detector (``{"blobs": {...}}``), or None when the file
    holds no FPN, RPN, box or mask head blob (an ImageNet ResNet, for instance)."""
    blobs = raw.get("blobs") if isinstance(raw, dict) else None
    if not isinstance(blobs, dict):
        return None
    return blobs if parse_names(blobs, "caffe2") else None


# ----------------------------------------------------------------------------- rows

SIZES_OUTER, RATIOS_OUTER = "sizes_outer", "ratios_outer"


@dataclass(frozen=True)
class AnchorLayout:
    """How a model enumerates the anchors at one location (the rows of its RPN outputs).

    Attributes:
        sizes, ratios: anchor sizes and aspect ratios per location.
        order: :data:`SIZES_OUTER` (detectron2's ``DefaultAnchorGenerator``: anchor ``s * R + r``)
            or :data:`RATIOS_OUTER` (torchvision's ``AnchorGenerator`` and Detectron: ``r * S + s``).
    """

    sizes: int = 1
    ratios: int = 3
    order: str = RATIOS_OUTER

    def index(self, s: int, r: int) -> int:
        """Row (anchor index) of size ``s`` and ratio ``r``."""
        return s * self.ratios + r if self.order == SIZES_OUTER else r * self.sizes + s

    def permutation_from(self, source_order: str) -> list[int] | None:
        """For each of this layout's anchors, the index of the same anchor in ``source_order``;
        None when the two orders agree (always with one size or one ratio per location)."""
        source = AnchorLayout(self.sizes, self.ratios, source_order)
        perm = [0] * (self.sizes * self.ratios)
        for s in range(self.sizes):
            for r in range(self.ratios):
                perm[self.index(s, r)] = source.index(s, r)
        return None if perm == sorted(perm) else perm


def _rows(t: torch.Tensor, order: Sequence[int], per_anchor: int) -> torch.Tensor:
    index = (torch.as_tensor(order)[:, None] * per_anchor + torch.arange(per_anchor)).reshape(-1)
    return t[index]


def _check_predictors(params: Mapping[str, HeadParam], state: Mapping[str, torch.Tensor], background: bool,
                      source: str) -> None:
    """Refuse predictors whose rows do not fit K classes (class-agnostic box regression or masks)."""
    rows = {p.module: state[n].shape[0] for n, p in params.items()
            if p.module in ("cls_score", "bbox_pred", "mask_predictor") and p.param == "weight"}
    if "cls_score" not in rows:
        return
    k = rows["cls_score"] - 1
    bg = 1 if background else 0
    if rows.get("bbox_pred", 4 * (k + bg)) != 4 * (k + bg):
        agnostic = rows["bbox_pred"] == 4 * (1 + bg)
        raise CheckpointError(
            f"{source}: bbox_pred has {rows['bbox_pred']} rows for {k} classes"
            + (" (a class-agnostic box regressor, CLS_AGNOSTIC_BBOX_REG)" if agnostic else "")
            + f"; gn_det's box predictor is class-specific ({4 * (k + bg)} rows): convert a class-specific model")
    if rows.get("mask_predictor", k + bg) != k + bg:
        raise CheckpointError(
            f"{source}: the mask predictor has {rows['mask_predictor']} channels for {k} classes (CLS_AGNOSTIC_MASK "
            f"models have 1); gn_det's mask predictor is class-specific ({k + bg}): convert a class-specific model")


def _class_rows(p: HeadParam, t: torch.Tensor, into_gn_det: bool) -> tuple[torch.Tensor, str]:
    """(tensor, what was done) for a predictor tensor between detectron2's and gn_det's class rows."""
    n = t.shape[0]
    if p.module == "cls_score":
        if into_gn_det:
            return torch.cat([t[-1:], t[:-1]]), f"background moved from row {n - 1} (last) to row 0"
        return torch.cat([t[1:], t[:1]]), f"background moved from row 0 to row {n - 1} (last)"
    bg = 4 if p.module == "bbox_pred" else 1
    what, unit = ("rows 0-3", "rows") if bg == 4 else ("channel 0", "channels")
    if into_gn_det:
        zeros = t.new_zeros((bg, *t.shape[1:]))
        return torch.cat([zeros, t]), f"{n} -> {n + bg} {unit}: background {what} added, set to 0"
    return t[bg:], f"{n} -> {n - bg} {unit}: background {what} dropped (detectron2 has none)"


_CLASS_ROW_MODULES = {"cls_score", "bbox_pred", "mask_predictor"}
_RPN_MODULES = {"rpn_objectness": 1, "rpn_deltas": 4}  # rows per anchor


def _convert_heads(conv: DetectorConversion, state: Mapping[str, torch.Tensor], params: Mapping[str, HeadParam],
                   target: Mapping[HeadParam, str | None], *, class_rows: str | None,
                   anchors: AnchorLayout, source_order: str) -> None:
    """Rename the head tensors into ``conv``, reordering rows where the formats differ.

    Args:
        class_rows: "to_gn_det" / "to_detectron2" (detectron2's class rows on one side), or None
            (both sides order classes alike).
        anchors: the target's anchor layout; ``source_order`` the source's anchor order.
    """
    counts = Counter(conv.part_counts)
    perm = anchors.permutation_from(source_order)
    for name, p in params.items():
        dest = target[p]
        if dest is None:
            conv.unmapped.append(name)
            continue
        value, what = state[name], ""
        if class_rows and p.module in _CLASS_ROW_MODULES:
            value, what = _class_rows(p, value, into_gn_det=class_rows == "to_gn_det")
        elif perm is not None and p.module in _RPN_MODULES and value.shape[0] == len(perm) * _RPN_MODULES[p.module]:
            value = _rows(value, perm, _RPN_MODULES[p.module])
            what = (f"anchor order {source_order} -> {anchors.order} "
                    f"({anchors.sizes} sizes x {anchors.ratios} ratios per location)")
        if what:
            conv.converted[dest] = what
        conv.state_dict[dest] = value
        conv.mapped[name] = dest
        counts[p.part] += 1
    conv.part_counts = dict(counts)


def _split_arrays(raw: Mapping[str, Any], conv: DetectorConversion) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in raw.items():
        if not _is_array(value):
            conv.dropped[str(name)] = f"not an array ({type(value).__name__})"
        elif isinstance(name, str) and name.endswith("_momentum"):
            conv.dropped[name] = "optimizer momentum blob"
        else:
            out[name] = _tensor(value)
    return out


def _take_backbone(conv: DetectorConversion, tensors: dict[str, torch.Tensor], scheme: str, prefix: str) -> None:
    """Move the ResNet's tensors (source names, ``prefix`` removed) into ``conv.backbone``."""
    for name in list(tensors):
        if not name.startswith(prefix):
            continue
        short = name[len(prefix):]
        tv = convert_name(short, scheme, "torchvision")
        if tv is None:
            continue
        conv.backbone[short] = tensors.pop(name)
        conv.mapped[name] = GN_BACKBONE + tv
    conv.part_counts = {"backbone": len(conv.backbone), **conv.part_counts}


def from_detectron2(state: Mapping[str, Any], *, fpn_stages: Sequence[int], anchors: AnchorLayout = AnchorLayout(),
                    source: str = "the checkpoint") -> DetectorConversion:
    """Convert a detectron2 FPN Mask R-CNN / Faster R-CNN state dict into gn_det's names and rows.

    Args:
        state: detectron2 name -> numpy array or tensor (see :func:`find_detectron2_detector`).
        fpn_stages: the gn_det model's FPN stages, finest first (e.g. ``(2, 3, 4, 5)``).
        anchors: the model's anchor layout (detectron2's RPN rows are reordered to it).
        source: the file, named in errors.

    Returns:
        A :class:`DetectorConversion`: heads in ``state_dict``, the ResNet (detectron2 ResNet names)
        in ``backbone``.

    Raises:
        CheckpointError: class-agnostic box regression or masks (gn_det's predictors are
            class-specific).
    """
    conv = DetectorConversion("detectron2", "gn_det")
    tensors = _split_arrays(state, conv)
    for name in list(tensors):
        if name in _D2_NOT_WEIGHTS or name.startswith("proposal_generator.anchor_generator."):
            conv.dropped[name] = _D2_NOT_WEIGHTS.get(name, "anchors are computed from MODEL.ANCHOR_GENERATOR")
            value = tensors.pop(name)
            if name in _D2_NOT_WEIGHTS:
                conv.input_convention[name] = [float(v) for v in value.reshape(-1)]
                conv.input_convention["source"] = "pixel_mean/pixel_std buffers in the file"
    _take_backbone(conv, tensors, "detectron2", D2_BACKBONE)
    params = parse_names(tensors, "detectron2")
    _check_predictors(params, tensors, background=False, source=source)
    _convert_heads(conv, tensors, params, format_names(params.values(), "gn_det", fpn_stages=fpn_stages),
                   class_rows="to_gn_det", anchors=anchors, source_order=SIZES_OUTER)
    conv.unmapped += sorted(n for n in tensors if n not in params)
    return conv


def from_caffe2(blobs: Mapping[str, Any], *, fpn_stages: Sequence[int], anchors: AnchorLayout = AnchorLayout(),
                source: str = "the checkpoint") -> DetectorConversion:
    """Convert a Detectron (Caffe2) FPN Mask R-CNN's blobs into gn_det's names.

    Names follow detectron2's ``c2_model_loading`` heuristics (the public reference); class rows
    are kept, as Caffe2 orders classes like gn_det (background first, 4(K+1) box rows, K+1 mask
    channels); RPN rows are reordered only if the model enumerates anchors sizes-outer and has
    several sizes per location. ``*_momentum`` blobs are dropped.
    The ResNet blobs go to ``backbone`` under their Caffe2 names.

    Raises:
        CheckpointError: class-agnostic box regression or masks.
    """
    conv = DetectorConversion("caffe2", "gn_det", input_convention={**CAFFE2_INPUT,
                                                                    "source": "Detectron convention"})
    tensors = _split_arrays(blobs, conv)
    _take_backbone(conv, tensors, "caffe2", "")
    params = parse_names(tensors, "caffe2")
    _check_predictors(params, tensors, background=True, source=source)
    _convert_heads(conv, tensors, params, format_names(params.values(), "gn_det", fpn_stages=fpn_stages),
                   class_rows=None, anchors=anchors, source_order=RATIOS_OUTER)
    conv.unmapped += sorted(n for n in tensors if n not in params)
    return conv


def to_detectron2(state: Mapping[str, torch.Tensor], *, fpn_stages: Sequence[int],
                  anchors: AnchorLayout = AnchorLayout(), source: str = "the model") -> DetectorConversion:
    """Convert a gn_det Mask R-CNN state dict into detectron2's names and rows.

    Args:
        state: the model's state dict (WS already folded: detectron2 has no WS convs).
        fpn_stages: the model's FPN stages, finest first.
        anchors: the model's anchor layout (its RPN rows are reordered to detectron2's).

    Returns:
        A :class:`DetectorConversion` whose ``state_dict`` is the whole detectron2 state dict.
    """
    conv = DetectorConversion("gn_det", "detectron2")
    tensors = {k: v.detach().cpu() for k, v in state.items()}
    for name in list(tensors):
        is_body = name.startswith(GN_BACKBONE)
        d2 = convert_name(name[len(GN_BACKBONE):], "torchvision", "detectron2") if is_body else None
        if d2 is not None:
            conv.state_dict[D2_BACKBONE + d2] = tensors.pop(name)
            conv.mapped[name] = D2_BACKBONE + d2
    conv.part_counts = {"backbone": len(conv.mapped)}
    params = parse_names(tensors, "gn_det", fpn_stages=fpn_stages)
    _check_predictors(params, tensors, background=True, source=source)
    d2_anchors = AnchorLayout(anchors.sizes, anchors.ratios, SIZES_OUTER)
    _convert_heads(conv, tensors, params, format_names(params.values(), "detectron2"),
                   class_rows="to_detectron2", anchors=d2_anchors, source_order=anchors.order)
    conv.unmapped += sorted(n for n in tensors if n not in params)
    return conv


def write_detectron2_detector(conv: DetectorConversion, path: str | os.PathLike, meta: Mapping[str, Any]) -> None:
    """Write a :func:`to_detectron2` result as detectron2 writes its model zoo files: a pickle of
    ``{"model": {name: numpy array}, "__author__": "gn_det", "matching_heuristics": True}``, plus
    ``"gn_det_meta"`` (norm, stride placement, input convention; detectron2 ignores it)."""
    model = {k: v.detach().cpu().contiguous().numpy() for k, v in conv.state_dict.items()}
    atomic_write_pickle({"model": model, "__author__": "gn_det", "matching_heuristics": True,
                         "gn_det_meta": dict(meta)}, path)


def input_convention_warning(recorded: Mapping[str, Any], *, input_format: str, pixel_mean: Sequence[float],
                             pixel_std: Sequence[float], source: str) -> str | None:
    """A warning when the model's INPUT.FORMAT / MODEL.PIXEL_MEAN / MODEL.PIXEL_STD differ from
    what the weights were trained with (``recorded``: "format", "pixel_mean", "pixel_std", any
    of them); None when they agree or nothing is recorded."""
    have = {"format": input_format, "pixel_mean": list(pixel_mean), "pixel_std": list(pixel_std)}
    keys = {"format": "INPUT.FORMAT", "pixel_mean": "MODEL.PIXEL_MEAN", "pixel_std": "MODEL.PIXEL_STD"}
    wrong = []
    for key, cfg_key in keys.items():
        want = recorded.get(key)
        if want is None:
            continue
        # Means within one grey level agree: Detectron's weights (mean 102.98) and detectron2's configs
        # (103.53) are the same convention, and warning there would teach users to ignore the warning.
        if key == "format":
            same = want == have[key]
        elif key == "pixel_mean":
            same = np.allclose(want, have[key], rtol=0, atol=1.0)
        else:
            same = np.allclose(want, have[key], rtol=0.01, atol=0)
        if not same:
            wrong.append(f"{cfg_key} {have[key]} (weights: {want})")
    if not wrong:
        return None
    origin = recorded.get("source", "recorded with the weights")
    return (f"{source} expects other inputs than this model reads ({origin}): {'; '.join(wrong)}. Set these to "
            f"the weights' values, or the detector sees wrong colours and scales")
