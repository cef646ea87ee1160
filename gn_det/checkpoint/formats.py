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
input              the images the weights expect: {"format": "RGB"/"BGR", "pixel_mean", "pixel_std"}
                   (0-255, that channel order); see :mod:`gn_det.checkpoint.input_convention`
converter_version  version of gn_det that wrote the file
=================  =========================================================================

Files on disk:

- torchvision: a plain ``state_dict`` in a ``.pth`` (stride on the 3x3 by convention; so a
  stride-on-1x1 model is refused rather than written as something torchvision would misread).
- gn_det: ``{"model": state_dict, "meta": meta}`` in a ``.pth``.
- detectron2: a ``.pkl`` holding ``{"model": {d2 name: numpy array}, "__author__": ...,
  "matching_heuristics": True}``; gn_det adds ``"gn_det_meta"`` (detectron2 ignores extra keys).
  Read: 0-d arrays (``num_batches_tracked`` as detectron2's ``tools/convert-torchvision-to-d2.py``
  writes it) stay 0-d, and that script's classifier name ``stem.fc.*`` is read as ``fc.*``.
- Detectron / Caffe2: a ``.pkl`` with ``{"blobs": {blob name: array}}`` (detection
  models) or the blob dict itself (ImageNet models). Written as ``{"blobs": ..., "gn_det_meta": ...}``
  with BN folded into ``_bn_s``/``_bn_b`` (AffineChannel, as Detectron's own BN models; eps
  :data:`FOLDED_BN_EPS`) and GN as ``_gn_s``/``_gn_b``. ``*_momentum`` blobs (optimizer state) are
  dropped and listed. BN models have BN folded into ``_bn_s``/``_bn_b`` and no statistics: they
  are read as FrozenBN with ``running_mean = 0`` and ``running_var = 1 - eps`` (eps = 1e-5, the
  FrozenBN default), which makes ``x * s + b`` exact (``var = 1`` would scale every output by
  ``1/sqrt(1 + eps)``).

Weight Standardization in formats without WS convs (detectron2, Caffe2): GN+WS weights are written
with the standardization folded in (:func:`fold_ws_weights`): each conv's weight is replaced by its
standardized weight, so a plain conv computes exactly what the WS conv computed (inference is
unchanged). The file's meta then says ``ws: False, ws_folded: True``. detectron2 fine-tunes such
weights as plain convs (no standardization in training); for WS training keep the gn_det format.
A torchvision ``.pth`` of WS weights is refused instead (torchvision ResNets carry no meta to say so).

``.pth`` files load with ``weights_only=True`` and ``.pkl`` files through the restricted unpickler
(:mod:`gn_det.checkpoint.io`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..layers.ws_conv import WSConv2d, WSConv3d, standardize_weight
from .format_names import FORMATS, OUTPUT_FORMATS, WS_FOLDING_FORMATS  # torch-free, for command-line choices
from .input_convention import source_input_convention
from .io import CheckpointError, atomic_save, atomic_write_pickle, load_pickle, safe_torch_load
from .names import caffe2_norm_kind, convert_name, format_name, parse_name

__all__ = ["FORMATS", "OUTPUT_FORMATS", "WS_FOLDING_FORMATS", "Checkpoint", "detect_format", "read_checkpoint",
           "load_raw", "parse_checkpoint", "write_checkpoint", "check_output_format", "make_meta",
           "fold_ws_weights", "ws_weight_keys", "FOLDED_BN_EPS"]

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
              stride_source: str, ws_mode: str = "authors", **extra: Any) -> dict[str, Any]:
    """The ``meta`` dict stored with gn_det checkpoints (plain types only, for weights_only loading).

    ``ws_mode`` (the WS convention, :mod:`gn_det.layers.ws_conv`) is recorded for WS weights, so
    folding them for a format without WS convs standardizes them as they were trained.
    """
    meta = {"format": "gn_det", "source_format": source_format, "norm": norm, "ws": bool(ws),
            "stride_in_1x1": stride_in_1x1, "stride_source": stride_source,
            "converter_version": __version__}
    if ws:
        meta["ws_mode"] = ws_mode
    # The images the weights expect (INPUT.FORMAT, PIXEL_MEAN/STD): given, or fixed by the source format.
    convention = extra.pop("input", None) or source_input_convention(source_format)
    if convention:
        meta["input"] = dict(convention)
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
    # not np.ascontiguousarray: it turns 0-d arrays (num_batches_tracked) into shape (1,)
    arr = np.asarray(v)
    if not arr.flags.c_contiguous or not arr.flags.writeable:
        arr = arr.copy(order="C")
    return torch.from_numpy(arr)


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
    saved = raw.get("gn_det_meta") if isinstance(raw.get("blobs"), dict) else None
    if isinstance(saved, dict):  # written by gn_det: its meta says what the blobs are
        ckpt.dropped.pop("gn_det_meta", None)
        ckpt.meta = dict(saved, source_format="caffe2")
        if stride_in_1x1 is not None:
            ckpt.meta.update(stride_in_1x1=stride_in_1x1, stride_source="user")
        return
    # MSRA's BN ImageNet models put the stride on the 1x1 conv; the GN paper's (FAIR) models on the 3x3.
    guess = norm == "bn"
    ckpt.meta = make_meta("caffe2", "FrozenBN" if norm == "bn" else "GN",
                          stride_in_1x1=guess if stride_in_1x1 is None else stride_in_1x1,
                          stride_source=("caffe2 convention: BN (MSRA) models stride on 1x1, GN (FAIR) "
                                         "models on 3x3" if stride_in_1x1 is None else "user"),
                          bn_folded=norm == "bn")


