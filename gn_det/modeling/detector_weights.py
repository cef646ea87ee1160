"""Whole detectron2 / Detectron (Caffe2) detectors into gn_det's Mask R-CNN, and back out to detectron2.

:mod:`gn_det.checkpoint.detectron2_detector` converts names and rows between the formats, knowing
nothing of the model; this module checks a conversion against the model that will receive it (its
FPN stages and anchor order, the structure of each head, its GroupNorm groups and WS convs, the
input convention its config reads) and routes the ResNet through the same checks as a ResNet
checkpoint (:func:`gn_det.checkpoint.loading.resnet_weights_for`). The detection task reaches it
through :func:`gn_det.modeling.mask_rcnn.mask_rcnn_weights_transform`; ``gn-det-convert`` through
:func:`mask_rcnn_to_detectron2`.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from gn_det.checkpoint.detectron2_detector import (DETECTRON2_DEFAULT_INPUT, RATIOS_OUTER, SIZES_OUTER,
                                                   AnchorLayout, DetectorConversion, input_convention_warning,
                                                   to_detectron2)
from gn_det.checkpoint.formats import make_meta, parse_checkpoint
from gn_det.checkpoint.io import CheckpointError
from gn_det.checkpoint.loading import resnet_weights_for
from gn_det.checkpoint.model_loading import WeightsForModel
from gn_det.layers import WSConv2d, fold_ws
from gn_det.layers.norm import parse_norm

if TYPE_CHECKING:
    from gn_det.modeling.mask_rcnn import GNMaskRCNN

__all__ = ["detector_layout", "whole_detector_weights", "mask_rcnn_to_detectron2"]

logger = logging.getLogger(__name__)


def detector_layout(model: GNMaskRCNN) -> dict[str, Any]:
    """What names and rows of ``model`` depend on: ``fpn_stages`` (the ResNet stages feeding the
    FPN, finest first) and ``anchors`` (an :class:`AnchorLayout`: sizes and ratios per location,
    and the order its anchor generator enumerates them in)."""
    generator = model.rpn.anchor_generator
    # Probe the order: anchor 1 of sizes (32, 64) x ratios (0.5, 1, 2) is square (size 32, ratio 1)
    # when sizes are outer, and twice as wide as high (size 64, ratio 0.5) when ratios are.
    x0, y0, x1, y1 = generator.generate_anchors((32, 64), (0.5, 1.0, 2.0))[1].tolist()
    order = SIZES_OUTER if abs((y1 - y0) / (x1 - x0) - 1.0) < 0.1 else RATIOS_OUTER
    return {"fpn_stages": tuple(int(f[len("res"):]) for f in model.backbone.in_features),
            "anchors": AnchorLayout(len(generator.sizes[0]), len(generator.aspect_ratios[0]), order)}


# What to set when a part of a detectron2/Caffe2 detector has another structure than the model's.
_PART_KEYS = {
    "backbone.fpn.": "MODEL.FPN.NORM / OUT_CHANNELS and MODEL.RESNETS.OUT_FEATURES",
    "rpn.head.": "MODEL.RPN.CONV_DIMS and MODEL.ANCHOR_GENERATOR (anchors per location)",
    "roi_heads.box_head.": "MODEL.ROI_BOX_HEAD.NUM_CONV / NUM_FC / CONV_DIM / FC_DIM / NORM",
    "roi_heads.mask_head.": "MODEL.ROI_MASK_HEAD.NUM_CONV / CONV_DIM / NORM",
    "roi_heads.mask_predictor.conv5_mask.": "MODEL.ROI_MASK_HEAD.CONV_DIM",
}
_D2_GN_GROUPS = 32  # detectron2's and Detectron's GroupNorm


def _check_head_structure(heads: dict[str, torch.Tensor], own: dict[str, torch.Tensor], source: str) -> None:
    """Refuse a part (FPN, RPN, box or mask head) present in both file and model whose parameter
    names or shapes differ: the model was built with another head than the file's."""
    for prefix, keys in _PART_KEYS.items():
        theirs = {k for k in heads if k.startswith(prefix) and not k.endswith("num_batches_tracked")}
        mine = {k for k in own if k.startswith(prefix) and not k.endswith("num_batches_tracked")}
        if not theirs or not mine:
            continue  # a part one side lacks is reported (missing / unexpected) by the loading policy
        extra, lacking = sorted(theirs - mine), sorted(mine - theirs)
        shapes = [f"{k}: file {tuple(heads[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in sorted(theirs & mine) if heads[k].shape != own[k].shape]
        if extra or lacking or shapes:
            detail = "; ".join(x for x in (f"only in the file: {', '.join(extra[:4])}" if extra else "",
                                           f"only in the model: {', '.join(lacking[:4])}" if lacking else "",
                                           f"shapes: {'; '.join(shapes[:3])}" if shapes else "") if x)
            raise CheckpointError(f"{source}: its {prefix}* does not match this model's ({detail}); "
                                  f"build the model as the checkpoint's config did: {keys}")


def _group_norm_counts(model: nn.Module) -> set[int]:
    return {m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)}


