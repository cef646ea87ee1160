"""The image-classification task: a ResNet (BN, GN, GN+WS, ...) on ImageNet-layout folders, top-1/top-5.

Its use: fine-tune a BN ImageNet backbone converted to GN or GN+WS (``gn-det-convert``) for a short
schedule to recover its accuracy, then start Mask R-CNN (or an inflated video model) from the
resulting ``model_final.pth``. This module registers ``"classification"``, declares its config keys
(:func:`add_classification_config`) and wires the builders together:

- model: :func:`gn_det.modeling.classifier.build_classifier` (the ResNet under ``resnet.``);
- data: :mod:`gn_det.data.classification` (dataset names, seeded augmentation, loaders);
- metrics: :class:`~gn_det.evaluation.classification_evaluation.ClassificationEvaluator`;
- MODEL.WEIGHTS: :func:`gn_det.modeling.classifier.classifier_weights_transform`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterable

from gn_det.config import CfgNode as CN
from gn_det.config import refuse_unsupported
from gn_det.engine.task import register_task

if TYPE_CHECKING:  # torch, checkpoints and evaluators only when used: the CLIs read the config keys without them
    from torch import nn

    from gn_det.checkpoint.model_loading import WeightsForModel
    from gn_det.evaluation.classification_evaluation import ClassificationEvaluator

__all__ = ["ClassificationTask", "add_classification_config", "check_classification_config"]


def add_classification_config(cfg: CN) -> None:
    """Add the classification keys and defaults (ImageNet's usual sizes) to ``cfg``, in place."""
    cfg.MODEL.META_ARCHITECTURE = "ResNetClassifier"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0  # a classifier trains (or fine-tunes) every stage
    cfg.MODEL.RESNETS.NORM = "BN"  # torchvision's classifiers; the configs set GN / GN+WS
    cfg.MODEL.CLASSIFIER = CN()
    cfg.MODEL.CLASSIFIER.NUM_CLASSES = 1000  # outputs of fc; must be >= the dataset's classes

    cfg.INPUT.CROP_SIZE = 224  # training: random-resized crop to this side
    cfg.INPUT.RRC_SCALE = (0.08, 1.0)  # fraction of the image area a training crop covers
    cfg.INPUT.RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # aspect-ratio range of a training crop
    cfg.INPUT.RANDOM_FLIP = "horizontal"  # "horizontal" | "none"
    cfg.INPUT.TEST_RESIZE = 256  # testing: shorter side resized to this ...
    cfg.INPUT.TEST_CROP_SIZE = 224  # ... then the centre crop of this side

    cfg.DATASETS.TRAIN = ("imagenet_train",)
    cfg.DATASETS.TEST = ("imagenet_val",)
    # Extra ImageNet-layout folders (<folder>/<class>/<image>): a list of [name, folder].
    cfg.DATASETS.REGISTER = []
    # Synthetic 10-class sets made on first use: a list of [name, images_per_class, image_size, seed].
    cfg.DATASETS.SYNTHETIC = []
    cfg.TEST.IMS_PER_BATCH = 32  # test images per batch, per process


def check_classification_config(cfg: CN, *, detectron2_file: bool = False) -> None:
    """Refuse (one-line :class:`~gn_det.config.ConfigError`) the MODEL.RESNETS values the classifier's
    ResNet cannot build (depth, GroupNorm widths), before anything is built."""
    from gn_det.modeling.backbone.resnet import resnet_cfg_problems

    refuse_unsupported(resnet_cfg_problems(cfg))


@register_task("classification")
class ClassificationTask:
    """Image classification with a ResNet on ImageNet-layout folders; top-1 / top-5 accuracy."""

    name = "classification"
    add_config = staticmethod(add_classification_config)
    check_config = staticmethod(check_classification_config)

    def build_model(self, cfg) -> nn.Module:
        """:class:`~gn_det.modeling.classifier.ResNetClassifier`, randomly initialized (the engine
        loads MODEL.WEIGHTS through :meth:`weights_transform`)."""
        from gn_det.modeling.classifier import build_classifier

        return build_classifier(cfg)

    def build_train_loader(self, cfg, micro_batch_size: int, skip_batches: int = 0) -> Iterable:
        """Endless micro-batches of ``micro_batch_size`` samples for this rank from DATASETS.TRAIN;
        ``skip_batches`` (set on --resume) continues the sample stream exactly."""
        from gn_det.data.classification import build_classification_train_loader

        return build_classification_train_loader(cfg, micro_batch_size, skip_batches=skip_batches)

    def build_test_loader(self, cfg, dataset_name: str) -> Iterable:
        """One pass over ``dataset_name`` (this rank's share): resize + centre crop."""
        from gn_det.data.classification import build_classification_test_loader

        return build_classification_test_loader(cfg, dataset_name)

    def build_evaluator(self, cfg, dataset_name: str, output_dir: str) -> ClassificationEvaluator:
        """Top-1 / top-5 over the whole split; per-class accuracy json in
        ``output_dir/inference/<dataset_name>/``."""
        from gn_det.data.classification import dataset_classes
        from gn_det.evaluation.classification_evaluation import ClassificationEvaluator

        results_dir = os.path.join(output_dir, "inference", dataset_name) if output_dir else None
        classes = dataset_classes(cfg, dataset_name) or []
        return ClassificationEvaluator(classes, results_dir, distributed=True, dataset_name=dataset_name)

    def weight_parts(self, cfg) -> dict[str, str]:
        """MODEL.WEIGHTS must fill the ResNet (its trunk completely; see :meth:`weights_transform`)."""
        from gn_det.modeling.classifier import RESNET_PREFIX

        return {"backbone": RESNET_PREFIX}

    def weights_transform(self, cfg, model: nn.Module, raw, source: str) -> WeightsForModel:
        """A ResNet checkpoint (torchvision, converter output, detectron2, Caffe2) or a gn_det
        classification checkpoint into the classifier; see
        :func:`gn_det.modeling.classifier.classifier_weights_transform`."""
        from gn_det.modeling.classifier import classifier_weights_transform

        return classifier_weights_transform(cfg, model, raw, source)
