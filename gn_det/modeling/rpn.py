"""The region proposal network of Mask R-CNN, from MODEL.ANCHOR_GENERATOR and MODEL.RPN.

torchvision's ``RegionProposalNetwork`` and ``RPNHead`` (state-dict keys ``rpn.head.conv``,
``rpn.head.cls_logits``, ``rpn.head.bbox_pred``), with the parts detectron2 configures and
torchvision fixes made configurable:

- Anchors: MODEL.ANCHOR_GENERATOR.NAME "DefaultAnchorGenerator" gives detectron2's anchors (area
  exactly ``size ** 2``, height / width = ratio, corners not rounded); "TorchvisionAnchorGenerator"
  torchvision's (corners rounded to whole pixels). Both list a location's anchors ratios outer,
  sizes inner (torchvision's order; detectron2 lists sizes outer, which differs only with several
  sizes per level, and :mod:`gn_det.checkpoint.detectron2_detector` reorders the RPN rows).
- Box regression weights (MODEL.RPN.BBOX_REG_WEIGHTS; torchvision fixes them at 1, 1, 1, 1).
- Losses: smooth L1 with MODEL.RPN.SMOOTH_L1_BETA (torchvision fixes 1/9, detectron2 defaults to 0,
  plain L1), weighted by MODEL.RPN.LOSS_WEIGHT (objectness) and BBOX_REG_LOSS_WEIGHT * LOSS_WEIGHT
  (boxes), as detectron2 does. Both are normalized by the number of sampled anchors
  (torchvision's), which equals detectron2's BATCH_SIZE_PER_IMAGE x images whenever an image has
  that many anchors to sample (thousands with an FPN).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

from gn_det.config import ConfigError

__all__ = ["ANCHOR_GENERATOR_NAMES", "Detectron2AnchorGenerator", "GNRegionProposalNetwork",
           "build_anchor_generator", "build_rpn", "matcher_thresholds"]


class Detectron2AnchorGenerator(AnchorGenerator):
    """torchvision's ``AnchorGenerator`` with detectron2's cell anchors (``DefaultAnchorGenerator``).

    For each size s and ratio r (height / width): ``w = sqrt(s * s / r)``, ``h = r * w``, the anchor
    ``(-w/2, -h/2, w/2, h/2)``, not rounded (torchvision rounds the corners to whole pixels).
    Listed ratios outer, sizes inner, as torchvision does. Placement on the grid (offset 0,
    stride = input size // feature size) is torchvision's, which is detectron2's with
    MODEL.ANCHOR_GENERATOR.OFFSET 0.
    """

    def generate_anchors(self, scales: Sequence[float], aspect_ratios: Sequence[float],
                         dtype: torch.dtype = torch.float32, device: torch.device = torch.device("cpu")) -> Tensor:
        cells = []
        for ratio in aspect_ratios:
            for size in scales:
                w = math.sqrt(float(size) ** 2 / float(ratio))
                h = float(ratio) * w
                cells.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return torch.tensor(cells, dtype=dtype, device=device)


ANCHOR_GENERATOR_NAMES = {"DefaultAnchorGenerator": Detectron2AnchorGenerator,
                          "TorchvisionAnchorGenerator": AnchorGenerator}


def build_anchor_generator(cfg, num_levels: int) -> AnchorGenerator:
    """The anchor generator of MODEL.ANCHOR_GENERATOR (NAME, SIZES, ASPECT_RATIOS) for ``num_levels``
    feature maps; a single SIZES or ASPECT_RATIOS entry applies to every level, as in detectron2."""
    a = cfg.MODEL.ANCHOR_GENERATOR
    if a.NAME not in ANCHOR_GENERATOR_NAMES:
        raise ConfigError(f"MODEL.ANCHOR_GENERATOR.NAME = {a.NAME!r}: gn_det builds {sorted(ANCHOR_GENERATOR_NAMES)}")
    sizes, ratios = [tuple(s) for s in a.SIZES], [tuple(r) for r in a.ASPECT_RATIOS]
    sizes = sizes * num_levels if len(sizes) == 1 else sizes
    ratios = ratios * num_levels if len(ratios) == 1 else ratios
    if len(sizes) != num_levels or len(ratios) != num_levels:
        key, value = ("SIZES", a.SIZES) if len(sizes) != num_levels else ("ASPECT_RATIOS", a.ASPECT_RATIOS)
        raise ConfigError(f"MODEL.ANCHOR_GENERATOR.{key} = {list(value)}: the RPN reads {num_levels} levels; give one "
                          f"entry per level or a single entry for all")
    if len({len(s) * len(r) for s, r in zip(sizes, ratios)}) != 1:
        raise ConfigError(f"MODEL.ANCHOR_GENERATOR.SIZES = {list(a.SIZES)}: every level needs the same number of "
                          f"anchors (len(SIZES[i]) * len(ASPECT_RATIOS[i])), as the shared RPN head predicts a fixed "
                          f"count")
    return ANCHOR_GENERATOR_NAMES[a.NAME](tuple(sizes), tuple(ratios))


class GNRegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN with detectron2's configurable loss (see the module docstring).

    Args:
        args, kwargs: :class:`torchvision.models.detection.rpn.RegionProposalNetwork`'s.
        bbox_reg_weights: weights on (dx, dy, dw, dh) of the box coder.
        smooth_l1_beta: the smooth L1 transition point; 0 is plain L1.
        loss_weight: factor on both losses.
        bbox_reg_loss_weight: extra factor on the box loss.
    """

    def __init__(self, *args, bbox_reg_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                 smooth_l1_beta: float = 1.0 / 9, loss_weight: float = 1.0, bbox_reg_loss_weight: float = 1.0,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.box_coder = det_utils.BoxCoder(weights=tuple(float(w) for w in bbox_reg_weights))
        self.smooth_l1_beta = float(smooth_l1_beta)
        self.loss_weight = float(loss_weight)
        self.bbox_reg_loss_weight = float(bbox_reg_loss_weight)

    def compute_loss(self, objectness: Tensor, pred_bbox_deltas: Tensor, labels: list[Tensor],
                     regression_targets: list[Tensor]) -> tuple[Tensor, Tensor]:
        pos, neg = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(pos, dim=0))[0]
        sampled = torch.cat([pos, torch.where(torch.cat(neg, dim=0))[0]], dim=0)
        labels_all = torch.cat(labels, dim=0)
        targets = torch.cat(regression_targets, dim=0)
        box_loss = F.smooth_l1_loss(pred_bbox_deltas[pos], targets[pos], beta=self.smooth_l1_beta,
                                    reduction="sum") / sampled.numel()
        objectness_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], labels_all[sampled])
        return objectness_loss * self.loss_weight, box_loss * (self.bbox_reg_loss_weight * self.loss_weight)


