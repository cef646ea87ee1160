"""Building blocks: the norm factory, FrozenBN and Weight-Standardized convs."""

from .frozen_bn import FrozenBatchNorm
from .norm import NORM_NAMES, NormSpec, create_conv, create_norm, get_norm_layer, group_count, parse_norm
from .ws_conv import WS_MODES, WSConv2d, WSConv3d, fold_ws, standardize_weight

__all__ = ["FrozenBatchNorm", "NORM_NAMES", "NormSpec", "create_conv", "create_norm", "get_norm_layer",
           "group_count", "parse_norm", "WS_MODES", "WSConv2d", "WSConv3d", "fold_ws",
           "standardize_weight"]
