"""gn_det: fine-tune detection, segmentation and video models with GroupNorm and Weight
Standardization at 1-2 images per GPU, instead of frozen BatchNorm."""

__version__ = "0.1.0"
