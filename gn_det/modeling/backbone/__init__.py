"""Backbones: one ResNet/ResNeXt for images and video, and the ResNet-FPN for detection.

The names are imported from their submodules on first use (:func:`~gn_det.utils.lazy.lazy_exports`):
the torch-free :mod:`~gn_det.modeling.backbone.resnet_specs` serves command-line parsers without torch.
"""

from ...utils.lazy import lazy_exports

_EXPORTS = {
    ".fpn": ("ResNetFPN", "build_resnet_fpn_backbone"),
    ".resnet": ("ResNet", "build_resnet", "build_resnet_from_cfg"),
}
__all__ = [name for names in _EXPORTS.values() for name in names]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