# detectron2's tools/convert-torchvision-to-d2.py prefixes every non-"layer" key with "stem.", so
# torchvision's classifier arrives as stem.fc.*; detectron2's own ResNet names it linear.*.
_D2_ALIASES = {"stem.fc.weight": "linear.weight", "stem.fc.bias": "linear.bias"}


def _read_detectron2(raw: dict, ckpt: Checkpoint, stride_in_1x1: bool | None) -> None:
    if "model" in raw and not isinstance(raw["model"], dict):
        raise CheckpointError(f"{ckpt.path}: detectron2 checkpoint's 'model' is a "
                              f"{type(raw['model']).__name__}, expected a dict of arrays")
    model = _unwrap(raw, ckpt, ("model",), known=("__author__", "matching_heuristics", "gn_det_meta"))
    if any(k in model and _D2_ALIASES[k] in model for k in _D2_ALIASES):
        raise CheckpointError(f"{ckpt.path}: holds both stem.fc.* and linear.* classifier weights; "
                              f"remove one of them")
    _rename({_D2_ALIASES.get(k, k): v for k, v in model.items()}, "detectron2", ckpt)
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

    WS weights going to :data:`WS_FOLDING_FORMATS` are fine: :func:`write_checkpoint` folds them.

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
                              ".pth would load silently wrong; use --output-format gn_det (keeps WS), or "
                              "detectron2 / caffe2 (WS folded into the conv weights, exact at inference); for "
                              "torchvision, fold WS in a second step: gn-det-convert GN_WS_FILE.pth --norm gn "
                              "--output-format torchvision")
    if stride_in_1x1:
        raise CheckpointError("these weights put the stride on the 1x1 conv, but torchvision ResNets "
                              "put it on the 3x3: a torchvision .pth would load silently wrong; "
                              "use --output-format gn_det or detectron2")


def fold_ws_weights(state_dict: Mapping[str, torch.Tensor], weight_keys: Iterable[str],
                    ws_mode: str = "authors") -> dict[str, torch.Tensor]:
    """Fold Weight Standardization into conv weights, for formats that have no WS conv.

    A WS conv computes ``conv(x, standardize(W))``; storing ``standardize(W)`` lets a plain conv
    compute the same output (exact at inference). Training the folded weights as plain convs is
    plain-conv training, not WS training.

    Args:
        state_dict: any state dict (e.g. a whole detector's); it is not modified.
        weight_keys: the keys of the WS convs' raw weights, e.g. from :func:`ws_weight_keys`.
        ws_mode: the WS convention the weights were trained with (``meta["ws_mode"]``).

    Returns:
        A new dict: the same entries, those weights standardized (same dtype and shape).

    Raises:
        CheckpointError: a key that is missing or not a conv weight (fewer than 3 dims).
    """
    out = dict(state_dict)
    for key in weight_keys:
        weight = out.get(key)
        if weight is None or weight.dim() < 3:
            what = "missing" if weight is None else f"of shape {tuple(weight.shape)}, not a conv weight"
            raise CheckpointError(f"cannot fold WS into {key!r}: {what}")
        with torch.no_grad():
            out[key] = standardize_weight(weight.float(), ws_mode).to(weight.dtype)
    return out


def ws_weight_keys(model: nn.Module, prefix: str = "") -> list[str]:
    """State-dict keys of the raw weights of every WS conv in ``model`` (for :func:`fold_ws_weights`)."""
    return [f"{prefix}{name}.weight" if name else f"{prefix}weight" for name, m in model.named_modules()
            if isinstance(m, (WSConv2d, WSConv3d))]


