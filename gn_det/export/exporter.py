"""Export a gn_det model to TorchScript or ONNX, with WS folded, and check it against the eager model.

:func:`export_model` takes a built model with its weights loaded and:

1. folds every Weight-Standardized conv into a plain conv holding the standardized weight
   (:func:`gn_det.layers.ws_conv.fold_ws`; exact at inference), on a copy: the eager model stays
   as it is, the reference the export is checked against;
2. traces the tensor-in, tensor-out wrapper (:mod:`gn_det.export.deployable`) on the first sample:
   ``torch.jit.trace`` for TorchScript (gn_det's ResNet and torchvision's Mask R-CNN with gn_det's
   heads do not compile with ``torch.jit.script``), and for ONNX torch's TorchScript-based exporter
   (``dynamo=False``, opset 17): the dynamo exporter stops at the detector's data-dependent
   shapes (the number of boxes left after NMS);
3. runs the written file (``torch.jit.load``, or onnxruntime) on every sample, the first and
   others of other sizes, and compares with the eager model's outputs; the file is moved into place
   only when every output is within tolerance.

FrozenBN layers are kept as they are (a per-channel scale and shift, one cheap op each): folding them
into the preceding conv changes the result by float rounding, which "exact" does not allow.
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gn_det.export.deployable import ExportSpec
from gn_det.layers.frozen_bn import FrozenBatchNorm
from gn_det.layers.ws_conv import fold_ws

__all__ = ["FORMATS", "SUFFIXES", "ExportError", "VerificationError", "Comparison", "ExportResult",
           "prepare_for_export", "export_model", "load_exported", "compare_outputs", "onnx_missing"]

FORMATS = ("torchscript", "onnx")
SUFFIXES = {"torchscript": ".torchscript.pt", "onnx": ".onnx"}
ONNX_OPSET = 17
_MASK_TOLERANCE = 1e-3  # fraction of mask pixels that may flip (a probability at 0.5 rounding apart)


class ExportError(RuntimeError):
    """A format that cannot export this model, or a missing package; the message names the alternative."""


class VerificationError(RuntimeError):
    """The exported program's outputs differ from the eager model's by more than the tolerance."""


@dataclass
class Comparison:
    """Exported vs eager outputs on one sample input."""

    input_shape: list[int]
    max_abs_diff: dict[str, float]  # per output; masks: the fraction of pixels that differ
    allowed: dict[str, float]
    shapes: dict[str, list[int]] = field(default_factory=dict)  # the eager outputs' shapes
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class ExportResult:
    """One written file and how it compared with the eager model."""

    format: str
    path: str
    comparisons: list[Comparison]

    @property
    def max_abs_diff(self) -> float:
        return max((v for c in self.comparisons for k, v in c.max_abs_diff.items() if k != "masks"), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "path": self.path, "max_abs_diff": self.max_abs_diff,
                "samples": [c.__dict__ for c in self.comparisons]}


def prepare_for_export(model: nn.Module, fold: bool = True) -> tuple[nn.Module, dict[str, int]]:
    """A copy of ``model`` in eval mode with WS folded into plain convs (unless ``fold`` is False).

    Returns:
        ``(copy, counts)`` with counts ``{"ws_convs_folded": n, "frozen_bn_kept": m}``.
    """
    prepared = copy.deepcopy(model).eval()
    folded = fold_ws(prepared) if fold else 0
    frozen = sum(isinstance(m, FrozenBatchNorm) for m in prepared.modules())
    return prepared, {"ws_convs_folded": folded, "frozen_bn_kept": frozen}


def onnx_missing(verify: bool = True) -> list[str]:
    """The packages ONNX export (and its verification) needs that are not installed."""
    import importlib.util

    wanted = ["onnx"] + (["onnxruntime"] if verify else [])
    return [name for name in wanted if importlib.util.find_spec(name) is None]


def _as_tuple(outputs: Any) -> tuple[torch.Tensor, ...]:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def compare_outputs(names: list[str], expected: tuple[torch.Tensor, ...], got: tuple[torch.Tensor, ...],
                    input_shape: list[int], atol: float, rtol: float) -> Comparison:
    """Compare outputs by name: shapes must match; values within ``atol + rtol * max|expected|``;
    integer outputs (labels) exactly; masks (uint8) in at most 0.1% of their pixels."""
    result = Comparison(list(input_shape), {}, {})
    for name, e, o in zip(names, expected, got):
        o = torch.as_tensor(o)
        result.shapes[name] = list(e.shape)
        if tuple(e.shape) != tuple(o.shape):
            result.problems.append(f"{name}: shape {tuple(o.shape)}, eager {tuple(e.shape)}")
            result.max_abs_diff[name] = float("inf")
            continue
        if name == "masks":
            diff = float((e.to(torch.int16) - o.to(torch.int16)).ne(0).float().mean()) if e.numel() else 0.0
            allowed = _MASK_TOLERANCE
        else:
            diff = float((e.double() - o.double()).abs().max()) if e.numel() else 0.0
            allowed = 0.0 if not e.is_floating_point() else atol + rtol * (float(e.abs().max()) if e.numel() else 0.0)
        result.max_abs_diff[name], result.allowed[name] = diff, allowed
        if diff > allowed:
            result.problems.append(f"{name}: {'fraction of pixels differing' if name == 'masks' else 'max abs diff'} "
                                   f"{diff:.3g} > {allowed:.3g}")
    return result


def load_exported(fmt: str, path: str):
    """A callable running an exported file on a tensor and returning a tuple of tensors."""
    if fmt == "torchscript":
        program = torch.jit.load(path, map_location="cpu")
        return lambda x: _as_tuple(program(x))
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: tuple(torch.from_numpy(a) for a in session.run(None, {name: x.numpy()}))


def _write(fmt: str, spec: ExportSpec, module: nn.Module, path: str) -> None:
    example = spec.samples[0]
    if fmt == "torchscript":
        try:
            torch.jit.save(torch.jit.trace(module, (example,), check_trace=False), path)
        except RuntimeError as e:  # e.g. a Python autograd.Function (unfolded WS) cannot be serialized
            raise ExportError(f"TorchScript export of the {spec.kind} failed ({_first_line(e)}); export with WS "
                              f"folded (without --keep-ws), or use --format onnx") from e
        return
    axes = {spec.input_name: spec.dynamic_axes}
    axes.update({n: {0: "detections"} for n in spec.output_names if spec.kind == "detector"})
    try:
        torch.onnx.export(module, (example,), path, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=[spec.input_name], output_names=spec.output_names, dynamic_axes=axes)
    except Exception as e:  # the exporter's errors have no common type
        raise ExportError(f"ONNX export of the {spec.kind} failed ({_first_line(e)}); use --format torchscript") from e


def _run(run, fmt: str, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    try:
        return run(x)
    except Exception as e:  # onnxruntime's and TorchScript's errors have no common type
        raise VerificationError(f"the {fmt} program fails on an input of shape {list(x.shape)} ({_first_line(e)})") from e


def _gn_mask_head(spec: ExportSpec) -> bool:
    """Whether an exported detector runs GroupNorm on its detections (zero of them on an empty image)."""
    mask_head = getattr(getattr(spec.module, "model", None), "roi_heads", None)
    mask_head = getattr(mask_head, "mask_head", None) if spec.kind == "detector" else None
    return mask_head is not None and any(isinstance(m, nn.GroupNorm) for m in mask_head.modules())


def _first_line(error: BaseException) -> str:
    """``Type: first non-empty line of the message`` (exporter messages run to pages)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def export_model(spec: ExportSpec, fmt: str, path: str, *, atol: float = 1e-4, rtol: float = 1e-4) -> ExportResult:
    """Write ``spec.module`` (already prepared, see :func:`prepare_for_export`) to ``path`` as
    ``fmt`` and check the written file against ``spec.eager`` on every sample.

    The file is written beside ``path`` under a temporary name and moved into place only when it
    passes, so a failed check leaves no file that looks usable.

    Raises:
        ExportError: the format cannot export this model, or a package it needs is missing.
        VerificationError: an output differs beyond tolerance (the message names it and the sample).
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose from {list(FORMATS)}")
    if fmt == "onnx" and _gn_mask_head(spec):
        raise ExportError("ONNX cannot hold this detector: its mask head has GroupNorm, which torch's ONNX exporter "
                          "writes as Reshape(0, groups, -1), and onnxruntime fails on every image with no detection; "
                          "use --format torchscript")
    if fmt == "onnx" and onnx_missing():
        raise ExportError(f"ONNX export needs {' and '.join(onnx_missing())} (pip install onnx onnxruntime); "
                          f"or use --format torchscript")
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        # The tracer warns about every Python value it records as a constant, and torch 2.14 marks
        # TorchScript and the TorchScript-based ONNX exporter deprecated; what matters is checked
        # below: the program run on an input of another size than the traced one.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _write(fmt, spec, spec.module, tmp)
            run = load_exported(fmt, tmp)
            comparisons = [compare_outputs(spec.output_names, spec.eager(x), _run(run, fmt, x), list(x.shape), atol,
                                           rtol) for x in spec.samples]
        bad = [c for c in comparisons if not c.ok]
        if bad:
            raise VerificationError(f"the {fmt} export differs from the eager model on an input of shape "
                                    f"{bad[0].input_shape}: {'; '.join(bad[0].problems)}; not written")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return ExportResult(fmt, path, comparisons)
