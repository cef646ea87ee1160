"""The detection task: Mask R-CNN, COCO-format data loaders and COCO evaluation for the engine.

The engine (:mod:`gn_det.engine`) knows nothing about detection; it asks the task named by
``cfg.TASK`` for its parts. This module registers ``"detection"`` (the default TASK), declares
the detection config keys (:func:`add_detection_config`: detectron2's names) and only wires
existing builders together, importing them lazily so that building one part never requires the
others.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Iterable

from gn_det.config import CfgNode as CN
from gn_det.engine.task import register_task
from gn_det.tasks.detectron2_config import add_detectron2_defaults, add_detectron2_only_keys, check_detectron2_values

if TYPE_CHECKING:  # torch, checkpoints and evaluators only when used: the CLIs read the config keys without them
    from torch import nn

    from gn_det.checkpoint.model_loading import WeightsForModel
    from gn_det.evaluation.coco_evaluation import COCOEvaluator

__all__ = ["DetectionTask", "add_detection_config", "check_detection_config"]

logger = logging.getLogger(__name__)


def add_detection_config(cfg: CN) -> None:
    """Add the detection keys (detectron2's names and defaults) to ``cfg``, in place.

    gn_det's defaults build torchvision's Mask R-CNN (RGB input with ImageNet statistics, anchors
    rounded to whole pixels, RoIAlign without the half-pixel shift, smooth L1 with beta 1/9); a
    detectron2 file gets detectron2's instead (:func:`add_detectron2_defaults`). Every other key
    of detectron2's ``config/defaults.py`` is accepted too (:func:`add_detectron2_only_keys`).
    """
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.FPN = CN()
    cfg.MODEL.FPN.IN_FEATURES = []  # [] or MODEL.RESNETS.OUT_FEATURES: the FPN reads every ResNet output
    cfg.MODEL.FPN.NORM = ""
    cfg.MODEL.FPN.OUT_CHANNELS = 256

    cfg.MODEL.ANCHOR_GENERATOR = CN()
    cfg.MODEL.ANCHOR_GENERATOR.NAME = "TorchvisionAnchorGenerator"  # or "DefaultAnchorGenerator" (detectron2's)
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]

    cfg.MODEL.RPN = CN()
    cfg.MODEL.RPN.IN_FEATURES = []  # [] or every FPN level, detectron2's names: ["p2", ..., "p6"]
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2000
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 1000
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 1000
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
    cfg.MODEL.RPN.NMS_THRESH = 0.7
    cfg.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]  # [background below, foreground from]; in between: ignored
    cfg.MODEL.RPN.IOU_LABELS = [0, -1, 1]
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256
    cfg.MODEL.RPN.POSITIVE_FRACTION = 0.5
    cfg.MODEL.RPN.CONV_DIMS = [-1]
    cfg.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
    cfg.MODEL.RPN.SMOOTH_L1_BETA = 1.0 / 9  # torchvision's; detectron2's default is 0 (L1)
    cfg.MODEL.RPN.LOSS_WEIGHT = 1.0
    cfg.MODEL.RPN.BBOX_REG_LOSS_WEIGHT = 1.0

    cfg.MODEL.ROI_HEADS = CN()
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = []  # [] (FPN levels but the max-pooled one) or a run of ["p2", ...]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 80
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
    cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
    cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]
    cfg.MODEL.ROI_HEADS.IOU_LABELS = [0, 1]
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
    cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5

    cfg.MODEL.ROI_BOX_HEAD = CN()
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_CONV = 0
    cfg.MODEL.ROI_BOX_HEAD.CONV_DIM = 256
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 1024
    cfg.MODEL.ROI_BOX_HEAD.NORM = ""
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0
    cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlign"  # torchvision's; detectron2's default is "ROIAlignV2"
    cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    cfg.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 1.0 / 9  # torchvision's; detectron2's default is 0 (L1)
    cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 1.0

    cfg.MODEL.ROI_MASK_HEAD = CN()
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 4
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 256
    cfg.MODEL.ROI_MASK_HEAD.NORM = ""
    cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
    cfg.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0
    cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlign"

    cfg.INPUT.MIN_SIZE_TRAIN = (800,)
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    cfg.INPUT.MAX_SIZE_TRAIN = 1333
    cfg.INPUT.MIN_SIZE_TEST = 800
    cfg.INPUT.MAX_SIZE_TEST = 1333
    cfg.INPUT.RANDOM_FLIP = "horizontal"  # "horizontal" | "none"
    cfg.INPUT.MASK_FORMAT = "bitmask"  # targets are cut from rasterized masks; "polygon" is accepted too

    cfg.DATASETS.TRAIN = ("coco_2017_train",)
    cfg.DATASETS.TEST = ("coco_2017_val",)
    # Extra COCO-format sets: a list of [name, json_file, image_root].
    cfg.DATASETS.REGISTER = []
    # Synthetic sets made on first use, by seed: a list of [name, num_images, image_size, seed].
    cfg.DATASETS.SYNTHETIC = []
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = True
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True
    cfg.TEST.DETECTIONS_PER_IMAGE = 100
    add_detectron2_only_keys(cfg)


def check_detection_config(cfg: CN, *, detectron2_file: bool = False) -> None:
    """Refuse (one-line :class:`~gn_det.config.ConfigError`) the values the detection task cannot
    honour: the model's (:func:`gn_det.modeling.mask_rcnn.check_mask_rcnn_config`), then the data
    and engine ones (:func:`check_detectron2_values`)."""
    from gn_det.modeling.mask_rcnn import check_mask_rcnn_config

    check_mask_rcnn_config(cfg)
    check_detectron2_values(cfg, detectron2_file=detectron2_file)


@register_task("detection")
class DetectionTask:
    """Instance detection and segmentation (Mask R-CNN) on COCO-format datasets.

    Model: :func:`gn_det.modeling.mask_rcnn.build_mask_rcnn`; data:
    :func:`gn_det.data.build_detection_train_loader` / ``build_detection_test_loader``;
    metrics: :class:`~gn_det.evaluation.COCOEvaluator` (box and mask AP).
    """

    name = "detection"
    add_config = staticmethod(add_detection_config)
    check_config = staticmethod(check_detection_config)
    add_detectron2_defaults = staticmethod(add_detectron2_defaults)

    def build_model(self, cfg) -> nn.Module:
        """Mask R-CNN as the config describes it (norms, heads), randomly initialized.

        MODEL.WEIGHTS is loaded by the engine through :meth:`load_weights`.
        """
        from gn_det.modeling.mask_rcnn import build_mask_rcnn

        return build_mask_rcnn(cfg)

    def build_train_loader(self, cfg, micro_batch_size: int, skip_batches: int = 0) -> Iterable:
        """Endless micro-batches of ``micro_batch_size`` images for this rank from DATASETS.TRAIN.

        ``skip_batches`` (set by the engine on --resume) fast-forwards the sample stream, so a
        resumed run sees the same images and augmentations as one that never stopped.
        """
        from gn_det.data import build_detection_train_loader

        return build_detection_train_loader(cfg, micro_batch_size, skip_batches=skip_batches)

    def build_test_loader(self, cfg, dataset_name: str) -> Iterable:
        """One pass over ``dataset_name`` (this rank's share), test-time resize only."""
        from gn_det.data import build_detection_test_loader

        return build_detection_test_loader(cfg, dataset_name)

    def build_evaluator(self, cfg, dataset_name: str, output_dir: str) -> COCOEvaluator:
        """COCO box (and, with MODEL.MASK_ON, mask) AP; ``coco_instances_results.json`` goes to
        ``output_dir/inference/<dataset_name>/``."""
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        results_dir = os.path.join(output_dir, "inference", dataset_name) if output_dir else None
        from gn_det.evaluation.coco_evaluation import COCOEvaluator

        # COCO's standard maxDets (100), whatever TEST.DETECTIONS_PER_IMAGE: AP stays comparable.
        return COCOEvaluator(dataset_name, results_dir, distributed=True, tasks=tasks, cfg=cfg)

    def weight_parts(self, cfg) -> dict[str, str]:
        """MODEL.WEIGHTS must fill the backbone (a ResNet or a whole detector checkpoint)."""
        return {"backbone": "backbone.body."}

    def weights_transform(self, cfg, model: nn.Module, raw, source: str) -> WeightsForModel:
        """A ResNet checkpoint into ``backbone.body.``, or a whole detector by name; see
        :func:`gn_det.modeling.mask_rcnn.mask_rcnn_weights_transform`.

        Warns (one line, also in the load report) when the file records, or its format implies,
        other input images than INPUT.FORMAT / MODEL.PIXEL_MEAN / MODEL.PIXEL_STD feed the model
        (see :mod:`gn_det.checkpoint.input_convention`).
        """
        from gn_det.modeling.mask_rcnn import mask_rcnn_weights_transform

        weights = mask_rcnn_weights_transform(cfg, model, raw, source)
        warning = _input_convention_warning(cfg, raw, source)
        if warning:
            logger.warning("%s", warning)
            weights.notes.append(f"WARNING: {warning}")
        return weights


def _input_convention_warning(cfg, raw, source: str) -> str | None:
    """The input-convention warning for MODEL.WEIGHTS, or None. detectron2 and Caffe2 detectors are
    checked by their own conversion (:mod:`gn_det.checkpoint.detectron2_detector`)."""
    from gn_det.checkpoint.detectron2_detector import (find_caffe2_detector, find_detectron2_detector,
                                                       input_convention_warning)
    from gn_det.checkpoint.input_convention import cfg_input_convention, recorded_input_convention

    if find_detectron2_detector(raw) is not None or find_caffe2_detector(raw) is not None:
        return None
    recorded = recorded_input_convention(raw)
    if recorded is None:
        return None
    have = cfg_input_convention(cfg)
    return input_convention_warning(recorded, input_format=have["format"], pixel_mean=have["pixel_mean"],
                                    pixel_std=have["pixel_std"], source=source)
