"""Parameter names of a ResNet in three naming schemes, and the mapping between them.

gn_det's own ResNet uses torchvision's names, so torchvision is the hub every mapping goes
through. One parameter, three spellings:

=====================================  ==================================  ==========================
torchvision (and gn_det)               detectron2                          Detectron / Caffe2 blob
=====================================  ==================================  ==========================
conv1.weight                           stem.conv1.weight                   conv1_w
bn1.weight / .bias                     stem.conv1.norm.weight / .bias      res_conv1_bn_s / _b (BN),
                                                                           conv1_gn_s / _b (GN)
bn1.running_mean / .running_var        stem.conv1.norm.running_mean/var    res_conv1_bn_rm / _riv
layer1.0.conv1.weight                  res2.0.conv1.weight                 res2_0_branch2a_w
layer1.0.bn2.weight                    res2.0.conv2.norm.weight            res2_0_branch2b_bn_s
layer1.0.downsample.0.weight           res2.0.shortcut.weight              res2_0_branch1_w
layer1.0.downsample.1.bias             res2.0.shortcut.norm.bias           res2_0_branch1_bn_b
fc.weight / fc.bias                    linear.weight / linear.bias         pred_w / pred_b
=====================================  ==================================  ==========================

``layerN`` is detectron2's and Caffe2's stage ``res(N+1)``; convK is branch2a/b/c; the shortcut is
Caffe2's branch1. Caffe2 has no ``num_batches_tracked`` (it maps to nothing). The mapping is a pure
function of the name: parse into a :class:`ParamName`, format in the other scheme.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SCHEMES", "ParamName", "parse_name", "format_name", "convert_name", "caffe2_norm_kind"]

SCHEMES = ("torchvision", "detectron2", "caffe2")
_C2_BRANCH = {1: "branch2a", 2: "branch2b", 3: "branch2c", 0: "branch1"}
_C2_BRANCH_INV = {v: k for k, v in _C2_BRANCH.items()}
_C2_NORM_SUFFIX = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
_C2_NORM_SUFFIX_INV = {v: k for k, v in _C2_NORM_SUFFIX.items()}
_C2_CONV_SUFFIX = {"weight": "w", "bias": "b"}
_C2_CONV_SUFFIX_INV = {v: k for k, v in _C2_CONV_SUFFIX.items()}
_NORM_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class ParamName:
    """A scheme-independent ResNet parameter name.

    Attributes:
        part: "stem", "block" or "head" (the classifier).
        kind: "conv", "norm" or "fc".
        param: "weight", "bias", "running_mean", "running_var" or "num_batches_tracked".
        stage: torchvision stage 1..4 (``layerN``; Caffe2/detectron2 ``res(N+1)``); 0 outside blocks.
        block: block index inside the stage; 0 outside blocks.
        index: conv index 1..3 inside a block (convK / bnK); 0 is the shortcut (downsample).
    """

    part: str
    kind: str
    param: str
    stage: int = 0
    block: int = 0
    index: int = 0


_TV_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.(conv|bn)([1-3])\.(\w+)$")
_TV_DOWN = re.compile(r"^layer([1-4])\.(\d+)\.downsample\.([01])\.(\w+)$")
_TV_STEM = re.compile(r"^(conv1|bn1|fc)\.(\w+)$")
_D2_BLOCK = re.compile(r"^res([2-5])\.(\d+)\.(conv[1-3]|shortcut)(\.norm)?\.(\w+)$")
_D2_STEM = re.compile(r"^stem\.conv1(\.norm)?\.(\w+)$")
_D2_HEAD = re.compile(r"^linear\.(weight|bias)$")
_C2_BLOCK = re.compile(r"^res([2-5])_(\d+)_(branch2[abc]|branch1)(?:_(bn|gn))?_(w|b|s|rm|riv)$")
_C2_STEM = re.compile(r"^(?:res_conv1_(bn)|conv1_(gn)|conv1)_(w|b|s|rm|riv)$")
_C2_HEAD = re.compile(r"^pred_(w|b)$")


def _param_allowed(is_norm: bool, param: str) -> bool:
    allowed = _NORM_PARAMS if is_norm else ("weight", "bias")
    return param in allowed


def _parse_torchvision(name: str) -> ParamName | None:
    if m := _TV_BLOCK.match(name):
        stage, block, what, k, param = m.groups()
        kind = "norm" if what == "bn" else "conv"
        if not _param_allowed(kind == "norm", param):
            return None
        return ParamName("block", kind, param, int(stage), int(block), int(k))
    if m := _TV_DOWN.match(name):
        stage, block, which, param = m.groups()
        kind = "norm" if which == "1" else "conv"
        if not _param_allowed(kind == "norm", param):
            return None
        return ParamName("block", kind, param, int(stage), int(block), 0)
    if m := _TV_STEM.match(name):
        module, param = m.groups()
        if module == "fc":
            return ParamName("head", "fc", param) if param in ("weight", "bias") else None
        kind = "norm" if module == "bn1" else "conv"
        return ParamName("stem", kind, param) if _param_allowed(kind == "norm", param) else None
    return None


def _parse_detectron2(name: str) -> ParamName | None:
    if m := _D2_BLOCK.match(name):
        res, block, conv, norm, param = m.groups()
        kind = "norm" if norm else "conv"
        if not _param_allowed(bool(norm), param):
            return None
        index = 0 if conv == "shortcut" else int(conv[-1])
        return ParamName("block", kind, param, int(res) - 1, int(block), index)
    if m := _D2_STEM.match(name):
        norm, param = m.groups()
        kind = "norm" if norm else "conv"
        return ParamName("stem", kind, param) if _param_allowed(bool(norm), param) else None
    if m := _D2_HEAD.match(name):
        return ParamName("head", "fc", m.group(1))
    return None


def _parse_caffe2(name: str) -> ParamName | None:
    if m := _C2_BLOCK.match(name):
        res, block, branch, norm, suffix = m.groups()
        table = _C2_NORM_SUFFIX_INV if norm else _C2_CONV_SUFFIX_INV
        if suffix not in table:
            return None
        return ParamName("block", "norm" if norm else "conv", table[suffix], int(res) - 1, int(block),
                         _C2_BRANCH_INV[branch])
    if m := _C2_STEM.match(name):
        bn, gn, suffix = m.groups()
        norm = bool(bn or gn)
        table = _C2_NORM_SUFFIX_INV if norm else _C2_CONV_SUFFIX_INV
        if suffix not in table:
            return None
        return ParamName("stem", "norm" if norm else "conv", table[suffix])
    if m := _C2_HEAD.match(name):
        return ParamName("head", "fc", _C2_CONV_SUFFIX_INV[m.group(1)])
    return None


_PARSERS = {"torchvision": _parse_torchvision, "detectron2": _parse_detectron2, "caffe2": _parse_caffe2}


def parse_name(name: str, scheme: str) -> ParamName | None:
    """Parse a ResNet parameter name written in ``scheme``; None if it is not a ResNet name."""
    try:
        return _PARSERS[scheme](name)
    except KeyError:
        raise ValueError(f"unknown naming scheme {scheme!r}; choose one of {SCHEMES}") from None


def format_name(p: ParamName, scheme: str, *, caffe2_norm: str = "bn") -> str | None:
    """Spell ``p`` in ``scheme``; None when the scheme has no such parameter.

    Args:
        caffe2_norm: "bn" or "gn": Caffe2 spells BN and GN parameters differently
            (``res2_0_branch2a_bn_s`` vs ``res2_0_branch2a_gn_s``; stem ``res_conv1_bn_s`` vs
            ``conv1_gn_s``).
    """
    if scheme == "torchvision":
        if p.part == "head":
            return f"fc.{p.param}"
        if p.part == "stem":
            return f"{'bn1' if p.kind == 'norm' else 'conv1'}.{p.param}"
        if p.index == 0:
            return f"layer{p.stage}.{p.block}.downsample.{1 if p.kind == 'norm' else 0}.{p.param}"
        return f"layer{p.stage}.{p.block}.{'bn' if p.kind == 'norm' else 'conv'}{p.index}.{p.param}"
    if scheme == "detectron2":
        norm = ".norm" if p.kind == "norm" else ""
        if p.part == "head":
            return f"linear.{p.param}"
        if p.part == "stem":
            return f"stem.conv1{norm}.{p.param}"
        conv = "shortcut" if p.index == 0 else f"conv{p.index}"
        return f"res{p.stage + 1}.{p.block}.{conv}{norm}.{p.param}"
    if scheme == "caffe2":
        if caffe2_norm not in ("bn", "gn"):
            raise ValueError(f"caffe2_norm must be 'bn' or 'gn', got {caffe2_norm!r}")
        table = _C2_NORM_SUFFIX if p.kind == "norm" else _C2_CONV_SUFFIX
        if p.param not in table:
            return None  # e.g. num_batches_tracked, or running stats of a GN layer
        suffix = table[p.param]
        if p.kind == "norm" and caffe2_norm == "gn" and p.param.startswith("running"):
            return None
        if p.part == "head":
            return f"pred_{suffix}"
        if p.part == "stem":
            if p.kind == "conv":
                return f"conv1_{suffix}"
            return f"res_conv1_bn_{suffix}" if caffe2_norm == "bn" else f"conv1_gn_{suffix}"
        prefix = f"res{p.stage + 1}_{p.block}_{_C2_BRANCH[p.index]}"
        return f"{prefix}_{caffe2_norm}_{suffix}" if p.kind == "norm" else f"{prefix}_{suffix}"
    raise ValueError(f"unknown naming scheme {scheme!r}; choose one of {SCHEMES}")


def convert_name(name: str, src: str, dst: str, *, caffe2_norm: str = "bn") -> str | None:
    """Rename one parameter from scheme ``src`` to ``dst``; None if it maps to nothing."""
    parsed = parse_name(name, src)
    return None if parsed is None else format_name(parsed, dst, caffe2_norm=caffe2_norm)


def caffe2_norm_kind(names) -> str | None:
    """"bn" or "gn" from a collection of Caffe2 blob names (None if they hold no norm blobs)."""
    has_gn = any(re.search(r"_gn_[sb]$", n) for n in names)
    has_bn = any(re.search(r"_bn_[sb]$", n) for n in names)
    if has_gn and has_bn:
        raise ValueError("Caffe2 blobs mix _bn_ and _gn_ norm parameters; cannot tell the model's norm")
    return "gn" if has_gn else "bn" if has_bn else None
