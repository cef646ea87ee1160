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
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from gn_det.checkpoint.detectron2_detector import (find_caffe2_detector, find_detectron2_detector, from_caffe2,
                                                   from_detectron2)
from gn_det.checkpoint.formats import parse_checkpoint
from gn_det.checkpoint.loading import resnet_weights_for
from gn_det.checkpoint.model_loading import WeightsForModel
from gn_det.config import ConfigError, config_value, refuse_unsupported
from gn_det.modeling.classifier import classifier_resnet_checkpoint
from gn_det.modeling.backbone.fpn import FPN_IN_FEATURES, build_resnet_fpn_backbone
from gn_det.modeling.backbone.resnet import resnet_cfg_problems
from gn_det.modeling.cfg_norm import group_norm_width_problems, norm_from_cfg
from gn_det.modeling.detector_weights import detector_layout, mask_rcnn_to_detectron2, whole_detector_weights
from gn_det.modeling.roi_heads import BOX_HEAD_NAMES, POOLER_TYPES, build_box_head, build_mask_branch, build_roi_heads
from gn_det.modeling.rpn import ANCHOR_GENERATOR_NAMES, build_anchor_generator, build_rpn, matcher_thresholds

__all__ = ["GNMaskRCNN", "NormalizeAndBatch", "FeatureLevel", "build_mask_rcnn", "check_mask_rcnn_config",
           "fpn_levels", "mask_rcnn_weights_transform", "to_original_size",
           "is_detector_checkpoint", "detector_layout", "mask_rcnn_to_detectron2"]

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
    """torchvision's MaskRCNN taking gn_det's batch format (see the module docstring).

    Built from its parts (:func:`build_mask_rcnn` makes them from the config), not from
    torchvision's defaults: ``GNMaskRCNN(backbone, rpn, roi_heads, transform)``.
    """

    def __init__(self, backbone: nn.Module, rpn: nn.Module, roi_heads: nn.Module, transform: nn.Module) -> None:
        GeneralizedRCNN.__init__(self, backbone, rpn, roi_heads, transform)  # skips MaskRCNN's default parts

    def forward(self, batch: Sequence[Mapping[str, Any]]):  # type: ignore[override]
        if not isinstance(batch, (list, tuple)) or not all(isinstance(d, Mapping) for d in batch):
            raise TypeError("GNMaskRCNN expects a list of dicts with an 'image' key (gn_det's data loader "
                            f"format), got {type(batch).__name__}")
        device = next(self.parameters()).device
        images = [_image(d).to(device) for d in batch]
        targets = [self._target(d, device) for d in batch] if self.training else None
        detections, losses, sizes = self.run(images, targets)
        if self.training:
            return losses
        return [to_original_size(det, size, (int(d.get("height", size[0])), int(d.get("width", size[1]))))
                for det, size, d in zip(detections, sizes, batch)]

    def run(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None):
        """torchvision's pipeline on RGB 0-255 images already resized: normalize and pad, backbone,
        RPN, RoI heads. Returns ``(detections in the input images' pixels, losses, input sizes)``.
        Tensors only, so an exported model (:mod:`gn_det.export`) runs the same steps."""
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        proposals, proposal_losses = self.rpn(image_list, features, targets)
        detections, detector_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        return detections, {**detector_losses, **proposal_losses}, image_list.image_sizes

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


@dataclass(frozen=True)
class FeatureLevel:
    """One output map of the FPN: detectron2's ``name`` ("p2", ...), the ``key`` of gn_det's
    feature dict ("0", "1", ..., "pool") and its ``stride``."""

    name: str
    key: str
    stride: int


def fpn_levels(cfg) -> list[FeatureLevel]:
    """The FPN's outputs, finest first: p<k> for each stage res<k> of MODEL.RESNETS.OUT_FEATURES,
    then the max-pooled extra level (p6 after res5), as detectron2's ``build_resnet_fpn_backbone``."""
    stages = [int(f[len("res"):]) for f in cfg.MODEL.RESNETS.OUT_FEATURES]
    levels = [FeatureLevel(f"p{k}", str(i), 2 ** k) for i, k in enumerate(stages)]
    return levels + [FeatureLevel(f"p{stages[-1] + 1}", "pool", 2 ** (stages[-1] + 1))]


