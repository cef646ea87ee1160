"""Data: datasets by name, loaders, transforms, samplers, synthetic sets.

The names are imported from their submodules on first use (:func:`~gn_det.utils.lazy.lazy_exports`),
so that a torch-free submodule (:mod:`~gn_det.data.video.list_formats`) serves command-line parsers
without torch.
"""

from gn_det.utils.lazy import lazy_exports

_EXPORTS = {
    ".build": ("build_detection_dataset", "build_detection_test_loader", "build_detection_train_loader",
               "get_dataset_metadata"),
    ".catalog": ("DatasetMetadata", "list_datasets", "register_coco_instances", "register_datasets_from_config",
                 "register_synthetic_coco"),
    ".coco_dataset": ("CocoDetectionDataset", "DatasetError"),
    ".synthetic_coco": ("generate_synthetic_coco",),
}
__all__ = [name for names in _EXPORTS.values() for name in names]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
