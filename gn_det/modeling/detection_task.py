"""The detection task: Mask R-CNN, COCO-format data loaders and COCO evaluation for the engine.

The engine (:mod:`gn_det.engine`) knows nothing about detection; it asks the task named by
``cfg.TASK`` for its parts. This module registers ``"detection"`` and only wires existing
builders together, importing them lazily so that building one part never requires the others.
"""

from __future__ import annotations

import os
from typing import Iterable

from torch import nn

from gn_det.engine.task import register_task
from gn_det.evaluation.coco_evaluation import COCOEvaluator

__all__ = ["DetectionTask"]


@register_task("detection")
class DetectionTask:
    """Instance detection and segmentation (Mask R-CNN) on COCO-format datasets.

    Model: :func:`gn_det.modeling.mask_rcnn.build_mask_rcnn`; data:
    :func:`gn_det.data.build_detection_train_loader` / ``build_detection_test_loader``;
    metrics: :class:`~gn_det.evaluation.COCOEvaluator` (box and mask AP).
    """

    name = "detection"

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
        # COCO's standard maxDets (100), whatever TEST.DETECTIONS_PER_IMAGE: AP stays comparable.
        return COCOEvaluator(dataset_name, results_dir, distributed=True, tasks=tasks, cfg=cfg)

    def load_weights(self, model: nn.Module, path: str) -> None:
        """Load MODEL.WEIGHTS into ``model``: a converted ResNet checkpoint (into the backbone) or
        a whole-detector checkpoint; see :func:`gn_det.modeling.mask_rcnn.load_mask_rcnn_weights`,
        which logs missing and unexpected keys."""
        from gn_det.modeling.mask_rcnn import load_mask_rcnn_weights

        load_mask_rcnn_weights(model, path)
