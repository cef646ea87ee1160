"""BN -> GN / GN+WS conversion: module surgery, its report, and calibration (loaded lazily)."""

from .report import ConversionReport, LeftAlone, ReplacedNorm
from .surgery import BATCH_NORM_TYPES, ConvNormEdges, convert_model, find_conv_norm_edges
from .resnet_arch import RESNET_ARCHS, build_resnet_for_arch, infer_resnet_arch, set_stride_in_1x1

__all__ = ["ConversionReport", "LeftAlone", "ReplacedNorm", "BATCH_NORM_TYPES", "ConvNormEdges", "convert_model",
           "find_conv_norm_edges", "RESNET_ARCHS", "build_resnet_for_arch", "infer_resnet_arch",
           "set_stride_in_1x1", "calibrate"]


def __getattr__(name: str):
    # calibrate pulls in tqdm and more; import it only when asked for.
    if name == "calibrate":
        from .calibrate import calibrate
        return calibrate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
