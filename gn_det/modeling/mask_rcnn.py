"""Mask R-CNN (torchvision's) built from a detectron2-style config, fed by gn_det's data loader.

The model keeps torchvision's ``MaskRCNN`` module tree and state-dict keys (``backbone.body``,
``backbone.fpn``, ``rpn``, ``roi_heads``); only the input/output side differs:

- Input: a list of dicts from the data loader, ``{"image": float (3, H, W) RGB in 0-255,
  "image_id", "height", "width" (ORIGINAL size), "instances": {"boxes" (N, 4) xyxy in the
  resized image, "labels" (N,) in 1..K, "masks" (N, H, W)}}``. Images arrive already resized
  (multi-scale in training, single scale at test), so the model only normalizes and pads.
- Train mode: torchvision's loss dict. Eval mode: one dict per image, in the ORIGINAL image's
  pixels: "boxes" (N, 4) xyxy float, "scores" (N,), "labels" (N,) in 1..K and, with masks,
  "masks" (N, H, W) uint8 in {0, 1}.

MODEL.WEIGHTS (a converted ResNet checkpoint, or a whole detector) is loaded by the engine's one
loading path, through the detection task's :func:`mask_rcnn_weights_transform`, not by
:func:`build_mask_rcnn`.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from gn_det.checkpoint.formats import parse_checkpoint
from gn_det.checkpoint.loading import resnet_weights_for
from gn_det.checkpoint.model_loading import WeightsForModel
from gn_det.config import ConfigError
from gn_det.modeling.classifier import classifier_resnet_checkpoint
from gn_det.modeling.backbone.fpn import build_resnet_fpn_backbone, fpn_feature_names
from gn_det.modeling.roi_heads import build_box_head, build_mask_head, build_roi_pooler

__all__ = ["GNMaskRCNN", "NormalizeAndBatch", "build_mask_rcnn", "mask_rcnn_weights_transform", "to_original_size"]

logger = logging.getLogger(__name__)
_MASK_THRESHOLD = 0.5


INPUT_FORMATS = ("RGB", "BGR")
META_ARCHITECTURES = ("GeneralizedRCNN", "MaskRCNN")  # detectron2's name, and this project's earlier one


class NormalizeAndBatch(GeneralizedRCNNTransform):
    """torchvision's detection transform without the resize: channel order, normalize, then pad
    into a batch.

    Images arrive RGB from the data loader; with ``input_format="BGR"`` (detectron2's MSRA/Caffe2
    weights) the channels are reversed first, and ``image_mean``/``image_std`` are in that order,
    exactly as detectron2's INPUT.FORMAT and MODEL.PIXEL_MEAN/STD. Padding makes every side a
    multiple of ``size_divisible`` (32 for an FPN up to P5).
    """

    def __init__(self, image_mean: Sequence[float], image_std: Sequence[float], size_divisible: int = 32,
                 input_format: str = "RGB"):
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"INPUT.FORMAT must be one of {INPUT_FORMATS}, got {input_format!r}")
        super().__init__(min_size=1, max_size=1, image_mean=list(image_mean), image_std=list(image_std),
                         size_divisible=size_divisible)
        self.input_format = input_format

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        if self.input_format == "BGR":
            image = image.flip(0)
        return super().normalize(image)

    def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None):
        return image, target

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(format={self.input_format}, mean={self.image_mean}, "
                f"std={self.image_std}, size_divisible={self.size_divisible})")


class GNMaskRCNN(MaskRCNN):
    """torchvision's MaskRCNN taking gn_det's batch format (see the module docstring)."""

    def forward(self, batch: Sequence[Mapping[str, Any]]):  # type: ignore[override]
        if not isinstance(batch, (list, tuple)) or not all(isinstance(d, Mapping) for d in batch):
            raise TypeError("GNMaskRCNN expects a list of dicts with an 'image' key (gn_det's data loader "
                            f"format), got {type(batch).__name__}")
        device = next(self.parameters()).device
        images = [_image(d).to(device) for d in batch]
        targets = [self._target(d, device) for d in batch] if self.training else None
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        proposals, proposal_losses = self.rpn(image_list, features, targets)
        detections, detector_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        if self.training:
            return {**detector_losses, **proposal_losses}
        return [to_original_size(det, size, (int(d.get("height", size[0])), int(d.get("width", size[1]))))
                for det, size, d in zip(detections, image_list.image_sizes, batch)]

    def _target(self, d: Mapping[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        where = f"image_id {d.get('image_id', '?')}"
        inst = d.get("instances")
        if inst is None:
            raise ValueError(f"Training sample {where} has no 'instances' (boxes, labels, masks)")
        boxes = torch.as_tensor(inst["boxes"], dtype=torch.float32, device=device).reshape(-1, 4)
        bad = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
        if bad.any():
            raise ValueError(f"Training sample {where} has a box with no area: {boxes[bad][0].tolist()} "
                             "(x1 >= x2 or y1 >= y2); the data loader should drop such annotations")
        target = {"boxes": boxes, "labels": torch.as_tensor(inst["labels"], dtype=torch.int64, device=device)}
        if self.roi_heads.has_mask():
            if inst.get("masks") is None:
                raise ValueError(f"Training sample {where} has no instance masks but MODEL.MASK_ON is True")
            target["masks"] = torch.as_tensor(inst["masks"], device=device)
        return target


def _image(d: Mapping[str, Any]) -> torch.Tensor:
    image = d.get("image")
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"Sample image_id {d.get('image_id', '?')}: 'image' must be a (3, H, W) tensor, "
                         f"got {getattr(image, 'shape', type(image).__name__)}")
    return image if image.is_floating_point() else image.float()


def to_original_size(det: dict[str, torch.Tensor], input_size: tuple[int, int],
                     original_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Rescale one image's detections from the network input size to the original image size.

    Boxes are scaled per axis; soft masks (N, 1, M, M) are pasted into the original image with
    torchvision's ``paste_masks_in_image`` and thresholded at 0.5 into (N, H, W) uint8.
    """
    out = dict(det)
    out["boxes"] = resize_boxes(det["boxes"], list(input_size), list(original_size))
    if "masks" in det:
        pasted = paste_masks_in_image(det["masks"], out["boxes"], original_size)
        out["masks"] = (pasted[:, 0] >= _MASK_THRESHOLD).to(torch.uint8)
    return out


