"""Export for deployment: gn_det's models as TorchScript or ONNX programs on plain tensors, with WS
folded into plain convs and the written file checked against the eager model (``gn-det-export``).

- :mod:`~gn_det.export.deployable`: the tensor-in, tensor-out wrappers and their input convention.
- :mod:`~gn_det.export.exporter`: fold, trace, write, verify.
"""

from .deployable import DeployableClassifier, DeployableDetector, DeployableVideo, ExportSpec, export_spec
from .exporter import (FORMATS, SUFFIXES, Comparison, ExportError, ExportResult, VerificationError, compare_outputs,
                       export_model, load_exported, onnx_missing, prepare_for_export)

__all__ = ["DeployableClassifier", "DeployableDetector", "DeployableVideo", "ExportSpec", "export_spec", "FORMATS",
           "SUFFIXES", "Comparison", "ExportError", "ExportResult", "VerificationError", "compare_outputs",
           "export_model", "load_exported", "onnx_missing", "prepare_for_export"]
