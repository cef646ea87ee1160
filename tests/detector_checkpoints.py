"""Test helpers: a tiny GN Mask R-CNN and detectron2 / Detectron (Caffe2) checkpoints for it, named
by hand from the formats' public names (REFERENCE.md, detectron2's c2_model_loading), not by the
mapping under test, with a distinct value in every element of every tensor."""

from __future__ import annotations

from pathlib import Path

import torch

from gn_det.checkpoint import convert_name, format_name, parse_name
from gn_det.config import load_config
from gn_det.modeling.mask_rcnn import GNMaskRCNN, build_mask_rcnn

ROOT = Path(__file__).resolve().parents[1]
TEST_CFG = ROOT / "configs" / "synthetic" / "mask_rcnn_R_18_FPN_test.yaml"
K = 5  # foreground classes of the test config


def cfg(*opts):
    """The test config with detectron2's 32 GN groups (the test config's own 8 differ from it)."""
    return load_config(str(TEST_CFG), ["MODEL.GROUP_NORM.NUM_GROUPS", "32", *opts])


def model(*opts, seed: int = 0) -> GNMaskRCNN:
    torch.manual_seed(seed)
    return build_mask_rcnn(cfg(*opts))


def _conv_norm(table: dict, own: dict, d2: str, gn: str) -> None:
    """A conv (+ its norm, if the model has one there): detectron2 ``d2[.norm]`` = gn_det ``gn.0 / gn.1``."""
    table[f"{d2}.weight"] = f"{gn}.0.weight"
    norm = sorted(k[len(gn) + 3:] for k in own if k.startswith(f"{gn}.1."))
    if norm:
        table.update({f"{d2}.norm.{p}": f"{gn}.1.{p}" for p in norm})
    else:
        table[f"{d2}.bias"] = f"{gn}.0.bias"


def detectron2_names(m: GNMaskRCNN) -> dict[str, str]:
    """detectron2 name -> gn_det name for every tensor of ``m`` (4conv1fc or 2fc box head)."""
    own = m.state_dict()
    table = {"backbone.bottom_up." + convert_name(k[len("backbone.body."):], "torchvision", "detectron2"): k
             for k in own if k.startswith("backbone.body.")}
    for i, stage in enumerate((2, 3, 4, 5)):
        _conv_norm(table, own, f"backbone.fpn_lateral{stage}", f"backbone.fpn.inner_blocks.{i}")
        _conv_norm(table, own, f"backbone.fpn_output{stage}", f"backbone.fpn.layer_blocks.{i}")
    for p in ("weight", "bias"):
        table[f"proposal_generator.rpn_head.conv.{p}"] = f"rpn.head.conv.0.0.{p}"
        table[f"proposal_generator.rpn_head.objectness_logits.{p}"] = f"rpn.head.cls_logits.{p}"
        table[f"proposal_generator.rpn_head.anchor_deltas.{p}"] = f"rpn.head.bbox_pred.{p}"
        table[f"roi_heads.box_predictor.cls_score.{p}"] = f"roi_heads.box_predictor.cls_score.{p}"
        table[f"roi_heads.box_predictor.bbox_pred.{p}"] = f"roi_heads.box_predictor.bbox_pred.{p}"
        table[f"roi_heads.mask_head.deconv.{p}"] = f"roi_heads.mask_predictor.conv5_mask.{p}"
        table[f"roi_heads.mask_head.predictor.{p}"] = f"roi_heads.mask_predictor.mask_fcn_logits.{p}"
        if "roi_heads.box_head.fc6.weight" in own:  # 2fc
            table[f"roi_heads.box_head.fc1.{p}"] = f"roi_heads.box_head.fc6.{p}"
            table[f"roi_heads.box_head.fc2.{p}"] = f"roi_heads.box_head.fc7.{p}"
        else:  # 4 convs, Flatten at 4, Linear at 5
            table[f"roi_heads.box_head.fc1.{p}"] = f"roi_heads.box_head.5.{p}"
    for k in range(1, 5):
        if "roi_heads.box_head.fc6.weight" not in own:
            _conv_norm(table, own, f"roi_heads.box_head.conv{k}", f"roi_heads.box_head.{k - 1}")
        _conv_norm(table, own, f"roi_heads.mask_head.mask_fcn{k}", f"roi_heads.mask_head.{k - 1}")
    assert sorted(table.values()) == sorted(own), "the test table must name every tensor of the model"
    return table


def predictor_kind(gn_name: str) -> str | None:
    """"cls_score", "bbox_pred", "mask" (the class-row tensors) or None."""
    for kind, marker in (("cls_score", "box_predictor.cls_score"), ("bbox_pred", "box_predictor.bbox_pred"),
                         ("mask", "mask_predictor.mask_fcn_logits")):
        if marker in gn_name:
            return kind
    return None


