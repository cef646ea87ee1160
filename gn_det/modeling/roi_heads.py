"""RoI heads (box and mask) from MODEL.ROI_HEADS / ROI_BOX_HEAD / ROI_MASK_HEAD, built from torchvision's.

Box head (NAME "FastRCNNConvFCHead", detectron2's name):
- NUM_CONV 0, NUM_FC 2 ("2fc", detectron2's default): torchvision's ``TwoMLPHead``
  (keys ``fc6``/``fc7``, as in torchvision's ``maskrcnn_resnet50_fpn`` checkpoints).
- anything else, e.g. the GN paper's "4conv1fc" (NUM_CONV 4, NUM_FC 1): torchvision's
  ``FastRCNNConvFCHead`` (keys ``<i>.0`` conv, ``<i>.1`` norm, then the Linear layers;
  ``maskrcnn_resnet50_fpn_v2`` uses this head).
Mask head: torchvision's ``MaskRCNNHeads`` with NUM_CONV convs of CONV_DIM channels.
Norms come from the norm factory; "+WS" makes the convs that feed a norm WS convs.

RoI pooling is detectron2's ``ROIPooler``: POOLER_TYPE "ROIAlignV2" (half-pixel aligned, detectron2's
default), "ROIAlign" (torchvision's and Detectron's) or "ROIPool", each box pooled from the level
``floor(4 + log2(sqrt(area) / 224))`` clamped to the levels read (the FPN paper's rule). The box
loss is smooth L1 with MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA (torchvision fixes 1/9, detectron2
defaults to 0) times BBOX_REG_LOSS_WEIGHT; box coder weights are ROI_BOX_HEAD.BBOX_REG_WEIGHTS.
"""

from __future__ import annotations

import math
import sys
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import roi_align, roi_pool

from gn_det.config import ConfigError
from gn_det.layers.conv_norm import standardize_conv_norm_pairs
from gn_det.layers.norm import get_norm_layer
from gn_det.modeling.cfg_norm import norm_from_cfg
from gn_det.modeling.rpn import matcher_thresholds

__all__ = ["BOX_HEAD_NAMES", "POOLER_TYPES", "GNRoIHeads", "LevelRoIPooler", "box_regression_loss",
           "build_box_head", "build_mask_branch", "build_mask_head", "build_roi_heads"]

BOX_HEAD_NAMES = ("FastRCNNConvFCHead",)
POOLER_TYPES = ("ROIAlignV2", "ROIAlign", "ROIPool")


class LevelRoIPooler(nn.Module):
    """Pools each box from one feature level, as detectron2's ``ROIPooler``.

    Args:
        featmap_names: the feature maps to read, finest first (keys of the features dict).
        strides: their strides (powers of 2, consecutive: a pyramid).
        output_size: pooled height and width.
        sampling_ratio: RoIAlign samples per bin side; 0: adaptive.
        pooler_type: one of :data:`POOLER_TYPES`.
        canonical_box_size, canonical_level: a box of this size (sqrt of its area) is pooled from
            this level (stride ``2 ** level``).

    The forward takes torchvision's arguments ``(features, boxes, image_shapes)`` (image shapes
    are not needed: the strides are given), so it replaces ``MultiScaleRoIAlign`` in ``RoIHeads``.
    """

    def __init__(self, featmap_names: Sequence[str], strides: Sequence[int], output_size: int,
                 sampling_ratio: int, pooler_type: str, canonical_box_size: int = 224,
                 canonical_level: int = 4) -> None:
        super().__init__()
        if pooler_type not in POOLER_TYPES:
            raise ValueError(f"pooler_type must be one of {POOLER_TYPES}, got {pooler_type!r}")
        levels = [int(round(math.log2(s))) for s in strides]
        if not levels or [2 ** k for k in levels] != list(strides) or levels != list(range(levels[0], levels[-1] + 1)):
            raise ValueError(f"strides {list(strides)} must be consecutive powers of 2 (a pyramid)")
        if len(featmap_names) != len(strides):
            raise ValueError(f"{len(featmap_names)} feature maps but {len(strides)} strides")
        self.featmap_names = list(featmap_names)
        self.strides = list(strides)
        self.output_size = (int(output_size), int(output_size))
        self.sampling_ratio = int(sampling_ratio)
        self.pooler_type = pooler_type
        self.min_level, self.max_level = levels[0], levels[-1]
        self.canonical_box_size, self.canonical_level = canonical_box_size, canonical_level

    def level_of(self, boxes: list[Tensor]) -> Tensor:
        """Index (0 = finest level read) of the level each box is pooled from."""
        sizes = torch.sqrt(torch.cat([(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) for b in boxes]))
        level = torch.floor(self.canonical_level + torch.log2(sizes / self.canonical_box_size + sys.float_info.epsilon))
        return (level.clamp(self.min_level, self.max_level) - self.min_level).to(torch.int64)

    def _pool(self, feature: Tensor, rois: Tensor, stride: int) -> Tensor:
        if self.pooler_type == "ROIPool":
            return roi_pool(feature, rois, self.output_size, 1.0 / stride)
        return roi_align(feature, rois, self.output_size, 1.0 / stride, self.sampling_ratio,
                         aligned=self.pooler_type == "ROIAlignV2")

    def forward(self, features: dict[str, Tensor], boxes: list[Tensor],
                image_shapes: list[tuple[int, int]] | None = None) -> Tensor:
        maps = [features[name] for name in self.featmap_names]
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
        if len(maps) == 1:
            return self._pool(maps[0], rois, self.strides[0])
        levels = self.level_of(boxes)
        out = maps[0].new_zeros((rois.shape[0], maps[0].shape[1]) + self.output_size)
        for k, (feature, stride) in enumerate(zip(maps, self.strides)):
            idx = torch.where(levels == k)[0]
            out[idx] = self._pool(feature, rois[idx], stride).to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return (f"featmap_names={self.featmap_names}, strides={self.strides}, output_size={self.output_size}, "
                f"sampling_ratio={self.sampling_ratio}, pooler_type={self.pooler_type}")


