"""Checkpoints: safe loading, atomic saving, ResNet name mapping and the torchvision / gn_det /
detectron2 / Detectron (Caffe2) formats."""

from .formats import (FORMATS, Checkpoint, check_output_format, detect_format, make_meta, read_checkpoint,
                      write_checkpoint)
from .io import (CheckpointError, RestrictedUnpickler, atomic_save, atomic_write_pickle, atomic_write_text,
                 load_pickle, safe_torch_load)
from .loading import LoadReport, load_into_model
from .names import ParamName, convert_name, format_name, parse_name

__all__ = ["FORMATS", "Checkpoint", "check_output_format", "detect_format", "make_meta", "read_checkpoint", "write_checkpoint",
           "CheckpointError", "RestrictedUnpickler", "atomic_save", "atomic_write_pickle", "atomic_write_text",
           "load_pickle", "safe_torch_load", "LoadReport", "load_into_model", "ParamName", "convert_name",
           "format_name", "parse_name"]
