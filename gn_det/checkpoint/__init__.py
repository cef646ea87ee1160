"""Checkpoints: safe loading, atomic saving, ResNet name mapping and the torchvision / gn_det /
detectron2 / Detectron (Caffe2) formats.

The names are imported from their submodules on first use (:func:`~gn_det.utils.lazy.lazy_exports`):
the torch-free :mod:`~gn_det.checkpoint.format_names` serves command-line parsers without torch.
"""

from ..utils.lazy import lazy_exports

_EXPORTS = {
    ".format_names": ("FORMATS",),
    ".formats": ("Checkpoint", "check_output_format", "detect_format", "make_meta", "read_checkpoint",
                 "write_checkpoint"),
    ".io": ("CheckpointError", "RestrictedUnpickler", "atomic_save", "atomic_write_pickle", "atomic_write_text",
            "load_pickle", "safe_torch_load"),
    ".loading": ("LoadReport", "load_into_model"),
    ".names": ("ParamName", "convert_name", "format_name", "parse_name"),
}
__all__ = [name for names in _EXPORTS.values() for name in names]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
