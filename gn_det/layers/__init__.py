"""Building blocks: the norm factory, FrozenBN and Weight-Standardized convs.

The names are imported from their submodules on first use (:func:`~gn_det.utils.lazy.lazy_exports`):
the torch-free :mod:`~gn_det.layers.norm_names` serves command-line parsers without torch.
"""

from ..utils.lazy import lazy_exports

_EXPORTS = {
    ".frozen_bn": ("FrozenBatchNorm",),
    ".norm_names": ("NORM_NAMES", "GROUP_POLICIES"),
    ".norm": ("NormSpec", "create_conv", "create_norm", "get_norm_layer", "group_count", "parse_norm"),
    ".ws_conv": ("WS_MODES", "WSConv2d", "WSConv3d", "fold_ws", "standardize_weight"),
}
__all__ = [name for names in _EXPORTS.values() for name in names]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
