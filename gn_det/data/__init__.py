"""Data: datasets by name, loaders, transforms, samplers, synthetic sets."""

# Detection (COCO-format instance segmentation).
from gn_det.data.build import (  # noqa: F401
    build_detection_dataset,
    build_detection_test_loader,
    build_detection_train_loader,
    get_dataset_metadata,
)
from gn_det.data.catalog import (  # noqa: F401
    DatasetMetadata,
    list_datasets,
    register_coco_instances,
    register_datasets_from_config,
    register_synthetic_coco,
)
from gn_det.data.coco_dataset import CocoDetectionDataset, DatasetError  # noqa: F401
from gn_det.data.synthetic_coco import generate_synthetic_coco  # noqa: F401