def _source_backbone(cfg, conversion: DetectorConversion, raw: Any, source: str) -> tuple[Any, list[str]]:
    """The ResNet part as a :class:`~gn_det.checkpoint.Checkpoint`, and notes on its stride."""
    stride = bool(cfg.MODEL.RESNETS.STRIDE_IN_1X1)
    if conversion.source_format == "caffe2":
        return parse_checkpoint({"blobs": conversion.backbone}, source, "caffe2"), []
    saved = raw.get("gn_det_meta") if isinstance(raw, dict) else None
    wrapped = {"model": conversion.backbone, "__author__": str(raw.get("__author__", "")) if isinstance(raw, dict)
               else "", "matching_heuristics": True}
    if isinstance(saved, dict):  # written by gn_det: the stride placement is recorded
        return parse_checkpoint({**wrapped, "gn_det_meta": saved}, source, "detectron2"), []
    note = (f"detectron2 files do not record where the ResNet stride is: taken from MODEL.RESNETS.STRIDE_IN_1X1 "
            f"= {stride} (detectron2's default is True, its GN configs set False: use the source config's value)")
    return parse_checkpoint(wrapped, source, "detectron2", stride_in_1x1=stride), [note]


def _input_check(cfg, conversion: DetectorConversion, raw: Any, source: str) -> tuple[str, str | None]:
    """(a note on the input convention the weights expect, a warning if the model reads another)."""
    saved = raw.get("gn_det_meta") if isinstance(raw, dict) else None
    recorded = dict(conversion.input_convention)
    if isinstance(saved, dict) and isinstance(saved.get("input"), dict):
        recorded = {**saved["input"], "source": "gn_det_meta in the file"}
    if not recorded:
        recorded = {**DETECTRON2_DEFAULT_INPUT, "source": "not recorded in the file: detectron2's defaults assumed"}
    note = (f"input convention of the weights: {recorded.get('format', 'channel order not recorded')}, mean "
            f"{recorded.get('pixel_mean', '?')}, std {recorded.get('pixel_std', '?')} ({recorded['source']}); this "
            f"model reads INPUT.FORMAT "
            f"{cfg.INPUT.FORMAT}, MODEL.PIXEL_MEAN {list(cfg.MODEL.PIXEL_MEAN)}, MODEL.PIXEL_STD "
            f"{list(cfg.MODEL.PIXEL_STD)}")
    return note, input_convention_warning(recorded, input_format=cfg.INPUT.FORMAT, pixel_mean=cfg.MODEL.PIXEL_MEAN,
                                          pixel_std=cfg.MODEL.PIXEL_STD, source=source)