def _roi_levels(cfg, levels: list[FeatureLevel]) -> list[FeatureLevel]:
    """The levels MODEL.ROI_HEADS.IN_FEATURES names ([]: all but the extra max-pooled one)."""
    names = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
    by_name = {level.name: level for level in levels}
    return [by_name[n] for n in names] if names else levels[:-1]


def _only(cfg, key: str, allowed: Sequence[Any], supported: str) -> list[str]:
    value = config_value(cfg, key)
    return [] if value in allowed else [f"{key} = {value!r}: {supported}"]


# (key, the values gn_det builds, what gn_det supports): detectron2 keys whose other values name
# parts gn_det does not have.
_ONE_OF = (
    ("MODEL.META_ARCHITECTURE", META_ARCHITECTURES,
     "the detection task builds GeneralizedRCNN (Mask R-CNN; Faster R-CNN with MODEL.MASK_ON False) only"),
    ("MODEL.BACKBONE.NAME", ("build_resnet_fpn_backbone",), "only the ResNet-FPN backbone is available (no C4/DC5)"),
    ("MODEL.LOAD_PROPOSALS", (False,), "proposals come from the RPN; precomputed proposal files are not read"),
    ("MODEL.KEYPOINT_ON", (False,), "gn_det has no keypoint head"),
    ("MODEL.PROPOSAL_GENERATOR.NAME", ("RPN",), "the proposal generator is the RPN (no RRPN)"),
    ("MODEL.PROPOSAL_GENERATOR.MIN_SIZE", (0,), "proposals of any size above 0 are kept (torchvision's RPN)"),
    ("MODEL.ANCHOR_GENERATOR.NAME", tuple(ANCHOR_GENERATOR_NAMES),
     f"gn_det builds {' or '.join(ANCHOR_GENERATOR_NAMES)} (no rotated anchors)"),
    ("MODEL.ANCHOR_GENERATOR.OFFSET", (0.0,), "anchors are centred at offset 0 (detectron2's default)"),
    ("MODEL.FPN.FUSE_TYPE", ("sum",), "the FPN sums its top-down and lateral maps ('sum')"),
    ("MODEL.RESNETS.RES5_DILATION", (1,), "res5 is not dilated (1)"),
    ("MODEL.RESNETS.STEM_OUT_CHANNELS", (64,), "the ResNet stem has 64 channels"),
    ("MODEL.RPN.HEAD_NAME", ("StandardRPNHead",), "the RPN head is StandardRPNHead"),
    ("MODEL.RPN.BOUNDARY_THRESH", (-1,), "anchors crossing the image border are kept (-1)"),
    ("MODEL.RPN.BBOX_REG_LOSS_TYPE", ("smooth_l1",), "box losses are smooth L1 (with SMOOTH_L1_BETA)"),
    ("MODEL.ROI_HEADS.NAME", ("StandardROIHeads",),
     "gn_det builds StandardROIHeads (FPN); no Res5ROIHeads (C4) or CascadeROIHeads"),
    ("MODEL.ROI_HEADS.PROPOSAL_APPEND_GT", (True,), "ground-truth boxes are always added to the proposals"),
    ("MODEL.ROI_BOX_HEAD.NAME", BOX_HEAD_NAMES, f"the box head is {' or '.join(BOX_HEAD_NAMES)}"),
    ("MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE", ("smooth_l1",), "box losses are smooth L1 (with SMOOTH_L1_BETA)"),
    ("MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", (False,), "box regression is class-specific"),
    ("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", (False,), "the RoI heads train on the proposals"),
    ("MODEL.ROI_BOX_HEAD.POOLER_TYPE", POOLER_TYPES, f"one of {list(POOLER_TYPES)}"),
    ("MODEL.ROI_MASK_HEAD.NAME", ("MaskRCNNConvUpsampleHead",), "the mask head is MaskRCNNConvUpsampleHead"),
    ("MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", (False,), "masks are predicted per class"),
    ("MODEL.ROI_MASK_HEAD.POOLER_TYPE", POOLER_TYPES, f"one of {list(POOLER_TYPES)}"),
    ("INPUT.FORMAT", INPUT_FORMATS, f"images are fed as {' or '.join(INPUT_FORMATS)}"),
)
_NORM_KEYS = ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM")
# counts and sizes a model cannot be built or trained with at 0 (a deep reshape or conv error otherwise)
_POSITIVE_KEYS = ("MODEL.ROI_HEADS.NUM_CLASSES", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
                  "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "MODEL.RPN.PRE_NMS_TOPK_TEST",
                  "MODEL.RPN.POST_NMS_TOPK_TRAIN", "MODEL.RPN.POST_NMS_TOPK_TEST", "MODEL.FPN.OUT_CHANNELS",
                  "MODEL.ROI_BOX_HEAD.CONV_DIM", "MODEL.ROI_BOX_HEAD.FC_DIM", "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION",
                  "MODEL.ROI_MASK_HEAD.CONV_DIM", "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", "TEST.DETECTIONS_PER_IMAGE")
