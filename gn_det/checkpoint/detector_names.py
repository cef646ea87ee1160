"""Parameter names of an FPN Mask R-CNN's heads in three schemes, and the mapping between them.

The ResNet inside the detector is named by :mod:`gn_det.checkpoint.names`; this module names
everything above it. One parameter, three spellings (``s`` is the ResNet stage 2..5 feeding an FPN
level, ``b`` the last block of that stage; Caffe2 GN convs have ``_gn_s``/``_gn_b`` and no bias):

========================================  ============================================  ==============================
gn_det (torchvision's MaskRCNN)           detectron2                                    Detectron / Caffe2 blob
========================================  ============================================  ==============================
backbone.fpn.inner_blocks.<i>.0 / .1      backbone.fpn_lateral<s> / .norm               fpn_inner_res<s>_<b>_sum[_lateral]
backbone.fpn.layer_blocks.<i>.0 / .1      backbone.fpn_output<s> / .norm                fpn_res<s>_<b>_sum
rpn.head.conv.<k-1>.0                     proposal_generator.rpn_head.conv              conv_rpn_fpn2
                                          (several: .conv.conv<k-1>)
rpn.head.cls_logits                       proposal_generator.rpn_head.objectness_logits rpn_cls_logits_fpn2
rpn.head.bbox_pred                        proposal_generator.rpn_head.anchor_deltas     rpn_bbox_pred_fpn2
roi_heads.box_head.<k-1>.0 / .1           roi_heads.box_head.conv<k> / .norm            head_conv<k> / head_conv<k>_gn
roi_heads.box_head.<C+2j-1> (fc6, fc7)    roi_heads.box_head.fc<j>                      fc<5+j>
roi_heads.box_predictor.cls_score         roi_heads.box_predictor.cls_score             cls_score
roi_heads.box_predictor.bbox_pred         roi_heads.box_predictor.bbox_pred             bbox_pred
roi_heads.mask_head.<k-1>.0 / .1          roi_heads.mask_head.mask_fcn<k> / .norm       _[mask]_fcn<k>, _mask_fcn<k>_gn
roi_heads.mask_predictor.conv5_mask       roi_heads.mask_head.deconv                    conv5_mask
roi_heads.mask_predictor.mask_fcn_logits  roi_heads.mask_head.predictor                 mask_fcn_logits
========================================  ============================================  ==============================

Three gn_det names depend on the model's shape, not only on the parameter: the FPN's list index
``<i>`` counts the stages that feed the FPN, finest first (``fpn_stages`` says which stage is
which; detectron2 and Caffe2 name the stage itself); the box head is an ``nn.Sequential`` with
its C convs at 0..C-1, a Flatten at C and its Linear layers at C+1, C+3, ... (0 convs and 2 fcs
is torchvision's ``TwoMLPHead``, named ``fc6``/``fc7``, as gn_det builds it); detectron2 names a
single RPN conv ``conv`` and several ``conv.conv<k-1>``. Mapping therefore works on a whole set of
names at once (:func:`parse_names`, :func:`format_names`). Only names change here; what the rows
of the predictors mean is :mod:`gn_det.checkpoint.detectron2_detector`'s business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

__all__ = ["HEAD_SCHEMES", "HEAD_MODULES", "HeadParam", "parse_names", "format_names"]

HEAD_SCHEMES = ("gn_det", "detectron2", "caffe2")
HEAD_MODULES = ("fpn_lateral", "fpn_output", "rpn_conv", "rpn_objectness", "rpn_deltas", "box_conv", "box_fc",
                "cls_score", "bbox_pred", "mask_conv", "mask_deconv", "mask_predictor")
# The part of the detector each module belongs to (report groups and config hints).
_PARTS = {"fpn_lateral": "fpn", "fpn_output": "fpn", "rpn_conv": "rpn", "rpn_objectness": "rpn",
          "rpn_deltas": "rpn", "box_conv": "box_head", "box_fc": "box_head", "cls_score": "box_predictor",
          "bbox_pred": "box_predictor", "mask_conv": "mask_head", "mask_deconv": "mask_head",
          "mask_predictor": "mask_head"}
_CONV_PARAMS = ("weight", "bias")
_NORM_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class HeadParam:
    """A scheme-independent detector-head parameter.

    Attributes:
        module: one of :data:`HEAD_MODULES`.
        index: the ResNet stage (2..5) for FPN convs; the 1-based number of an RPN conv, box-head
            conv, box-head fc or mask-head conv; 0 for modules that occur once.
        norm: True for the norm layer after a conv (``.norm`` in detectron2, ``.1`` in gn_det).
        param: "weight", "bias" or a norm buffer ("running_mean", ...).
    """

    module: str
    index: int = 0
    norm: bool = False
    param: str = "weight"

    @property
    def part(self) -> str:
        """"fpn", "rpn", "box_head", "box_predictor" or "mask_head" (detectron2's grouping: the mask
        head includes its deconv and predictor)."""
        return _PARTS[self.module]


def _param(module: str, index: int, norm: bool, param: str) -> HeadParam | None:
    return HeadParam(module, index, norm, param) if param in (_NORM_PARAMS if norm else _CONV_PARAMS) else None


# ----------------------------------------------------------------------------- parsing

_D2_FPN = re.compile(r"^backbone\.fpn_(lateral|output)([2-6])(\.norm)?\.(\w+)$")
_D2_RPN_CONV = re.compile(r"^proposal_generator\.rpn_head\.conv(?:\.conv(\d+))?\.(\w+)$")
_D2_RPN_OUT = re.compile(r"^proposal_generator\.rpn_head\.(objectness_logits|anchor_deltas)\.(\w+)$")
_D2_HEAD_CONV = re.compile(r"^roi_heads\.(box_head\.conv|mask_head\.mask_fcn)(\d+)(\.norm)?\.(\w+)$")
_D2_BOX_FC = re.compile(r"^roi_heads\.box_head\.fc(\d+)\.(\w+)$")
_D2_SINGLE_MODULES = {"box_predictor.cls_score": "cls_score", "box_predictor.bbox_pred": "bbox_pred",
                      "mask_head.deconv": "mask_deconv", "mask_head.predictor": "mask_predictor"}
_D2_SINGLE = re.compile(r"^roi_heads\.(" + "|".join(map(re.escape, _D2_SINGLE_MODULES)) + r")\.(\w+)$")


def _parse_detectron2(name: str) -> HeadParam | None:
    if m := _D2_FPN.match(name):
        kind, stage, norm, param = m.groups()
        return _param(f"fpn_{kind}", int(stage), bool(norm), param)
    if m := _D2_RPN_CONV.match(name):
        k, param = m.groups()
        return _param("rpn_conv", 1 if k is None else int(k) + 1, False, param)
    if m := _D2_RPN_OUT.match(name):
        which, param = m.groups()
        return _param("rpn_objectness" if which == "objectness_logits" else "rpn_deltas", 0, False, param)
    if m := _D2_HEAD_CONV.match(name):
        which, k, norm, param = m.groups()
        return _param("box_conv" if which.startswith("box") else "mask_conv", int(k), bool(norm), param)
    if m := _D2_BOX_FC.match(name):
        return _param("box_fc", int(m.group(1)), False, m.group(2))
    if m := _D2_SINGLE.match(name):
        return _param(_D2_SINGLE_MODULES[m.group(1)], 0, False, m.group(2))
    return None


_C2_SUFFIX = {"w": (False, "weight"), "b": (False, "bias"), "gn_s": (True, "weight"), "gn_b": (True, "bias")}
_C2_END = r"_(w|b|gn_s|gn_b)$"
_C2_RULES = [  # (pattern, module, how the index is read from the first group)
    (re.compile(r"^fpn_inner_res([2-5])_\d+_sum(?:_lateral)?" + _C2_END), "fpn_lateral", int),
    (re.compile(r"^fpn_res([2-5])_\d+_sum" + _C2_END), "fpn_output", int),
    (re.compile(r"^conv_rpn_fpn(2)" + _C2_END), "rpn_conv", lambda _: 1),  # shared by all levels
    (re.compile(r"^rpn_cls_logits_fpn(2)" + _C2_END), "rpn_objectness", lambda _: 0),
    (re.compile(r"^rpn_bbox_pred_fpn(2)" + _C2_END), "rpn_deltas", lambda _: 0),
    (re.compile(r"^head_conv(\d+)" + _C2_END), "box_conv", int),
    (re.compile(r"^fc(6|7)" + _C2_END), "box_fc", lambda n: int(n) - 5),
    (re.compile(r"^(cls)_score" + _C2_END), "cls_score", lambda _: 0),
    (re.compile(r"^(bbox)_pred" + _C2_END), "bbox_pred", lambda _: 0),
    # _[mask]_fcn<k> (plain convs), _mask_fcn<k> (GN convs), mask_fcn<k> (some exports)
    (re.compile(r"^_?(?:\[mask\]|mask)_fcn(\d+)" + _C2_END), "mask_conv", int),
    (re.compile(r"^conv5_(mask)" + _C2_END), "mask_deconv", lambda _: 0),
    (re.compile(r"^mask_fcn_(logits)" + _C2_END), "mask_predictor", lambda _: 0),
]


def _parse_caffe2(name: str) -> HeadParam | None:
    for pattern, module, index in _C2_RULES:
        if m := pattern.match(name):
            norm, param = _C2_SUFFIX[m.group(2)]
            return HeadParam(module, index(m.group(1)), norm, param)
    return None


_TV_FPN = re.compile(r"^backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)\.([01])\.(\w+)$")
_TV_RPN_CONV = re.compile(r"^rpn\.head\.conv\.(\d+)\.0\.(\w+)$")
_TV_RPN_OUT = re.compile(r"^rpn\.head\.(cls_logits|bbox_pred)\.(\w+)$")
_TV_HEAD_CONV = re.compile(r"^roi_heads\.(box_head|mask_head)\.(\d+)\.([01])\.(\w+)$")
_TV_BOX_LINEAR = re.compile(r"^roi_heads\.box_head\.(\d+|fc6|fc7)\.(\w+)$")
_TV_SINGLE_MODULES = {"box_predictor.cls_score": "cls_score", "box_predictor.bbox_pred": "bbox_pred",
                      "mask_predictor.conv5_mask": "mask_deconv", "mask_predictor.mask_fcn_logits": "mask_predictor"}
_TV_SINGLE = re.compile(r"^roi_heads\.(" + "|".join(map(re.escape, _TV_SINGLE_MODULES)) + r")\.(\w+)$")


def _parse_gn_det(names: list[str], fpn_stages: tuple[int, ...] | None) -> dict[str, HeadParam]:
    out: dict[str, HeadParam] = {}
    box_convs = {int(m.group(2)) for n in names if (m := _TV_HEAD_CONV.match(n)) and m.group(1) == "box_head"}
    for name in names:
        p = None
        if m := _TV_FPN.match(name):
            blocks, i, sub, param = m.groups()
            if fpn_stages is None:
                raise ValueError("gn_det FPN names need fpn_stages (the ResNet stages feeding the FPN, finest "
                                 "first), e.g. (2, 3, 4, 5)")
            if int(i) < len(fpn_stages):
                kind = "fpn_lateral" if blocks == "inner_blocks" else "fpn_output"
                p = _param(kind, fpn_stages[int(i)], sub == "1", param)
        elif m := _TV_RPN_CONV.match(name):
            p = _param("rpn_conv", int(m.group(1)) + 1, False, m.group(2))
        elif m := _TV_RPN_OUT.match(name):
            p = _param("rpn_objectness" if m.group(1) == "cls_logits" else "rpn_deltas", 0, False, m.group(2))
        elif m := _TV_HEAD_CONV.match(name):
            head, i, sub, param = m.groups()
            p = _param("box_conv" if head == "box_head" else "mask_conv", int(i) + 1, sub == "1", param)
        elif m := _TV_BOX_LINEAR.match(name):
            where, param = m.groups()
            if where in ("fc6", "fc7"):
                p = _param("box_fc", int(where[2]) - 5, False, param)
            elif (int(where) - len(box_convs) - 1) % 2 == 0 and int(where) > len(box_convs):
                p = _param("box_fc", (int(where) - len(box_convs) - 1) // 2 + 1, False, param)
        elif m := _TV_SINGLE.match(name):
            p = _param(_TV_SINGLE_MODULES[m.group(1)], 0, False, m.group(2))
        if p is not None:
            out[name] = p
    return out


def parse_names(names: Iterable[str], scheme: str, *, fpn_stages: Iterable[int] | None = None
                ) -> dict[str, HeadParam]:
    """The detector-head parameters among ``names`` (written in ``scheme``); other names are left out.

    Args:
        names: state-dict keys or Caffe2 blob names (the whole set: gn_det's box-head indices
            depend on how many convs the head has).
        scheme: one of :data:`HEAD_SCHEMES`.
        fpn_stages: gn_det only: the ResNet stages feeding the FPN, finest first (the model's
            ``backbone.in_features``), e.g. ``(2, 3, 4, 5)``.

    Raises:
        ValueError: an unknown scheme, or gn_det FPN names without ``fpn_stages``.
    """
    names = [n for n in names if isinstance(n, str)]
    if scheme == "gn_det":
        return _parse_gn_det(names, None if fpn_stages is None else tuple(fpn_stages))
    parsers = {"detectron2": _parse_detectron2, "caffe2": _parse_caffe2}
    if scheme not in parsers:
        raise ValueError(f"unknown detector naming scheme {scheme!r}; choose one of {HEAD_SCHEMES}")
    return {n: p for n in names if (p := parsers[scheme](n)) is not None}


# ----------------------------------------------------------------------------- formatting


def _count(params: Iterable[HeadParam], module: str) -> int:
    return max((p.index for p in params if p.module == module), default=0)


def _format_gn_det(p: HeadParam, fpn_index: dict[int, int], box_convs: int, box_fcs: int) -> str | None:
    sub = "1" if p.norm else "0"
    if p.module in ("fpn_lateral", "fpn_output"):
        if p.index not in fpn_index:
            return None  # a level the model's FPN does not have
        blocks = "inner_blocks" if p.module == "fpn_lateral" else "layer_blocks"
        return f"backbone.fpn.{blocks}.{fpn_index[p.index]}.{sub}.{p.param}"
    if p.module == "rpn_conv":
        return f"rpn.head.conv.{p.index - 1}.0.{p.param}"
    if p.module in ("rpn_objectness", "rpn_deltas"):
        return f"rpn.head.{'cls_logits' if p.module == 'rpn_objectness' else 'bbox_pred'}.{p.param}"
    if p.module in ("box_conv", "mask_conv"):
        return f"roi_heads.{p.module.split('_')[0]}_head.{p.index - 1}.{sub}.{p.param}"
    if p.module == "box_fc":
        if box_convs == 0 and box_fcs == 2:  # torchvision's TwoMLPHead
            return f"roi_heads.box_head.fc{p.index + 5}.{p.param}"
        return f"roi_heads.box_head.{box_convs + 2 * p.index - 1}.{p.param}"
    single = {v: k for k, v in _TV_SINGLE_MODULES.items()}
    return f"roi_heads.{single[p.module]}.{p.param}"


def _format_detectron2(p: HeadParam, rpn_convs: int) -> str:
    norm = ".norm" if p.norm else ""
    if p.module in ("fpn_lateral", "fpn_output"):
        return f"backbone.fpn_{p.module[4:]}{p.index}{norm}.{p.param}"
    if p.module == "rpn_conv":
        conv = "conv" if rpn_convs == 1 else f"conv.conv{p.index - 1}"
        return f"proposal_generator.rpn_head.{conv}.{p.param}"
    if p.module in ("rpn_objectness", "rpn_deltas"):
        return (f"proposal_generator.rpn_head."
                f"{'objectness_logits' if p.module == 'rpn_objectness' else 'anchor_deltas'}.{p.param}")
    if p.module == "box_conv":
        return f"roi_heads.box_head.conv{p.index}{norm}.{p.param}"
    if p.module == "mask_conv":
        return f"roi_heads.mask_head.mask_fcn{p.index}{norm}.{p.param}"
    if p.module == "box_fc":
        return f"roi_heads.box_head.fc{p.index}.{p.param}"
    single = {v: k for k, v in _D2_SINGLE_MODULES.items()}
    return f"roi_heads.{single[p.module]}.{p.param}"


def format_names(params: Iterable[HeadParam], scheme: str, *, fpn_stages: Iterable[int] | None = None
                 ) -> dict[HeadParam, str | None]:
    """Spell each of ``params`` (a whole detector's heads) in ``scheme`` ("gn_det" or "detectron2").

    Args:
        fpn_stages: gn_det only: the model's FPN stages, finest first; an FPN level outside them
            maps to None. Default: the stages present in ``params``.

    Returns:
        ``{param: name}``; None where the target has no such parameter.

    Raises:
        ValueError: an unknown or read-only scheme (Caffe2 is only read).
    """
    params = list(params)
    if scheme == "detectron2":
        rpn_convs = _count(params, "rpn_conv")
        return {p: _format_detectron2(p, rpn_convs) for p in params}
    if scheme != "gn_det":
        raise ValueError(f"cannot write detector names in scheme {scheme!r}; choose gn_det or detectron2")
    stages = sorted({p.index for p in params if p.module.startswith("fpn_")}) if fpn_stages is None else fpn_stages
    fpn_index = {stage: i for i, stage in enumerate(stages)}
    box_convs, box_fcs = _count(params, "box_conv"), _count(params, "box_fc")
    return {p: _format_gn_det(p, fpn_index, box_convs, box_fcs) for p in params}
