"""Detection data loaders: what the detection task hands to the engine.

Batches are lists of dicts (one per image), the format the Mask R-CNN model consumes::

    {"image": float32 Tensor[3, H, W], RGB, 0-255, resized (not normalized),
     "image_id": int,          # COCO image id
     "height": int, "width": int,   # ORIGINAL size: predictions are rescaled to it
     "file_name": str,         # image path (for visualization and messages)
     "instances": {"boxes": float32 Tensor[N, 4], xyxy in resized pixels,
                   "labels": int64 Tensor[N], contiguous 1..K (0 is background),
                   "masks": uint8 Tensor[N, H, W] (only when MODEL.MASK_ON)}}

Training batches hold no crowd instance; test batches hold every non-crowd instance.
"""

from __future__ import annotations

import logging


# get_dataset_metadata is re-exported: the evaluator and the model builder look datasets up here.
from gn_det.config import ConfigError
from gn_det.data.catalog import get_dataset_files, get_dataset_metadata, register_datasets_from_config
from gn_det.data.coco_dataset import CocoDetectionDataset
from gn_det.data.common import ConcatDatasets, SkipBadSamples, build_test_loader, build_train_loader
from gn_det.data.transforms import build_detection_transform

__all__ = ["build_detection_train_loader", "build_detection_test_loader", "get_dataset_metadata",
           "build_detection_dataset"]

logger = logging.getLogger(__name__)


def build_detection_dataset(cfg, dataset_name: str, is_train: bool) -> CocoDetectionDataset:
    """The dataset ``dataset_name`` with the train or test transform of ``cfg``."""
    register_datasets_from_config(cfg)
    json_file, image_root = get_dataset_files(dataset_name)
    return CocoDetectionDataset(
        json_file,
        image_root,
        filter_empty=is_train and cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        skip_bad=cfg.DATALOADER.SKIP_BAD_SAMPLES,
        transform=build_detection_transform(cfg, is_train),
        with_masks=cfg.MODEL.MASK_ON,
        name=dataset_name,
    )


def build_detection_train_loader(cfg, micro_batch_size: int, *, skip_batches: int = 0) -> SkipBadSamples:
    """Endless loader of this rank's training micro-batches (lists of ``micro_batch_size`` dicts).

    Reads ``cfg.DATASETS.TRAIN`` (concatenated; all must share one category set), shuffles
    with ``cfg.SEED`` (a shared random seed when < 0), shards across distributed ranks,
    groups by aspect ratio if ``cfg.DATALOADER.ASPECT_RATIO_GROUPING``, and loads with
    ``cfg.DATALOADER.NUM_WORKERS`` workers (0: in this process).

    Args:
        cfg: the config.
        micro_batch_size: images per batch on this rank.
        skip_batches: skip this many micro-batches first; the stream is a pure function of
            the seed, so resuming at iteration ``i`` with ``skip_batches = i * ACCUM_STEPS``
            continues the data exactly where it stopped.

    A bad image raises ``DatasetError`` naming the file, or with
    ``cfg.DATALOADER.SKIP_BAD_SAMPLES`` is dropped from its batch, counted and logged.
    """
    names = list(cfg.DATASETS.TRAIN)
    if not names:
        raise ValueError("DATASETS.TRAIN is empty: name at least one dataset to train on")
    datasets = [build_detection_dataset(cfg, n, is_train=True) for n in names]
    for n, d in zip(names[1:], datasets[1:]):
        if d.label_to_category_id != datasets[0].label_to_category_id:
            raise ValueError(f"DATASETS.TRAIN: {n!r} has other categories than {names[0]!r}; "
                             f"datasets trained together must share one category list")
    _check_num_classes(cfg, names[0], len(datasets[0].class_names))
    for n, d in zip(names, datasets):
        if len(d) == 0:
            raise ValueError(f"training dataset {n!r} has no usable image ({d.stats.summary()})")
    dataset = datasets[0] if len(datasets) == 1 else ConcatDatasets(datasets)
    groups = [g for d in datasets for g in d.aspect_ratio_groups()]
    return build_train_loader(dataset, micro_batch_size, seed=cfg.SEED, num_workers=cfg.DATALOADER.NUM_WORKERS,
                              group_ids=groups if cfg.DATALOADER.ASPECT_RATIO_GROUPING else None,
                              skip_batches=skip_batches)


def build_detection_test_loader(cfg, dataset_name: str) -> SkipBadSamples:
    """This rank's shard of ``dataset_name``, one image per batch, test transform.

    Every image is kept (also those without annotations), each on exactly one rank, in
    order; the evaluator gathers the shards.
    """
    dataset = build_detection_dataset(cfg, dataset_name, is_train=False)
    _check_num_classes(cfg, dataset_name, len(dataset.class_names))
    return build_test_loader(dataset, seed=cfg.SEED, num_workers=cfg.DATALOADER.NUM_WORKERS)


def _check_num_classes(cfg, name: str, num_classes: int) -> None:
    # Labels beyond NUM_CLASSES would crash deep in the loss; fewer labels only waste outputs.
    configured = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if configured < num_classes:
        raise ConfigError(
            f"dataset {name!r} has {num_classes} categories but MODEL.ROI_HEADS.NUM_CLASSES is "
            f"{configured}; set MODEL.ROI_HEADS.NUM_CLASSES {num_classes}"
        )
    if configured > num_classes:
        logger.warning("MODEL.ROI_HEADS.NUM_CLASSES is %d but dataset %r has %d categories",
                       configured, name, num_classes)

