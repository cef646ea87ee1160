"""The peer: torchvision's own Mask R-CNN, set up like a gn_det FrozenBN config, and its SGD step.

:func:`build_peer` makes what ``torchvision.models.detection.maskrcnn_resnet50_fpn`` makes when it is
given backbone weights (FrozenBatchNorm2d, stem and layer1 frozen; with ``weights_backbone=None``
it would switch to trainable BatchNorm2d and train every layer, which is not the FrozenBN model)
from the same parts, with the image size, anchors, RPN and RoI settings and number of classes
read from the gn_det config it stands beside. It is a structural twin only of a gn_det config
with a 2fc box head, 256 FPN channels and the 4-conv 256-channel mask head; any other config is
refused with the key to change.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def peer_mismatches(cfg) -> list[str]:
    """The config keys that keep torchvision's Mask R-CNN from being ``cfg``'s structural twin."""
    m = cfg.MODEL
    wanted = {"MODEL.RESNETS.NORM": (m.RESNETS.NORM, "FrozenBN"), "MODEL.FPN.NORM": (m.FPN.NORM, ""),
              "MODEL.FPN.OUT_CHANNELS": (m.FPN.OUT_CHANNELS, 256),
              "MODEL.ROI_BOX_HEAD.NUM_CONV": (m.ROI_BOX_HEAD.NUM_CONV, 0),
              "MODEL.ROI_BOX_HEAD.NUM_FC": (m.ROI_BOX_HEAD.NUM_FC, 2),
              "MODEL.ROI_BOX_HEAD.FC_DIM": (m.ROI_BOX_HEAD.FC_DIM, 1024),
              "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": (m.ROI_BOX_HEAD.POOLER_RESOLUTION, 7),
              "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": (m.ROI_MASK_HEAD.POOLER_RESOLUTION, 14),
              "MODEL.ROI_MASK_HEAD.NUM_CONV": (m.ROI_MASK_HEAD.NUM_CONV, 4),
              "MODEL.ROI_MASK_HEAD.CONV_DIM": (m.ROI_MASK_HEAD.CONV_DIM, 256),
              "MODEL.ROI_MASK_HEAD.NORM": (m.ROI_MASK_HEAD.NORM, ""),
              "MODEL.RESNETS.STRIDE_IN_1X1": (m.RESNETS.STRIDE_IN_1X1, False),
              "INPUT.FORMAT": (cfg.INPUT.FORMAT, "RGB")}
    return [f"{k} is {have!r}, the peer needs {want!r}" for k, (have, want) in wanted.items() if have != want]


def build_peer(cfg, image_size: int) -> nn.Module:
    """torchvision's ``MaskRCNN`` on a FrozenBN ResNet-FPN, configured like ``cfg`` (a gn_det
    detection config); it takes 0-1 RGB images, resized (by torchvision's transform) to ``image_size``.

    Raises:
        ValueError: ``cfg`` is not structurally torchvision's model (see :func:`peer_mismatches`).
    """
    from torchvision.models import resnet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.mask_rcnn import MaskRCNN
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops.misc import FrozenBatchNorm2d

    problems = peer_mismatches(cfg)
    if problems:
        raise ValueError("the peer (torchvision's Mask R-CNN) is no twin of this config: " + "; ".join(problems))
    m = cfg.MODEL
    body = getattr(resnet, f"resnet{m.RESNETS.DEPTH}")(weights=None, norm_layer=FrozenBatchNorm2d)
    # gn_det's FREEZE_AT counts stem, res2, ... from the input; torchvision's trainable layers from the top.
    backbone = _resnet_fpn_extractor(body, 5 - int(m.BACKBONE.FREEZE_AT))
    levels = ["0", "1", "2", "3"]
    sizes = tuple(tuple(s) for s in m.ANCHOR_GENERATOR.SIZES)
    anchors = AnchorGenerator(sizes, tuple(tuple(m.ANCHOR_GENERATOR.ASPECT_RATIOS[0]) for _ in sizes))
    box = m.ROI_BOX_HEAD
    # The box head and predictors are torchvision's defaults (2fc of 1024, 7x7 and 14x14 pooling).
    return MaskRCNN(
        backbone, num_classes=m.ROI_HEADS.NUM_CLASSES + 1,  # torchvision counts the background
        min_size=image_size, max_size=max(image_size, int(cfg.INPUT.MAX_SIZE_TEST)),
        image_mean=[v / 255 for v in m.PIXEL_MEAN], image_std=[v / 255 for v in m.PIXEL_STD],
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=m.RPN.PRE_NMS_TOPK_TRAIN, rpn_pre_nms_top_n_test=m.RPN.PRE_NMS_TOPK_TEST,
        rpn_post_nms_top_n_train=m.RPN.POST_NMS_TOPK_TRAIN, rpn_post_nms_top_n_test=m.RPN.POST_NMS_TOPK_TEST,
        rpn_nms_thresh=m.RPN.NMS_THRESH, rpn_fg_iou_thresh=m.RPN.IOU_THRESHOLDS[1],
        rpn_bg_iou_thresh=m.RPN.IOU_THRESHOLDS[0], rpn_batch_size_per_image=m.RPN.BATCH_SIZE_PER_IMAGE,
        rpn_positive_fraction=m.RPN.POSITIVE_FRACTION,
        box_roi_pool=MultiScaleRoIAlign(levels, 7, sampling_ratio=box.POOLER_SAMPLING_RATIO),
        box_score_thresh=m.ROI_HEADS.SCORE_THRESH_TEST, box_nms_thresh=m.ROI_HEADS.NMS_THRESH_TEST,
        box_detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE,
        box_fg_iou_thresh=m.ROI_HEADS.IOU_THRESHOLDS[0], box_bg_iou_thresh=m.ROI_HEADS.IOU_THRESHOLDS[0],
        box_batch_size_per_image=m.ROI_HEADS.BATCH_SIZE_PER_IMAGE,
        box_positive_fraction=m.ROI_HEADS.POSITIVE_FRACTION,
        mask_roi_pool=MultiScaleRoIAlign(levels, 14, sampling_ratio=m.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO))


def peer_batch(batch: list[dict]) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """gn_det's detection samples (0-255 images) as torchvision's (0-1 images, target dicts)."""
    images = [d["image"] / 255 for d in batch]
    targets = [{"boxes": d["instances"]["boxes"], "labels": d["instances"]["labels"],
                "masks": d["instances"]["masks"]} for d in batch]
    return images, targets


class PeerStepper:
    """The plain training step a torchvision user writes: zero grads, forward on the batch moved to
    the device, summed losses backward, one SGD step (momentum and weight decay as ``cfg``'s)."""

    def __init__(self, model: nn.Module, cfg, batch: list[dict], device: torch.device):
        self.model = model.to(device).train()
        self.device = device
        self.images, self.targets = peer_batch(batch)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=float(cfg.SOLVER.BASE_LR), momentum=cfg.SOLVER.MOMENTUM,
                                         weight_decay=cfg.SOLVER.WEIGHT_DECAY)

    def step(self) -> None:
        """One training step (no device sync)."""
        self.optimizer.zero_grad(set_to_none=True)
        images = [im.to(self.device) for im in self.images]
        targets = [{k: v.to(self.device) for k, v in t.items()} for t in self.targets]
        losses = self.model(images, targets)
        sum(losses.values()).backward()
        self.optimizer.step()


def peer_inference(model: nn.Module) -> Callable[[torch.Tensor], tuple]:
    """A tensor-in, tensors-out inference call of the peer on one 0-255 image (for FLOP counting)."""
    def run(image: torch.Tensor) -> tuple:
        d = model([image / 255])[0]
        return d["boxes"], d["scores"], d["masks"]
    return run