_STANDARD_RES2_CHANNELS = {18: 64, 34: 64}  # basic blocks; deeper ResNets: 256


def _feature_problems(cfg) -> list[str]:
    """MODEL.RESNETS.OUT_FEATURES, the IN_FEATURES keys (FPN, RPN, RoI heads) and the anchors per level."""
    m = cfg.MODEL
    out = list(m.RESNETS.OUT_FEATURES)
    stages = [int(f[len("res"):]) for f in out if f in FPN_IN_FEATURES]
    if len(stages) != len(out) or not out or stages != list(range(stages[0], stages[0] + len(stages))):
        return [f"MODEL.RESNETS.OUT_FEATURES = {out}: the FPN reads a consecutive, increasing run of "
                f"{list(FPN_IN_FEATURES)}"]
    problems = []
    if list(m.FPN.IN_FEATURES) not in ([], out):
        problems.append(f"MODEL.FPN.IN_FEATURES = {list(m.FPN.IN_FEATURES)}: the FPN reads every ResNet output, so it "
                        f"must equal MODEL.RESNETS.OUT_FEATURES {out} (or be [])")
    names = [level.name for level in fpn_levels(cfg)]
    if list(m.RPN.IN_FEATURES) not in ([], names):
        problems.append(f"MODEL.RPN.IN_FEATURES = {list(m.RPN.IN_FEATURES)}: the RPN reads every FPN level, {names} "
                        f"(or [])")
    roi = list(m.ROI_HEADS.IN_FEATURES)
    if roi and not any(roi == names[i:i + len(roi)] for i in range(len(names))):
        problems.append(f"MODEL.ROI_HEADS.IN_FEATURES = {roi}: the RoI heads read a consecutive, increasing run of "
                        f"the FPN levels {names} (or [] for {names[:-1]})")
    try:
        build_anchor_generator(cfg, len(names))
    except ConfigError as e:
        problems.append(str(e))
    return problems


def _value_problems(cfg) -> list[str]:
    """Keys with a range of values: norms, depth, widths (GroupNorm's split), counts, IoU thresholds, pixel
    statistics, anchors."""
    m, problems = cfg.MODEL, []
    for key in _NORM_KEYS:
        try:
            norm_from_cfg(cfg, config_value(cfg, key), key)
        except ValueError as e:  # the message names key and value
            problems.append(str(e))
    res2 = _STANDARD_RES2_CHANNELS.get(int(m.RESNETS.DEPTH), 256)
    if int(m.RESNETS.RES2_OUT_CHANNELS) not in (0, res2):
        problems.append(f"MODEL.RESNETS.RES2_OUT_CHANNELS = {m.RESNETS.RES2_OUT_CHANNELS}: "
                        f"a ResNet-{m.RESNETS.DEPTH}'s res2 has {res2} channels (0: the depth's own)")
    if any(m.RESNETS.DEFORM_ON_PER_STAGE):
        problems.append(f"MODEL.RESNETS.DEFORM_ON_PER_STAGE = {list(m.RESNETS.DEFORM_ON_PER_STAGE)}: gn_det has no "
                        f"deformable convs; every stage must be False")
    for key in ("MODEL.RPN", "MODEL.ROI_HEADS"):
        node = config_value(cfg, key)
        try:
            matcher_thresholds(key, node.IOU_THRESHOLDS, node.IOU_LABELS)
        except ConfigError as e:
            problems.append(str(e))
    for key in ("MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD"):
        value = list(config_value(cfg, key))
        if len(value) != 3 or (key.endswith("STD") and min(value) <= 0):
            problems.append(f"{key} = {value}: three values (one per colour channel, in INPUT.FORMAT's order, "
                            f"0-255 scale){', all > 0' if key.endswith('STD') else ''}")
    for key in _POSITIVE_KEYS:
        if int(config_value(cfg, key)) < 1:
            problems.append(f"{key} = {config_value(cfg, key)!r}: must be >= 1")
    for key in ("MODEL.RPN.POSITIVE_FRACTION", "MODEL.ROI_HEADS.POSITIVE_FRACTION"):
        if not 0 < float(config_value(cfg, key)) <= 1:
            problems.append(f"{key} = {config_value(cfg, key)!r}: the foreground share of the sampled boxes, in (0, 1]")
    if m.MASK_ON and int(m.ROI_MASK_HEAD.NUM_CONV) < 1:
        problems.append(f"MODEL.ROI_MASK_HEAD.NUM_CONV = {m.ROI_MASK_HEAD.NUM_CONV}: the mask head has at least "
                        f"one conv")
    return problems + resnet_cfg_problems(cfg) + group_norm_width_problems(cfg, _head_widths(cfg))


