"""Read and write ResNet checkpoints in torchvision, gn_det, detectron2 and Detectron (Caffe2) formats.

Every reader returns a :class:`Checkpoint` whose ``state_dict`` uses torchvision's names (gn_det's
own ResNet uses them too), plus ``meta`` saying what the weights are:

=================  =========================================================================
meta key           meaning
=================  =========================================================================
format             always "gn_det" (the layout of ``meta`` itself)
source_format      "torchvision", "gn_det", "detectron2" or "caffe2"
norm               "BN", "FrozenBN" (BN folded into scale/bias), "GN", "GN+WS", ...
ws                 True if the convs feeding norms were trained Weight-Standardized
stride_in_1x1      True: a bottleneck's stride is on its 1x1 conv (Caffe2/MSRA, detectron2's
                   MSRA R-50.pkl); False: on the 3x3 conv (torchvision, FAIR GN models);
                   None: unknown (loading refuses until the caller states it)
stride_source      how ``stride_in_1x1`` was decided (file metadata, format convention, user)
converter_version  version of gn_det that wrote the file
=================  =========================================================================

Files on disk:

- torchvision: a plain ``state_dict`` in a ``.pth`` (stride on the 3x3 by convention; so a
  stride-on-1x1 model is refused rather than written as something torchvision would misread).
- gn_det: ``{"model": state_dict, "meta": meta}`` in a ``.pth``.
- detectron2: a ``.pkl`` holding ``{"model": {d2 name: numpy array}, "__author__": ...,
  "matching_heuristics": True}``; gn_det adds ``"gn_det_meta"`` (detectron2 ignores extra keys).
- Detectron / Caffe2 (read only): a ``.pkl`` with ``{"blobs": {blob name: array}}`` (detection
  models) or the blob dict itself (ImageNet models). ``*_momentum`` blobs (optimizer state) are
  dropped and listed. BN models have BN folded into ``_bn_s``/``_bn_b`` and no statistics: they
  are read as FrozenBN with ``running_mean = 0`` and ``running_var = 1 - eps`` (eps = 1e-5, the
  FrozenBN default), which makes ``x * s + b`` exact (``var = 1`` would scale every output by
  ``1/sqrt(1 + eps)``).

``.pth`` files load with ``weights_only=True`` and ``.pkl`` files through the restricted unpickler
(:mod:`gn_det.checkpoint.io`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from .io import CheckpointError, atomic_save, atomic_write_pickle, load_pickle, safe_torch_load
from .names import caffe2_norm_kind, convert_name, format_name, parse_name

__all__ = ["FORMATS", "OUTPUT_FORMATS", "Checkpoint", "detect_format", "read_checkpoint", "load_raw",
           "parse_checkpoint",
           "write_checkpoint", "check_output_format", "make_meta", "FOLDED_BN_EPS"]

FORMATS = ("torchvision", "gn_det", "detectron2", "caffe2")
OUTPUT_FORMATS = ("gn_det", "torchvision", "detectron2")
FOLDED_BN_EPS = 1e-5
_PICKLE_SUFFIXES = (".pkl", ".pickle")


@dataclass
class Checkpoint:
    """ResNet weights in torchvision names plus what is known about them.

    Attributes:
        state_dict: torchvision-named tensors.
        meta: see the module docstring.
        unmapped: source entries whose names are not ResNet parameters (kept under their original
            names; :func:`~gn_det.checkpoint.loading.load_into_model` lists them as unused).
        dropped: source keys deliberately not read, with the reason (e.g. Caffe2 momentum blobs).
        path: the file it came from, if any.
    """

    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]
    unmapped: dict[str, Any] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    path: str | None = None


def make_meta(source_format: str, norm: str, *, ws: bool = False, stride_in_1x1: bool | None,
              stride_source: str, **extra: Any) -> dict[str, Any]:
    """The ``meta`` dict stored with gn_det checkpoints (plain types only, for weights_only loading)."""
    meta = {"format": "gn_det", "source_format": source_format, "norm": norm, "ws": bool(ws),
            "stride_in_1x1": stride_in_1x1, "stride_source": stride_source,
            "converter_version": __version__}
    meta.update(extra)
    return meta


def load_raw(path: str | os.PathLike, source_format: str = "auto") -> Any:
    """Read a checkpoint file safely, without interpreting it: ``.pkl``/``.pickle`` (and Caffe2)
    through the restricted unpickler, anything else with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: missing, empty, corrupt or unsafe file (nothing in it is executed).
    """
    path = Path(path)
    if source_format in ("detectron2", "caffe2"):
        use_pickle = path.suffix.lower() in _PICKLE_SUFFIXES or source_format == "caffe2"
    elif source_format in ("torchvision", "gn_det"):
        use_pickle = False
    else:
        use_pickle = path.suffix.lower() in _PICKLE_SUFFIXES
    return load_pickle(path) if use_pickle else safe_torch_load(path)


_WRAPPERS = ("model", "state_dict")


def _unwrap(raw: dict, ckpt: Checkpoint, wrappers: tuple[str, ...] = _WRAPPERS,
            known: tuple[str, ...] = ()) -> dict:
    """The weights dict inside a wrapper such as ``{"model": ...}``, or ``raw`` itself.

    Other top-level entries (except the format's ``known`` ones) are listed as dropped.
    """
    for wrapper in wrappers:
        if isinstance(raw.get(wrapper), dict):
            for key in raw:
                if key != wrapper and key not in known:
                    ckpt.dropped[str(key)] = f"top-level entry beside {wrapper!r}"
            return raw[wrapper]
    return raw


def _is_array(v: Any) -> bool:
    return isinstance(v, (np.ndarray, torch.Tensor))


def _strip_ddp(name: str) -> str:
    # DistributedDataParallel saves keys as module.<name>.
    return name[len("module."):] if name.startswith("module.") else name


def _count_parsed(names, scheme: str) -> int:
    return sum(parse_name(n, scheme) is not None for n in names)


def detect_format(obj: Any, where: str = "checkpoint") -> str:
    """Tell which of :data:`FORMATS` a loaded checkpoint object is in.

    Raises:
        CheckpointError: naming ``where`` and the top-level keys when the layout is not recognized.
    """
    if isinstance(obj, dict):
        if isinstance(obj.get("meta"), dict) and obj["meta"].get("format") == "gn_det" and "model" in obj:
            return "gn_det"
        if "model" in obj and "__author__" in obj:
            return "detectron2"
        if isinstance(obj.get("blobs"), dict):
            return "caffe2"
        for wrapper in _WRAPPERS:  # training-script checkpoints: {"model"/"state_dict": ..., "epoch": ...}
            if isinstance(obj.get(wrapper), dict):
                return detect_format(obj[wrapper], where)
        names = [_strip_ddp(k) for k, v in obj.items() if isinstance(k, str) and _is_array(v)]
        if names:
            scores = {s: _count_parsed(names, s) for s in ("torchvision", "detectron2", "caffe2")}
            best = max(scores, key=scores.get)
            if scores[best] > 0:
                return best
    keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(f"cannot tell the format of {where}: top-level content {keys} is none of "
                          f"{FORMATS}; pass the format explicitly (--source-format)")


def _to_tensor(v: Any) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    return torch.from_numpy(np.ascontiguousarray(v))


def _rename(raw: dict[str, Any], scheme: str, ckpt: Checkpoint) -> None:
    """Map ``raw`` (scheme names) into ``ckpt.state_dict`` (torchvision names)."""
    for name, value in raw.items():
        parsed = parse_name(name, scheme) if isinstance(name, str) else None
        if not _is_array(value):
            ckpt.dropped[str(name)] = f"not an array ({type(value).__name__})"
            continue
        if parsed is None:
            ckpt.unmapped[name] = _to_tensor(value)
            continue
        target = format_name(parsed, "torchvision")
        if target in ckpt.state_dict:
            raise CheckpointError(f"{ckpt.path}: source keys collide on {target!r} "
                                  f"(second one: {name!r}); the file mixes naming schemes")
        ckpt.state_dict[target] = _to_tensor(value)


def _norm_names(state_dict: dict[str, torch.Tensor]) -> set[str]:
    """Module names (``layer1.0.bn1``) of the norm layers in a torchvision-named state dict."""
    out = set()
    for k in state_dict:
        p = parse_name(k, "torchvision")
        if p is not None and p.kind == "norm":
            out.add(k.rsplit(".", 1)[0])
    return out


def _has_running_stats(state_dict: dict[str, torch.Tensor]) -> bool:
    return any(k.endswith(".running_var") for k in state_dict)


def _add_folded_bn_stats(ckpt: Checkpoint) -> None:
    """Give folded-BN scale/bias layers the statistics that make FrozenBN reproduce them exactly."""
    for module in sorted(_norm_names(ckpt.state_dict)):
        weight = ckpt.state_dict.get(module + ".weight")
        if weight is None or module + ".running_var" in ckpt.state_dict:
            continue
        ckpt.state_dict[module + ".running_mean"] = torch.zeros_like(weight)
        ckpt.state_dict[module + ".running_var"] = torch.full_like(weight, 1.0 - FOLDED_BN_EPS)


def _read_caffe2(raw: dict, ckpt: Checkpoint, stride_in_1x1: bool | None) -> None:
    blobs = _unwrap(raw, ckpt, ("blobs",))
    kept = {}
    for name, value in blobs.items():
        if isinstance(name, str) and name.endswith("_momentum"):
            ckpt.dropped[name] = "optimizer momentum blob"
        else:
            kept[name] = value
    norm = caffe2_norm_kind([n for n in kept if isinstance(n, str)]) or "bn"
    _rename(kept, "caffe2", ckpt)
    if norm == "bn":
        _add_folded_bn_stats(ckpt)
    # MSRA's BN ImageNet models put the stride on the 1x1 conv; the GN paper's (FAIR) models on the 3x3.
    guess = norm == "bn"
    ckpt.meta = make_meta("caffe2", "FrozenBN" if norm == "bn" else "GN",
                          stride_in_1x1=guess if stride_in_1x1 is None else stride_in_1x1,
                          stride_source=("caffe2 convention: BN (MSRA) models stride on 1x1, GN (FAIR) "
                                         "models on 3x3" if stride_in_1x1 is None else "user"),
                          bn_folded=norm == "bn")


def _read_detectron2(raw: dict, ckpt: Checkpoint, stride_in_1x1: bool | None) -> None:
    if "model" in raw and not isinstance(raw["model"], dict):
        raise CheckpointError(f"{ckpt.path}: detectron2 checkpoint's 'model' is a "
                              f"{type(raw['model']).__name__}, expected a dict of arrays")
    model = _unwrap(raw, ckpt, ("model",), known=("__author__", "matching_heuristics", "gn_det_meta"))
    _rename(model, "detectron2", ckpt)
    saved = raw.get("gn_det_meta") if isinstance(raw.get("gn_det_meta"), dict) else None
    author = str(raw.get("__author__", ""))
    if saved is not None:
        ckpt.meta = dict(saved)
        ckpt.meta["source_format"] = "detectron2"
    else:
        folded = "MSRA" in author.upper() and not _has_running_stats(ckpt.state_dict)
        if folded:
            _add_folded_bn_stats(ckpt)
        norm = "FrozenBN" if folded else "BN" if _has_running_stats(ckpt.state_dict) else "GN"
        # torchvision-converted files stride on the 3x3, MSRA ones on the 1x1; others do not say.
        file_stride = False if author.lower() == "torchvision" else True if "MSRA" in author.upper() else None
        ckpt.meta = make_meta("detectron2", norm, stride_in_1x1=file_stride,
                              stride_source=f"__author__ {author!r}", bn_folded=folded)
    if stride_in_1x1 is not None:
        ckpt.meta.update(stride_in_1x1=stride_in_1x1, stride_source="user")


def _read_torchvision(raw: dict, ckpt: Checkpoint, stride_in_1x1: bool | None) -> None:
    for name, value in _unwrap(raw, ckpt).items():
        if not _is_array(value):
            ckpt.dropped[str(name)] = f"not a tensor ({type(value).__name__})"
            continue
        ckpt.state_dict[_strip_ddp(name)] = _to_tensor(value)
    norm = "BN" if _has_running_stats(ckpt.state_dict) else "GN"
    ckpt.meta = make_meta("torchvision", norm,
                          stride_in_1x1=False if stride_in_1x1 is None else stride_in_1x1,
                          stride_source="torchvision convention (3x3)" if stride_in_1x1 is None else "user")


def _read_gn_det(raw: dict, ckpt: Checkpoint, stride_in_1x1: bool | None) -> None:
    for name, value in raw["model"].items():
        ckpt.state_dict[name] = _to_tensor(value)
    ckpt.meta = dict(raw["meta"])
    if stride_in_1x1 is not None:
        ckpt.meta.update(stride_in_1x1=stride_in_1x1, stride_source="user")


_READERS = {"caffe2": _read_caffe2, "detectron2": _read_detectron2, "torchvision": _read_torchvision,
            "gn_det": _read_gn_det}


def read_checkpoint(path: str | os.PathLike, source_format: str = "auto", *,
                    stride_in_1x1: bool | None = None) -> Checkpoint:
    """Read a ResNet checkpoint into torchvision names.

    Args:
        path: a ``.pth`` (torchvision, gn_det) or ``.pkl`` (detectron2, Caffe2) file.
        source_format: one of :data:`FORMATS`, or "auto" to detect it from the content.
        stride_in_1x1: overrides the stride placement the file says or its format implies.

    Raises:
        CheckpointError: unreadable, unsafe or unrecognized file (the message names it).
    """
    if source_format != "auto" and source_format not in FORMATS:
        raise CheckpointError(f"unknown source format {source_format!r}; choose auto or one of {FORMATS}")
    return parse_checkpoint(load_raw(path, source_format), path, source_format, stride_in_1x1=stride_in_1x1)


def parse_checkpoint(raw: Any, path: str | os.PathLike | None = None, source_format: str = "auto", *,
                     stride_in_1x1: bool | None = None) -> Checkpoint:
    """Interpret an already-read checkpoint object (see :func:`load_raw`) as ResNet weights in
    torchvision names; :func:`read_checkpoint` without reading the file again.

    Raises:
        CheckpointError: the content is none of :data:`FORMATS`, or holds no ResNet parameter.
    """
    p = Path(path) if path is not None else Path("<checkpoint>")
    if source_format != "auto" and source_format not in FORMATS:
        raise CheckpointError(f"unknown source format {source_format!r}; choose auto or one of {FORMATS}")
    detected = detect_format(raw, str(p))
    fmt = detected if source_format == "auto" else source_format
    if fmt != detected:
        raise CheckpointError(f"{p} looks like a {detected} checkpoint, not {fmt}; "
                              f"use --source-format {detected} or auto")
    ckpt = Checkpoint(state_dict={}, meta={}, path=str(p))
    _READERS[fmt](raw, ckpt, stride_in_1x1)
    if not ckpt.state_dict:
        raise CheckpointError(f"{p}: no ResNet parameters found in this {fmt} checkpoint "
                              f"(first keys: {list(ckpt.unmapped)[:5]})")
    return ckpt


def check_output_format(output_format: str, *, ws: bool, stride_in_1x1: bool) -> None:
    """Refuse an output format that cannot hold these weights faithfully (before any slow work).

    Raises:
        CheckpointError: an unknown format, or a torchvision ``.pth`` of WS or stride-on-1x1
            weights (torchvision ResNets have plain convs and the stride on the 3x3, so such a file
            would load silently wrong).
    """
    if output_format not in OUTPUT_FORMATS:
        raise CheckpointError(f"unknown output format {output_format!r}; choose one of {OUTPUT_FORMATS}")
    if output_format != "torchvision":
        return
    if ws:
        raise CheckpointError("torchvision ResNets have no WS convs, so GN+WS weights in a torchvision "
                              ".pth would load silently wrong; use --output-format gn_det")
    if stride_in_1x1:
        raise CheckpointError("these weights put the stride on the 1x1 conv, but torchvision ResNets "
                              "put it on the 3x3: a torchvision .pth would load silently wrong; "
                              "use --output-format gn_det or detectron2")


def _plain_state_dict(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in ckpt.state_dict.items()}


def write_checkpoint(ckpt: Checkpoint, path: str | os.PathLike, output_format: str = "gn_det") -> list[str]:
    """Write ``ckpt`` atomically in ``output_format`` (gn_det, torchvision or detectron2).

    Returns:
        The torchvision keys that the format cannot hold and were not written (for the report).

    Raises:
        CheckpointError: torchvision output of stride-on-1x1 weights (torchvision models put the
            stride on the 3x3 conv, so such a file would load silently wrong), or an unknown format.
    """
    check_output_format(output_format, ws=bool(ckpt.meta.get("ws")),
                        stride_in_1x1=bool(ckpt.meta.get("stride_in_1x1")))
    state = _plain_state_dict(ckpt)
    if output_format == "gn_det":
        atomic_save({"model": state, "meta": dict(ckpt.meta)}, path)
        return []
    if output_format == "torchvision":
        atomic_save(state, path)
        return []
    model, skipped = {}, []
    for name, value in state.items():
        # detectron2 has no num_batches_tracked (its FrozenBN/BN never count steps)
        target = None if name.endswith("num_batches_tracked") else convert_name(name, "torchvision",
                                                                                 "detectron2")
        if target is None:
            skipped.append(name)
            continue
        model[target] = value.numpy()
    atomic_write_pickle({"model": model, "__author__": "gn_det", "matching_heuristics": True,
                         "gn_det_meta": dict(ckpt.meta)}, path)
    return skipped
