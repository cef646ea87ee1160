"""torchvision ResNets for the converter: build one with any norm and stride placement, and tell the
architecture from a state dict.

The converter loads a checkpoint into the model it came from (a BN ResNet), then does surgery on it,
so it needs that model built exactly: the right depth, and the stride of each downsampling
bottleneck on the conv the weights were trained with (torchvision: the 3x3; Caffe2/MSRA: the 1x1).
"""

from __future__ import annotations

import re

import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck

from ..layers.norm import NormSpec, get_norm_layer, parse_norm
from .surgery import convert_model

__all__ = ["RESNET_ARCHS", "infer_resnet_arch", "set_stride_in_1x1", "build_torchvision_resnet"]

# arch -> (block type, blocks per stage)
RESNET_ARCHS: dict[str, tuple[str, tuple[int, ...]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")


def infer_resnet_arch(state_dict) -> str:
    """The torchvision ResNet name ("resnet50" ...) whose layout a torchvision-named state dict has.

    Raises:
        ValueError: the keys match none of :data:`RESNET_ARCHS` (the message gives the layout found).
    """
    blocks = [0, 0, 0, 0]
    for key in state_dict:
        if m := _BLOCK_KEY.match(key):
            stage, block = int(m.group(1)) - 1, int(m.group(2))
            blocks[stage] = max(blocks[stage], block + 1)
    kind = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    for arch, layout in RESNET_ARCHS.items():
        if layout == (kind, tuple(blocks)):
            return arch
    raise ValueError(f"the checkpoint is not a torchvision-layout ResNet: found {kind} blocks "
                     f"{tuple(blocks)} per stage; pass --arch or check the file")


def set_stride_in_1x1(model: nn.Module, stride_in_1x1: bool) -> int:
    """Move each downsampling bottleneck's stride onto its 1x1 (True) or 3x3 (False) conv, in place.

    Basic blocks have no choice (their first conv is the 3x3) and are left as they are.
    Returns the number of bottlenecks whose stride is now placed as asked.
    """
    moved = 0
    for block in model.modules():
        if not isinstance(block, Bottleneck):
            continue
        stride = max(block.conv1.stride[0], block.conv2.stride[0])
        if stride == 1:
            continue
        block.conv1.stride = (stride, stride) if stride_in_1x1 else (1, 1)
        block.conv2.stride = (1, 1) if stride_in_1x1 else (stride, stride)
        moved += 1
    return moved


def build_torchvision_resnet(arch: str, norm: str | NormSpec = "BN", *, stride_in_1x1: bool = False,
                             num_classes: int | None = 1000) -> nn.Module:
    """A randomly initialized torchvision ResNet with norm layers from the gn_det factory.

    Args:
        arch: a key of :data:`RESNET_ARCHS`.
        norm: "BN", "FrozenBN", "GN", "GN+WS", ... (a "+WS" norm gets WS convs in front of every norm).
        stride_in_1x1: put the downsampling stride on the bottleneck's 1x1 conv (Caffe2/MSRA style)
            instead of the 3x3 (torchvision style).
        num_classes: classifier outputs; None for no classifier (``fc`` is an ``nn.Identity`` and the
            model returns pooled features).
    """
    if arch not in RESNET_ARCHS:
        raise ValueError(f"unknown ResNet arch {arch!r}; choose one of {sorted(RESNET_ARCHS)}")
    spec = parse_norm(norm)
    builder = getattr(torchvision.models, arch)
    model = builder(weights=None, num_classes=num_classes or 1000, norm_layer=get_norm_layer(spec))
    if num_classes is None:
        model.fc = nn.Identity()
    set_stride_in_1x1(model, stride_in_1x1)
    if spec.ws:
        convert_model(model, spec)
    return model