def _resnet_conv_weight_keys(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    # In a ResNet every conv feeds a norm, so a WS ResNet standardizes all of them (not the fc).
    out = []
    for key in state_dict:
        parsed = parse_name(key, "torchvision")
        if parsed is not None and parsed.kind == "conv" and parsed.param == "weight":
            out.append(key)
    return out


def _folded(ckpt: Checkpoint) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict and meta to write in a format without WS convs (WS folded if the weights have it)."""
    state, meta = _plain_state_dict(ckpt), dict(ckpt.meta)
    if meta.get("ws"):
        keys = _resnet_conv_weight_keys(state)
        state = fold_ws_weights(state, keys, meta.get("ws_mode", "authors"))
        meta.update(ws=False, ws_folded=True, ws_folded_convs=len(keys))
    return state, meta


def _plain_state_dict(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in ckpt.state_dict.items()}


def _caffe2_blobs(state: dict[str, torch.Tensor], meta: dict[str, Any]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Detectron blobs of a torchvision-named ResNet; BN is folded into scale/bias (AffineChannel)."""
    norm = _norm_kind(meta)
    blobs, skipped = {}, []
    for name, value in state.items():
        parsed = parse_name(name, "torchvision")
        if parsed is None or (parsed.kind == "norm" and parsed.param not in ("weight", "bias")):
            skipped.append(name)  # running statistics are folded below; num_batches_tracked has no blob
            continue
        if parsed.kind == "norm" and norm == "bn":
            value = _fold_bn(state, name.rsplit(".", 1)[0], parsed.param)
        blobs[format_name(parsed, "caffe2", caffe2_norm=norm)] = value.numpy()
    return blobs, skipped


def _fold_bn(state: dict[str, torch.Tensor], module: str, param: str) -> torch.Tensor:
    """BN's inference affine: scale ``w / sqrt(var + eps)``, bias ``b - mean * scale``."""
    keys = [f"{module}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"BN {module!r} without {', '.join(missing)} cannot be folded into Caffe2 "
                              f"scale/bias; write it as gn_det or detectron2")
    weight, bias, mean, var = (state[k] for k in keys)
    scale = weight.double() / (var.double() + FOLDED_BN_EPS).sqrt()
    out = scale if param == "weight" else bias.double() - mean.double() * scale
    return out.to(weight.dtype)


def _norm_kind(meta: dict[str, Any]) -> str:
    name = str(meta.get("norm", "")).upper().split("+")[0]
    if name in ("GN", "LN", "IN"):
        return "gn"
    if name in ("BN", "FROZENBN", "SYNCBN"):
        return "bn"
    raise CheckpointError(f"cannot write norm {meta.get('norm')!r} as Caffe2 blobs (it has _bn_ and _gn_ "
                          f"blobs only)")


def write_checkpoint(ckpt: Checkpoint, path: str | os.PathLike, output_format: str = "gn_det") -> list[str]:
    """Write ``ckpt`` atomically in ``output_format`` (one of :data:`OUTPUT_FORMATS`).

    GN+WS weights going to detectron2 or caffe2 are written with WS folded into the conv weights
    (:func:`fold_ws_weights`; the written meta says ``ws_folded``): exact at inference, trained as
    plain convs by those frameworks. Caffe2 output folds BN into ``_bn_s``/``_bn_b`` (eps
    :data:`FOLDED_BN_EPS`), which gn_det reads back as FrozenBN.

    Returns:
        The torchvision keys that the format cannot hold and were not written (for the report).

    Raises:
        CheckpointError: torchvision output of WS or stride-on-1x1 weights (torchvision ResNets have
            neither, so such a file would load silently wrong), or an unknown format.
    """
    check_output_format(output_format, ws=bool(ckpt.meta.get("ws")),
                        stride_in_1x1=bool(ckpt.meta.get("stride_in_1x1")))
    if output_format == "gn_det":
        atomic_save({"model": _plain_state_dict(ckpt), "meta": dict(ckpt.meta)}, path)
        return []
    if output_format == "torchvision":
        atomic_save(_plain_state_dict(ckpt), path)
        return []
    state, meta = _folded(ckpt)
    if output_format == "caffe2":
        blobs, skipped = _caffe2_blobs(state, meta)
        if _norm_kind(meta) == "bn":
            meta.update(norm="FrozenBN", bn_folded=True)
        atomic_write_pickle({"blobs": blobs, "gn_det_meta": meta}, path)
        return skipped
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
                         "gn_det_meta": meta}, path)
    return skipped