def _anchor_generator(cfg, num_levels: int) -> AnchorGenerator:
    a = cfg.MODEL.ANCHOR_GENERATOR
    sizes, ratios = [tuple(s) for s in a.SIZES], [tuple(r) for r in a.ASPECT_RATIOS]
    # detectron2 convention: a single entry applies to every level.
    sizes = sizes * num_levels if len(sizes) == 1 else sizes
    ratios = ratios * num_levels if len(ratios) == 1 else ratios
    if len(sizes) != num_levels or len(ratios) != num_levels:
        raise ValueError(f"MODEL.ANCHOR_GENERATOR: the FPN gives {num_levels} levels (OUT_FEATURES + 'pool'), "
                         f"but SIZES has {len(sizes)} and ASPECT_RATIOS {len(ratios)} entries; give one entry "
                         f"per level or a single entry for all")
    if len({len(s) * len(r) for s, r in zip(sizes, ratios)}) != 1:
        raise ValueError("MODEL.ANCHOR_GENERATOR: every level needs the same number of anchors "
                         "(len(SIZES[i]) * len(ASPECT_RATIOS[i])), as the shared RPN head predicts a fixed count")
    return AnchorGenerator(tuple(sizes), tuple(ratios))


def _rpn_head(cfg, in_channels: int, num_anchors: int) -> RPNHead:
    dims = list(cfg.MODEL.RPN.CONV_DIMS)
    if not dims or any(d not in (-1, in_channels) for d in dims):
        raise ValueError(f"MODEL.RPN.CONV_DIMS = {dims}: torchvision's RPN head keeps the input width, so each "
                         f"entry must be -1 (or {in_channels}); the number of entries is the number of convs")
    return RPNHead(in_channels, num_anchors, conv_depth=len(dims))