def box_regression_loss(box_regression: Tensor, labels: list[Tensor], regression_targets: list[Tensor],
                        beta: float) -> Tensor:
    """Fast R-CNN's box loss: smooth L1 (``beta``; 0 is L1) of the ground-truth class's deltas of the
    foreground RoIs, summed and divided by the number of sampled RoIs (torchvision and detectron2 alike)."""
    labels_all = torch.cat(labels, dim=0)
    targets = torch.cat(regression_targets, dim=0)
    pos = torch.where(labels_all > 0)[0]
    per_class = box_regression.reshape(box_regression.shape[0], -1, 4)
    loss = F.smooth_l1_loss(per_class[pos, labels_all[pos]], targets[pos], beta=beta, reduction="sum")
    return loss / labels_all.numel()


class GNRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` with the box loss of :func:`box_regression_loss` (configurable
    ``smooth_l1_beta``, times ``bbox_reg_loss_weight``) in place of torchvision's (beta fixed at 1/9).

    Args:
        args, kwargs: :class:`torchvision.models.detection.roi_heads.RoIHeads`'s.
        smooth_l1_beta: the smooth L1 transition point of the box loss.
        bbox_reg_loss_weight: factor on the box loss.
    """

    def __init__(self, *args, smooth_l1_beta: float = 1.0 / 9, bbox_reg_loss_weight: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.smooth_l1_beta = float(smooth_l1_beta)
        self.bbox_reg_loss_weight = float(bbox_reg_loss_weight)
        self._sampled: tuple[list[Tensor], list[Tensor]] | None = None

    def select_training_samples(self, proposals, targets):
        proposals, matched_idxs, labels, regression_targets = super().select_training_samples(proposals, targets)
        self._sampled = (labels, regression_targets)  # read back by forward for the box loss
        return proposals, matched_idxs, labels, regression_targets

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        predicted = []
        hook = self.box_predictor.register_forward_hook(lambda _module, _inputs, output: predicted.append(output))
        try:
            result, losses = super().forward(features, proposals, image_shapes, targets)
        finally:
            hook.remove()
        (labels, regression_targets), self._sampled = self._sampled, None
        box_regression = predicted[0][1]
        losses["loss_box_reg"] = self.bbox_reg_loss_weight * box_regression_loss(
            box_regression, labels, regression_targets, self.smooth_l1_beta)
        return result, losses


def build_box_head(cfg, in_channels: int) -> tuple[nn.Module, int]:
    """Constructs the box head named by MODEL.ROI_BOX_HEAD.

    Args:
        cfg: the config (NAME, NUM_CONV, CONV_DIM, NUM_FC, FC_DIM, NORM, POOLER_RESOLUTION).
        in_channels: channels of the pooled features (the FPN's out_channels).

    Returns:
        (head, representation size fed to the box predictor).
    """
    h = cfg.MODEL.ROI_BOX_HEAD
    if h.NAME not in BOX_HEAD_NAMES:
        raise ConfigError(f"MODEL.ROI_BOX_HEAD.NAME = {h.NAME!r} is not supported; choose one of {BOX_HEAD_NAMES}")
    num_conv, num_fc = int(h.NUM_CONV), int(h.NUM_FC)
    if num_conv < 0 or num_fc < 0 or num_conv + num_fc == 0:
        raise ValueError(f"MODEL.ROI_BOX_HEAD needs NUM_CONV >= 0 and NUM_FC >= 0, not both 0; "
                         f"got NUM_CONV={num_conv}, NUM_FC={num_fc}")
    res, fc_dim = int(h.POOLER_RESOLUTION), int(h.FC_DIM)
    norm = norm_from_cfg(cfg, h.NORM, "MODEL.ROI_BOX_HEAD.NORM")
    if num_conv == 0 and num_fc == 2:
        return TwoMLPHead(in_channels * res * res, fc_dim), fc_dim
    head = FastRCNNConvFCHead((in_channels, res, res), [int(h.CONV_DIM)] * num_conv, [fc_dim] * num_fc,
                              norm_layer=get_norm_layer(norm))
    standardize_conv_norm_pairs(head, norm)
    return head, fc_dim if num_fc else int(h.CONV_DIM) * res * res


def build_mask_head(cfg, in_channels: int) -> tuple[nn.Module, int]:
    """Constructs the mask head (MODEL.ROI_MASK_HEAD NUM_CONV x CONV_DIM 3x3 convs, NORM).

    Returns:
        (head, channels fed to the mask predictor).
    """
    h = cfg.MODEL.ROI_MASK_HEAD
    num_conv, conv_dim = int(h.NUM_CONV), int(h.CONV_DIM)
    if num_conv < 1:
        raise ValueError(f"MODEL.ROI_MASK_HEAD.NUM_CONV must be >= 1, got {num_conv}")
    norm = norm_from_cfg(cfg, h.NORM, "MODEL.ROI_MASK_HEAD.NORM")
    head = MaskRCNNHeads(in_channels, [conv_dim] * num_conv, 1, norm_layer=get_norm_layer(norm))
    standardize_conv_norm_pairs(head, norm)
    return head, conv_dim


def build_mask_branch(cfg, in_channels: int, featmap_names: Sequence[str], strides: Sequence[int]
                      ) -> dict[str, nn.Module]:
    """The mask pooler, head and predictor of MODEL.ROI_MASK_HEAD (``RoIHeads`` keyword arguments);
    empty with MODEL.MASK_ON False."""
    if not cfg.MODEL.MASK_ON:
        return {}
    mh = cfg.MODEL.ROI_MASK_HEAD
    mask_head, mask_dim = build_mask_head(cfg, in_channels)
    return dict(mask_roi_pool=LevelRoIPooler(featmap_names, strides, mh.POOLER_RESOLUTION, mh.POOLER_SAMPLING_RATIO,
                                             mh.POOLER_TYPE),
                mask_head=mask_head,
                mask_predictor=MaskRCNNPredictor(mask_dim, mask_dim, int(cfg.MODEL.ROI_HEADS.NUM_CLASSES) + 1))


def build_roi_heads(cfg, box_head: nn.Module, box_dim: int, mask_branch: dict[str, nn.Module],
                    featmap_names: Sequence[str], strides: Sequence[int]) -> GNRoIHeads:
    """Constructs the RoI heads of MODEL.ROI_HEADS and ROI_BOX_HEAD around a box head
    (:func:`build_box_head`) and a mask branch (:func:`build_mask_branch`), reading the feature maps
    ``featmap_names`` with the given strides.

    NUM_CLASSES excludes the background, as in detectron2; the predictors have NUM_CLASSES + 1
    outputs with the background first (torchvision's layout).
    """
    roi, bh = cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD
    fg, bg = matcher_thresholds("MODEL.ROI_HEADS", roi.IOU_THRESHOLDS, roi.IOU_LABELS)
    return GNRoIHeads(
        LevelRoIPooler(featmap_names, strides, bh.POOLER_RESOLUTION, bh.POOLER_SAMPLING_RATIO, bh.POOLER_TYPE),
        box_head, FastRCNNPredictor(box_dim, int(roi.NUM_CLASSES) + 1),
        fg, bg, int(roi.BATCH_SIZE_PER_IMAGE), float(roi.POSITIVE_FRACTION), tuple(bh.BBOX_REG_WEIGHTS),
        float(roi.SCORE_THRESH_TEST), float(roi.NMS_THRESH_TEST), int(cfg.TEST.DETECTIONS_PER_IMAGE),
        smooth_l1_beta=bh.SMOOTH_L1_BETA, bbox_reg_loss_weight=bh.BBOX_REG_LOSS_WEIGHT, **mask_branch,
    )