def _rpn_head(cfg, in_channels: int, num_anchors: int) -> RPNHead:
    dims = list(cfg.MODEL.RPN.CONV_DIMS)
    if not dims or any(d not in (-1, in_channels) for d in dims):
        raise ConfigError(f"MODEL.RPN.CONV_DIMS = {dims}: torchvision's RPN head keeps the input width, so each "
                          f"entry must be -1 (or {in_channels}); the number of entries is the number of convs")
    return RPNHead(in_channels, num_anchors, conv_depth=len(dims))


def matcher_thresholds(key: str, thresholds: Sequence[float], labels: Sequence[int]) -> tuple[float, float]:
    """(foreground, background) IoU thresholds of torchvision's ``Matcher`` for detectron2's
    ``<key>.IOU_THRESHOLDS`` / ``IOU_LABELS``: ``[t]`` with labels ``[0, 1]``, or ``[bg, fg]`` with
    labels ``[0, -1, 1]`` (IoU in between: ignored). Other specs raise :class:`ConfigError`."""
    thresholds, labels = [float(t) for t in thresholds], [int(v) for v in labels]
    if len(thresholds) == 1 and labels == [0, 1]:
        return thresholds[0], thresholds[0]
    if len(thresholds) == 2 and labels == [0, -1, 1] and thresholds[0] <= thresholds[1]:
        return thresholds[1], thresholds[0]
    raise ConfigError(f"{key}.IOU_THRESHOLDS = {thresholds} with IOU_LABELS = {labels}: gn_det matches with [t] and "
                      f"labels [0, 1], or [background, foreground] (increasing) and labels [0, -1, 1]")


def build_rpn(cfg, in_channels: int, num_levels: int) -> GNRegionProposalNetwork:
    """Constructs the RPN of MODEL.ANCHOR_GENERATOR and MODEL.RPN over ``num_levels`` feature maps of
    ``in_channels`` channels (the FPN's outputs, the extra max-pooled level included)."""
    rpn = cfg.MODEL.RPN
    anchors = build_anchor_generator(cfg, num_levels)
    fg, bg = matcher_thresholds("MODEL.RPN", rpn.IOU_THRESHOLDS, rpn.IOU_LABELS)
    return GNRegionProposalNetwork(
        anchors, _rpn_head(cfg, in_channels, anchors.num_anchors_per_location()[0]),
        fg, bg, int(rpn.BATCH_SIZE_PER_IMAGE), float(rpn.POSITIVE_FRACTION),
        dict(training=int(rpn.PRE_NMS_TOPK_TRAIN), testing=int(rpn.PRE_NMS_TOPK_TEST)),
        dict(training=int(rpn.POST_NMS_TOPK_TRAIN), testing=int(rpn.POST_NMS_TOPK_TEST)),
        float(rpn.NMS_THRESH),
        bbox_reg_weights=rpn.BBOX_REG_WEIGHTS, smooth_l1_beta=rpn.SMOOTH_L1_BETA,
        loss_weight=rpn.LOSS_WEIGHT, bbox_reg_loss_weight=rpn.BBOX_REG_LOSS_WEIGHT,
    )