def build_mask_rcnn(cfg) -> GNMaskRCNN:
    """Constructs Mask R-CNN (or Faster R-CNN with MODEL.MASK_ON False) from the config.

    Reads the backbone keys (see :func:`build_resnet_fpn_backbone`), MODEL.ANCHOR_GENERATOR,
    MODEL.RPN.*, MODEL.ROI_HEADS.* (NUM_CLASSES excludes the background, as in detectron2),
    MODEL.ROI_BOX_HEAD.*, MODEL.ROI_MASK_HEAD.*, TEST.DETECTIONS_PER_IMAGE, INPUT.FORMAT and
    MODEL.PIXEL_MEAN/STD (in INPUT.FORMAT's channel order, 0-255). MODEL.META_ARCHITECTURE and
    MODEL.BACKBONE.NAME must name what is built (detectron2's values are accepted).

    MODEL.WEIGHTS is not loaded here: the engine loads it once (see
    :func:`mask_rcnn_weights_transform`), as the task contract in :mod:`gn_det.engine.task` says.
    """
    if cfg.MODEL.META_ARCHITECTURE not in META_ARCHITECTURES:
        raise ConfigError(f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r}: the detection task builds "
                         f"{' / '.join(META_ARCHITECTURES)} (Mask R-CNN, or Faster R-CNN with MODEL.MASK_ON "
                         f"False) only")
    if cfg.MODEL.BACKBONE.NAME != "build_resnet_fpn_backbone":
        raise ConfigError(f"MODEL.BACKBONE.NAME {cfg.MODEL.BACKBONE.NAME!r}: only 'build_resnet_fpn_backbone' "
                         f"(ResNet-FPN) is available")
    backbone = build_resnet_fpn_backbone(cfg)
    featmaps = fpn_feature_names(cfg)
    ch = backbone.out_channels
    anchors = _anchor_generator(cfg, len(featmaps) + 1)
    box_head, box_dim = build_box_head(cfg, ch)
    num_classes = int(cfg.MODEL.ROI_HEADS.NUM_CLASSES) + 1
    rpn, roi, bh, mh = cfg.MODEL.RPN, cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD, cfg.MODEL.ROI_MASK_HEAD
    if cfg.MODEL.MASK_ON:
        mask_head, mask_dim = build_mask_head(cfg, ch)
        mask_parts = dict(mask_roi_pool=build_roi_pooler(featmaps, mh.POOLER_RESOLUTION, mh.POOLER_SAMPLING_RATIO),
                          mask_head=mask_head, mask_predictor=MaskRCNNPredictor(mask_dim, mask_dim, num_classes))
    else:  # placeholders stop MaskRCNN from building default mask parts; removed below
        mask_parts = dict(mask_head=nn.Identity(), mask_predictor=nn.Identity())
    model = GNMaskRCNN(
        backbone,
        rpn_anchor_generator=anchors,
        rpn_head=_rpn_head(cfg, ch, anchors.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=int(rpn.PRE_NMS_TOPK_TRAIN), rpn_pre_nms_top_n_test=int(rpn.PRE_NMS_TOPK_TEST),
        rpn_post_nms_top_n_train=int(rpn.POST_NMS_TOPK_TRAIN), rpn_post_nms_top_n_test=int(rpn.POST_NMS_TOPK_TEST),
        rpn_nms_thresh=float(rpn.NMS_THRESH), rpn_batch_size_per_image=int(rpn.BATCH_SIZE_PER_IMAGE),
        rpn_positive_fraction=float(rpn.POSITIVE_FRACTION),
        box_roi_pool=build_roi_pooler(featmaps, bh.POOLER_RESOLUTION, bh.POOLER_SAMPLING_RATIO),
        box_head=box_head, box_predictor=FastRCNNPredictor(box_dim, num_classes),
        box_score_thresh=float(roi.SCORE_THRESH_TEST), box_nms_thresh=float(roi.NMS_THRESH_TEST),
        box_detections_per_img=int(cfg.TEST.DETECTIONS_PER_IMAGE),
        box_fg_iou_thresh=float(roi.IOU_THRESHOLD), box_bg_iou_thresh=float(roi.IOU_THRESHOLD),
        box_batch_size_per_image=int(roi.BATCH_SIZE_PER_IMAGE), box_positive_fraction=float(roi.POSITIVE_FRACTION),
        **mask_parts,
    )
    if not cfg.MODEL.MASK_ON:  # torchvision's RoIHeads runs no mask branch when these are None
        model.roi_heads.mask_roi_pool = model.roi_heads.mask_head = model.roi_heads.mask_predictor = None
    model.transform = NormalizeAndBatch(cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, input_format=cfg.INPUT.FORMAT)
    return model


def mask_rcnn_weights_transform(cfg, model: GNMaskRCNN, raw: Any, source: str) -> WeightsForModel:
    """Map the content of a MODEL.WEIGHTS file into Mask R-CNN's names (the detection task's
    ``weights_transform``; the file is read once, by :func:`gn_det.checkpoint.load_weights`).

    - A detector checkpoint (a gn_det training checkpoint, or a state dict whose keys start with
      ``backbone.``/``rpn.``/``roi_heads.``, e.g. torchvision's ``maskrcnn_resnet50_fpn``) is taken
      as it is; what does not fit (another NUM_CLASSES) is reported by the loading policy.
    - Otherwise a ResNet checkpoint in any format the converter reads (torchvision, gn_det,
      detectron2, Detectron/Caffe2), or the ResNet of a gn_det classification checkpoint (the
      fine-tuned backbone of ``TASK classification``), goes into ``backbone.body.``, which it must
      fill completely.
      The stride placement is checked against MODEL.RESNETS.STRIDE_IN_1X1 and WS weights need a
      "+WS" MODEL.RESNETS.NORM (facts from the config, not from the model object).

    Raises:
        gn_det.checkpoint.CheckpointError: a content none of these, or weights that would load
            silently wrong.
    """
    detector_state = _detector_state_dict(raw)
    if detector_state is not None:
        return WeightsForModel(detector_state, notes=["detector checkpoint: loaded by name"])
    stride_in_1x1 = bool(cfg.MODEL.RESNETS.STRIDE_IN_1X1)
    ckpt = classifier_resnet_checkpoint(raw, source, stride_in_1x1=stride_in_1x1) or parse_checkpoint(raw, source)
    return resnet_weights_for(ckpt, model.backbone.body, "backbone.body.",
                              stride_in_1x1=stride_in_1x1, body_norm=cfg.MODEL.RESNETS.NORM)


_DETECTOR_PREFIXES = ("backbone.", "rpn.", "roi_heads.")


def _detector_state_dict(data: Any) -> dict[str, torch.Tensor] | None:
    """The detector state dict inside a loaded file, or None if it holds something else."""
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        return None
    state = {k.removeprefix("module.") if isinstance(k, str) else k: v for k, v in state.items()}
    if not any(isinstance(k, str) and k.startswith(_DETECTOR_PREFIXES) for k in state):
        return None
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