class Distinct:
    """Hands out tensors whose elements are consecutive integers, never repeating across calls
    (exact in float32 up to 2**24; an R-18 detector has 11.4M elements)."""

    def __init__(self, start: int = 1) -> None:
        self.next = start

    def __call__(self, shape, dtype=torch.float32) -> torch.Tensor:
        n = 1
        for s in shape:
            n *= s
        t = torch.arange(self.next, self.next + n, dtype=torch.float64).reshape(tuple(shape)).to(dtype)
        self.next += n
        return t


def detectron2_state(m: GNMaskRCNN, start: int = 1) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A detectron2 state dict for a model shaped like ``m`` (K classes, no background rows in
    bbox_pred and the mask predictor), all values distinct; and the name table."""
    own, table, make = m.state_dict(), detectron2_names(m), Distinct(start)
    state = {}
    for d2, gn in table.items():
        shape, kind = list(own[gn].shape), predictor_kind(gn)
        if kind == "bbox_pred":
            shape[0] -= 4
        elif kind == "mask":
            shape[0] -= 1
        state[d2] = make(shape, own[gn].dtype)
    return state, table


def expected_in_gn_det(d2_value: torch.Tensor, gn_name: str) -> torch.Tensor:
    """What a detectron2 tensor must become in gn_det: background row of cls_score first, zero
    background rows added to bbox_pred (4) and the mask predictor (1)."""
    kind = predictor_kind(gn_name)
    if kind == "cls_score":
        return torch.cat([d2_value[-1:], d2_value[:-1]])
    if kind in ("bbox_pred", "mask"):
        rows = 4 if kind == "bbox_pred" else 1
        return torch.cat([torch.zeros(rows, *d2_value.shape[1:], dtype=d2_value.dtype), d2_value])
    return d2_value


def caffe2_names(m: GNMaskRCNN, blocks_per_stage=(2, 2, 2, 2)) -> dict[str, str]:
    """Detectron blob name -> gn_det name for ``m`` (GN everywhere: ``_gn_s``/``_gn_b``, no conv
    biases; or no head norm: ``_w``/``_b``), as Detectron's FPN, 4conv1fc / 2mlp and mask heads
    name them (``_mask_fcn`` for GN mask convs, ``_[mask]_fcn`` for plain ones)."""
    own = m.state_dict()
    gn_body = not any(k.startswith("backbone.body.") and k.endswith("running_mean") for k in own)
    table = {}
    for k in own:  # the ResNet: BN models have BN folded into _bn_s/_bn_b and no statistics
        p = parse_name(k[len("backbone.body."):], "torchvision") if k.startswith("backbone.body.") else None
        if p is not None and p.param in ("weight", "bias"):
            table[format_name(p, "caffe2", caffe2_norm="gn" if gn_body else "bn")] = k

    def conv(prefix: str, gn: str) -> None:
        table[f"{prefix}_w"] = f"{gn}.0.weight"
        if f"{gn}.1.weight" in own:
            table[f"{prefix}_gn_s"], table[f"{prefix}_gn_b"] = f"{gn}.1.weight", f"{gn}.1.bias"
        else:
            table[f"{prefix}_b"] = f"{gn}.0.bias"

    last = {s: blocks_per_stage[s - 2] - 1 for s in (2, 3, 4, 5)}
    for i, s in enumerate((2, 3, 4, 5)):
        lateral = f"fpn_inner_res{s}_{last[s]}_sum" + ("" if s == 5 else "_lateral")
        conv(lateral, f"backbone.fpn.inner_blocks.{i}")
        conv(f"fpn_res{s}_{last[s]}_sum", f"backbone.fpn.layer_blocks.{i}")
    for c2, gn in (("conv_rpn_fpn2", "rpn.head.conv.0.0"), ("rpn_cls_logits_fpn2", "rpn.head.cls_logits"),
                   ("rpn_bbox_pred_fpn2", "rpn.head.bbox_pred"), ("cls_score", "roi_heads.box_predictor.cls_score"),
                   ("bbox_pred", "roi_heads.box_predictor.bbox_pred"),
                   ("conv5_mask", "roi_heads.mask_predictor.conv5_mask"),
                   ("mask_fcn_logits", "roi_heads.mask_predictor.mask_fcn_logits")):
        table[f"{c2}_w"], table[f"{c2}_b"] = f"{gn}.weight", f"{gn}.bias"
    if "roi_heads.box_head.fc6.weight" in own:
        for j in (6, 7):
            table[f"fc{j}_w"], table[f"fc{j}_b"] = f"roi_heads.box_head.fc{j}.weight", f"roi_heads.box_head.fc{j}.bias"
    else:
        table["fc6_w"], table["fc6_b"] = "roi_heads.box_head.5.weight", "roi_heads.box_head.5.bias"
        for k in range(1, 5):
            conv(f"head_conv{k}", f"roi_heads.box_head.{k - 1}")
    for k in range(1, 5):
        gn = f"roi_heads.mask_head.{k - 1}"
        conv(f"_mask_fcn{k}" if f"{gn}.1.weight" in own else f"_[mask]_fcn{k}", gn)
    return table