def _head_widths(cfg) -> list[tuple[str, str, str, int]]:
    """The normalized widths of the FPN and the RoI heads, as :func:`group_norm_width_problems` takes them."""
    m = cfg.MODEL
    widths = [("MODEL.FPN.OUT_CHANNELS", "the FPN's convs", "MODEL.FPN.NORM", int(m.FPN.OUT_CHANNELS))]
    if int(m.ROI_BOX_HEAD.NUM_CONV) > 0:
        widths.append(("MODEL.ROI_BOX_HEAD.CONV_DIM", "the box head's convs", "MODEL.ROI_BOX_HEAD.NORM",
                       int(m.ROI_BOX_HEAD.CONV_DIM)))
    if m.MASK_ON:
        widths.append(("MODEL.ROI_MASK_HEAD.CONV_DIM", "the mask head's convs", "MODEL.ROI_MASK_HEAD.NORM",
                       int(m.ROI_MASK_HEAD.CONV_DIM)))
    return widths


def check_mask_rcnn_config(cfg) -> None:
    """Refuse the config values :func:`build_mask_rcnn` cannot honour, before anything is built.

    Every key detectron2's FPN Mask R-CNN configs set is either honoured or refused here: another
    meta-architecture, backbone, RoI heads (C4 ``Res5ROIHeads``, ``CascadeROIHeads``), deformable
    convs, keypoints, precomputed proposals, class-agnostic heads, IN_FEATURES other than the FPN's
    levels, unknown norms, ...

    Raises:
        ConfigError: one line naming the first refused key, its value and what gn_det supports
            (then the other refused keys).
    """
    problems = [p for key, allowed, supported in _ONE_OF for p in _only(cfg, key, allowed, supported)]
    refuse_unsupported(problems + _feature_problems(cfg) + _value_problems(cfg))


def build_mask_rcnn(cfg) -> GNMaskRCNN:
    """Constructs Mask R-CNN (or Faster R-CNN with MODEL.MASK_ON False) from the config.

    Reads the backbone keys (see :func:`build_resnet_fpn_backbone`), MODEL.ANCHOR_GENERATOR and
    MODEL.RPN (see :func:`gn_det.modeling.rpn.build_rpn`), MODEL.ROI_HEADS, ROI_BOX_HEAD and
    ROI_MASK_HEAD (see :func:`gn_det.modeling.roi_heads.build_roi_heads`; NUM_CLASSES excludes the
    background, as in detectron2), TEST.DETECTIONS_PER_IMAGE, INPUT.FORMAT and MODEL.PIXEL_MEAN/STD
    (in INPUT.FORMAT's channel order, 0-255). The FPN, the RPN and the RoI heads read the levels
    the IN_FEATURES keys name, with detectron2's names (p2 ... p6 from res2 ... res5).

    MODEL.WEIGHTS is not loaded here: the engine loads it once (see
    :func:`mask_rcnn_weights_transform`), as the task contract in :mod:`gn_det.engine.task` says.

    Raises:
        ConfigError: a value gn_det cannot honour (see :func:`check_mask_rcnn_config`).
    """
    check_mask_rcnn_config(cfg)
    backbone = build_resnet_fpn_backbone(cfg)
    levels = fpn_levels(cfg)
    pooled = _roi_levels(cfg, levels)
    keys, strides = [level.key for level in pooled], [level.stride for level in pooled]
    # Parts are made in this order (heads, RPN, box predictor) so a seed gives the initial weights
    # earlier gn_det versions gave (the README's figures).
    box_head, box_dim = build_box_head(cfg, backbone.out_channels)
    mask_branch = build_mask_branch(cfg, backbone.out_channels, keys, strides)
    rpn = build_rpn(cfg, backbone.out_channels, len(levels))
    roi_heads = build_roi_heads(cfg, box_head, box_dim, mask_branch, keys, strides)
    # Pad to the stride of the coarsest ResNet output, as detectron2's FPN (size_divisibility).
    transform = NormalizeAndBatch(cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, size_divisible=levels[-2].stride,
                                  input_format=cfg.INPUT.FORMAT)
    return GNMaskRCNN(backbone, rpn, roi_heads, transform)


