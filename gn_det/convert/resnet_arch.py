"""ResNet architectures for the converter: tell one from a state dict, build it, place its strides.

The converter loads a checkpoint into the model it came from (a BN ResNet), then does surgery on it,
so it needs that model built exactly: the right depth, and the stride of each downsampling
bottleneck on the conv the weights were trained with (torchvision: the 3x3; Caffe2/MSRA: the 1x1).
It builds gn_det's own ResNet (:func:`gn_det.modeling.backbone.resnet.build_resnet`), which has
torchvision's module names, so the converted weights are checked against the very model the
detector and video tasks use.
"""

from __future__ import annotations

import re

from torch import nn

from ..layers.norm import NormSpec
from ..modeling.backbone.resnet import ResNet, build_resnet
from ..modeling.backbone.resnet_specs import RESNET_ARCHS, RESNET_SPECS  # torch-free, for command-line choices

__all__ = ["RESNET_ARCHS", "infer_resnet_arch", "set_stride_in_1x1", "build_resnet_for_arch"]

_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")


def infer_resnet_arch(state_dict) -> str:
    """The ResNet name ("resnet50" ...) whose layout a torchvision-named state dict has.

    Raises:
        ValueError: the keys match none of :data:`RESNET_ARCHS` (the message gives the layout found).
    """
    blocks = [0, 0, 0, 0]
    for key in state_dict:
        if m := _BLOCK_KEY.match(key):
            stage, block = int(m.group(1)) - 1, int(m.group(2))
            blocks[stage] = max(blocks[stage], block + 1)
    kind = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    for arch, depth in RESNET_ARCHS.items():
        if RESNET_SPECS[depth] == (kind, tuple(blocks)):
            return arch
    raise ValueError(f"the checkpoint is not a torchvision-layout ResNet: found {kind} blocks "
                     f"{tuple(blocks)} per stage; pass --arch or check the file")


def set_stride_in_1x1(model: nn.Module, stride_in_1x1: bool) -> int:
    """Move each downsampling bottleneck's spatial stride onto its 1x1 (True) or 3x3 (False) conv, in place.

    Works on any bottleneck with ``conv1`` (1x1), ``conv2`` (3x3) and ``conv3`` (gn_det's and
    torchvision's), 2D or 3D. Only the spatial (last two) stride entries move; in 3D each conv
    keeps its own temporal stride, so a (1, 2, 2) stride stays (1, 2, 2) and is never turned into
    (2, 2, 2). Basic blocks have no choice (their first conv is the 3x3) and are left alone.
    Returns the number of bottlenecks whose stride is now placed as asked.
    """
    moved = 0
    for block in model.modules():
        if not all(isinstance(getattr(block, n, None), nn.modules.conv._ConvNd) for n in ("conv1", "conv2", "conv3")):
            continue
        s1, s2 = tuple(block.conv1.stride), tuple(block.conv2.stride)
        stride = max(s1[-1], s2[-1])  # ResNet strides are square: the last entry is the spatial stride
        if stride == 1:
            continue
        spatial, ones = (stride, stride), (1, 1)
        block.conv1.stride = s1[:-2] + (spatial if stride_in_1x1 else ones)
        block.conv2.stride = s2[:-2] + (ones if stride_in_1x1 else spatial)
        moved += 1
    return moved


def build_resnet_for_arch(arch: str, norm: str | NormSpec = "BN", *, stride_in_1x1: bool = False,
                          num_classes: int | None = 1000) -> ResNet:
    """A randomly initialized gn_det ResNet named like torchvision's builders, for loading a checkpoint.

    Args:
        arch: a key of :data:`RESNET_ARCHS` ("resnet18" ... "resnet152").
        norm: "BN", "FrozenBN", "GN", "GN+WS", ... (a "+WS" norm gets WS convs in front of every norm).
        stride_in_1x1: put the downsampling stride on the bottleneck's 1x1 conv (Caffe2/MSRA style)
            instead of the 3x3 (torchvision style).
        num_classes: classifier outputs (``avgpool`` + ``fc``); None for the body only.
    """
    if arch not in RESNET_ARCHS:
        raise ValueError(f"unknown ResNet arch {arch!r}; choose one of {sorted(RESNET_ARCHS)}")
    # Weights are loaded over the init, so skip the zero-gamma init that would hide a missing key.
    return build_resnet(RESNET_ARCHS[arch], norm, stride_in_1x1=stride_in_1x1, num_classes=num_classes,
                        zero_init_residual=False)