def whole_detector_weights(cfg, model: GNMaskRCNN, conversion: DetectorConversion, raw: Any,
                            source: str) -> WeightsForModel:
    """A detectron2 / Caffe2 detector's conversion checked against ``model`` and the config."""
    _check_head_structure(conversion.state_dict, model.state_dict(), source)
    notes = conversion.notes()
    state, unused, complete = dict(conversion.state_dict), list(conversion.unmapped), ()
    if conversion.backbone:
        ckpt, stride_notes = _source_backbone(cfg, conversion, raw, source)
        body = resnet_weights_for(ckpt, model.backbone.body, "backbone.body.",
                                  stride_in_1x1=bool(cfg.MODEL.RESNETS.STRIDE_IN_1X1),
                                  body_norm=cfg.MODEL.RESNETS.NORM)
        state.update(body.state_dict)
        unused += body.unused
        complete = body.complete
        notes += body.notes + stride_notes
    input_note, input_warning = _input_check(cfg, conversion, raw, source)
    notes.append(input_note)
    warnings = [input_warning] if input_warning else []
    groups = _group_norm_counts(model) - {_D2_GN_GROUPS}
    if groups:
        warnings.append(f"this model's GroupNorm layers use {sorted(groups)} groups, the source's {_D2_GN_GROUPS}: "
                        f"outputs differ until fine-tuned (MODEL.GROUP_NORM.NUM_GROUPS)")
    if any(isinstance(m, WSConv2d) for m in model.modules()):
        warnings.append("this model standardizes its conv weights (+WS) but the source's convs are plain: "
                        "outputs differ until fine-tuned")
    for warning in warnings:
        logger.warning("%s: %s", source, warning)
    notes += [f"WARNING: {w}" for w in warnings]
    return WeightsForModel(state, complete=complete, unused=sorted(unused), notes=notes)


def mask_rcnn_to_detectron2(cfg, model: GNMaskRCNN, *, source: str = "the model"
                            ) -> tuple[DetectorConversion, dict[str, Any]]:
    """The weights of ``model`` (built from ``cfg``) as a detectron2 GN Mask R-CNN state dict,
    with the ``gn_det_meta`` to store beside them.

    WS convs are folded on a copy (the standardized weight becomes the plain weight: exact at
    inference; detectron2, which has no WS, fine-tunes them as plain convs). The background rows
    that detectron2 has no place for are dropped (see
    :mod:`gn_det.checkpoint.detectron2_detector`).

    Raises:
        CheckpointError: GroupNorm layers with other than 32 groups (detectron2 builds every GN
            with 32: the file would load there silently wrong).
    """
    groups = _group_norm_counts(model) - {_D2_GN_GROUPS}
    if groups:
        raise CheckpointError(f"{source}: its GroupNorm layers use {sorted(groups)} groups, but detectron2 builds "
                              f"every GN (and LN/IN has no detectron2 equivalent) with {_D2_GN_GROUPS}: the "
                              f"export would load there silently wrong. Export a model trained with "
                              f"MODEL.GROUP_NORM.NUM_GROUPS {_D2_GN_GROUPS} and GN norms")
    plain = copy.deepcopy(model)
    folded = fold_ws(plain)
    conversion = to_detectron2(plain.state_dict(), **detector_layout(plain), source=source)
    body_norm = parse_norm(cfg.MODEL.RESNETS.NORM)
    meta = make_meta("gn_det", body_norm.name, ws=False, stride_in_1x1=bool(cfg.MODEL.RESNETS.STRIDE_IN_1X1),
                     stride_source="gn_det config MODEL.RESNETS.STRIDE_IN_1X1", detector=True,
                     ws_convs_folded=folded, num_classes=int(cfg.MODEL.ROI_HEADS.NUM_CLASSES),
                     input={"format": cfg.INPUT.FORMAT, "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
                            "pixel_std": list(cfg.MODEL.PIXEL_STD)})
    if folded:
        conversion.converted["(WS)"] = (f"{folded} WS convs folded into plain convs (exact at inference; "
                                        f"detectron2 fine-tunes them as plain convs)")
    return conversion, meta