def mask_rcnn_weights_transform(cfg, model: GNMaskRCNN, raw: Any, source: str) -> WeightsForModel:
    """Map the content of a MODEL.WEIGHTS file into Mask R-CNN's names (the detection task's
    ``weights_transform``; the file is read once, by :func:`gn_det.checkpoint.load_weights`).

    - A detectron2 FPN Mask R-CNN (the model zoo's ``model_final.pkl``, or a
      ``DetectionCheckpointer`` ``.pth``) or a Detectron (Caffe2) one (``{"blobs": ...}``, the GN
      paper's models): every tensor renamed and, where the formats differ, its rows reordered
      (class order, background rows, anchor order; see
      :mod:`gn_det.checkpoint.detectron2_detector`); the ResNet goes through the same checks as
      a ResNet checkpoint. Heads whose structure differs from the model's (another box head,
      FPN norm, ...) are refused naming the config keys; another NUM_CLASSES leaves the
      predictors to the loading policy, which reports them. The report lists what was mapped,
      converted, dropped and left out, and the input convention the weights expect.
    - A gn_det detector checkpoint (a gn_det training checkpoint, or a state dict whose keys
      start with ``backbone.``/``rpn.``/``roi_heads.``, e.g. torchvision's
      ``maskrcnn_resnet50_fpn``) is taken as it is; what does not fit (another NUM_CLASSES) is
      reported by the loading policy.
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
    layout = detector_layout(model)
    d2_state = find_detectron2_detector(raw)
    if d2_state is not None:
        return whole_detector_weights(cfg, model, from_detectron2(d2_state, **layout, source=source), raw, source)
    blobs = find_caffe2_detector(raw)
    if blobs is not None:
        conversion = from_caffe2(blobs, **layout, source=source)
        return whole_detector_weights(cfg, model, conversion, raw, source)
    detector_state = _detector_state_dict(raw)
    if detector_state is not None:
        return WeightsForModel(detector_state, notes=["detector checkpoint: loaded by name"])
    stride_in_1x1 = bool(cfg.MODEL.RESNETS.STRIDE_IN_1X1)
    ckpt = classifier_resnet_checkpoint(raw, source, stride_in_1x1=stride_in_1x1) or parse_checkpoint(raw, source)
    return resnet_weights_for(ckpt, model.backbone.body, "backbone.body.",
                              stride_in_1x1=stride_in_1x1, body_norm=cfg.MODEL.RESNETS.NORM)


_DETECTOR_PREFIXES = ("backbone.", "rpn.", "roi_heads.")


def is_detector_checkpoint(raw: Any) -> bool:
    """Whether a loaded file holds a whole detector (gn_det, detectron2 or Detectron/Caffe2), not
    only a ResNet."""
    return any(f(raw) is not None for f in (find_detectron2_detector, find_caffe2_detector, _detector_state_dict))


def _detector_state_dict(data: Any) -> dict[str, torch.Tensor] | None:
    """The detector state dict inside a loaded file, or None if it holds something else."""
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        return None
    state = {k.removeprefix("module.") if isinstance(k, str) else k: v for k, v in state.items()}
    if not any(isinstance(k, str) and k.startswith(_DETECTOR_PREFIXES) for k in state):
        return None
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
