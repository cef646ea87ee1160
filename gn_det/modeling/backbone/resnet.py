"""One ResNet / ResNeXt for images (dim=2) and video (dim=3), with any norm from the factory.

Module and parameter names are exactly torchvision's (``conv1``, ``bn1``, ``layer1`` ..
``layer4``, ``<i>.conv1/bn1/conv2/bn2/conv3/bn3``, ``downsample.0/.1``, optional ``fc``),
so torchvision checkpoints and the converter's outputs load key for key; the ``bnK``
names hold whatever norm was asked for (GN, FrozenBN, ...).

For video (dim=3) every kernel gains a leading temporal size, strides stay spatial
(1, s, s), and the temporal kernel of each block's first conv is chosen per block
(``temporal_kernels``), as I3D needs: e.g. 3 -> (3, 1, 1) vs 1 -> (1, 1, 1) for the
bottleneck's first 1x1 conv, and ``stem_temporal_kernel=5`` for a 5x7x7 stem.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from gn_det.layers.conv_norm import is_norm
from gn_det.layers.frozen_bn import FrozenBatchNorm
from gn_det.layers.norm import NormSpec, create_conv, create_norm, parse_norm
from gn_det.modeling.cfg_norm import norm_from_cfg

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "RESNET_SPECS", "build_resnet", "build_resnet_from_cfg",
           "freeze_module", "STAGE_NAMES"]

# depth -> (block class name, blocks per stage)
RESNET_SPECS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
# freeze_at counts these from the input: 1 = stem, 2 = stem + res2 (layer1), ...
STAGE_NAMES = ("stem", "layer1", "layer2", "layer3", "layer4")


def _size(dim: int, spatial: int, temporal: int = 1):
    """A kernel size or stride: ``spatial`` for 2D, ``(temporal, spatial, spatial)`` for 3D."""
    return spatial if dim == 2 else (temporal, spatial, spatial)


def _conv(in_channels: int, out_channels: int, kernel_size, stride=1, *, norm: NormSpec, dim: int,
          groups: int = 1) -> nn.Module:
    """A conv from the factory (WS with "+WS"); it has a bias only when no norm follows it."""
    return create_conv(in_channels, out_channels, kernel_size, stride, groups=groups, bias=norm.name == "",
                       dim=dim, norm=norm)


class _Block(nn.Module):
    """Shared by both residual blocks: the shortcut and the residual sum."""

    expansion = 1

    def _make_shortcut(self, in_channels: int, out_channels: int, stride: int, norm: NormSpec,
                       dim: int, layer_name: str) -> nn.Module | None:
        if stride == 1 and in_channels == out_channels:
            return None
        return nn.Sequential(
            _conv(in_channels, out_channels, _size(dim, 1), _size(dim, stride), norm=norm, dim=dim),
            create_norm(norm, out_channels, dim, layer_name=f"{layer_name}.downsample.1"))

    def last_norm(self) -> nn.Module:
        """The norm whose gamma starts at 0 with ``zero_init_residual``."""
        raise NotImplementedError

    def _residual(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class BasicBlock(_Block):
    """Two 3x3 convs (ResNet-18/34). ``temporal_kernel`` is the first conv's temporal size (3D)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *, norm: NormSpec, dim: int = 2,
                 groups: int = 1, width_per_group: int = 64, stride_in_1x1: bool = False,
                 temporal_kernel: int = 1, layer_name: str = "") -> None:
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise ValueError("BasicBlock (ResNet-18/34) supports only groups=1 and width_per_group=64; "
                             "use depth >= 50 for ResNeXt")
        self.conv1 = _conv(in_channels, planes, _size(dim, 3, temporal_kernel), _size(dim, stride),
                           norm=norm, dim=dim)
        self.bn1 = create_norm(norm, planes, dim, layer_name=f"{layer_name}.bn1")
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv(planes, planes, _size(dim, 3), norm=norm, dim=dim)
        self.bn2 = create_norm(norm, planes, dim, layer_name=f"{layer_name}.bn2")
        self.downsample = self._make_shortcut(in_channels, planes, stride, norm, dim, layer_name)

    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self._residual(x, out)


class Bottleneck(_Block):
    """1x1 -> 3x3 -> 1x1 (ResNet-50+, ResNeXt via ``groups``/``width_per_group``).

    The stride sits on the 3x3 conv (torchvision, detectron2's GN models) unless
    ``stride_in_1x1`` (MSRA / Caffe2 checkpoints). ``temporal_kernel`` is the temporal size of
    the first 1x1 conv in 3D (I3D's (3, 1, 1) vs (1, 1, 1)).
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *, norm: NormSpec, dim: int = 2,
                 groups: int = 1, width_per_group: int = 64, stride_in_1x1: bool = False,
                 temporal_kernel: int = 1, layer_name: str = "") -> None:
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        out_channels = planes * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _conv(in_channels, width, _size(dim, 1, temporal_kernel), _size(dim, stride_1x1),
                           norm=norm, dim=dim)
        self.bn1 = create_norm(norm, width, dim, layer_name=f"{layer_name}.bn1")
        self.conv2 = _conv(width, width, _size(dim, 3), _size(dim, stride_3x3), norm=norm, dim=dim,
                           groups=groups)
        self.bn2 = create_norm(norm, width, dim, layer_name=f"{layer_name}.bn2")
        self.conv3 = _conv(width, out_channels, _size(dim, 1), norm=norm, dim=dim)
        self.bn3 = create_norm(norm, out_channels, dim, layer_name=f"{layer_name}.bn3")
        self.relu = nn.ReLU(inplace=True)
        self.downsample = self._make_shortcut(in_channels, out_channels, stride, norm, dim, layer_name)

    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self._residual(x, out)


_BLOCKS: dict[str, type[_Block]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _per_block_temporal(temporal_kernels, layers: Sequence[int], dim: int) -> list[list[int]]:
    """Expand ``temporal_kernels`` (None, or per stage an int or a per-block list) and check it."""
    if temporal_kernels is None:
        return [[1] * n for n in layers]
    if len(temporal_kernels) != len(layers):
        raise ValueError(f"temporal_kernels needs one entry per stage ({len(layers)}), "
                         f"got {len(temporal_kernels)}")
    out = []
    for stage, (tk, n) in enumerate(zip(temporal_kernels, layers), start=1):
        ks = [tk] * n if isinstance(tk, int) else list(tk)
        if len(ks) != n:
            raise ValueError(f"temporal_kernels for layer{stage} lists {len(ks)} sizes for {n} blocks")
        if dim == 2 and any(k != 1 for k in ks):
            raise ValueError("temporal kernel sizes other than 1 need dim=3 (video)")
        out.append(ks)
    return out


class ResNet(nn.Module):
    """ResNet / ResNeXt body (and optional classifier) with torchvision's module names.

    Args:
        block: "basic" (ResNet-18/34) or "bottleneck" (ResNet-50+).
        layers: blocks per stage, e.g. (3, 4, 6, 3).
        norm: norm name or spec for every norm layer ("GN", "GN+WS", "FrozenBN", "BN", ...).
        dim: 2 for images (N, C, H, W), 3 for video (N, C, T, H, W).
        groups, width_per_group: ResNeXt cardinality and width (1 and 64 for ResNet).
        stride_in_1x1: put the stride of a bottleneck on its first 1x1 conv (MSRA/Caffe2).
        zero_init_residual: start the last norm gamma of every block at 0 (identity blocks),
            as the GN paper does. Norms without a learnable gamma (FrozenBN) are left at 1.
        num_classes: if set, add ``avgpool`` and ``fc`` (a classifier); otherwise the body ends
            at ``layer4``.
        stem_temporal_kernel: temporal size of the stem conv in 3D (5 gives I3D's 5x7x7).
        temporal_kernels: 3D only: per stage, an int or a list with one temporal kernel size per
            block, for each block's first conv. None: all 1.
    """

    def __init__(self, block: str, layers: Sequence[int], norm: str | NormSpec = "BN", *, dim: int = 2,
                 groups: int = 1, width_per_group: int = 64, stride_in_1x1: bool = False,
                 zero_init_residual: bool = True, num_classes: int | None = None,
                 stem_temporal_kernel: int = 1, temporal_kernels=None) -> None:
        super().__init__()
        if block not in _BLOCKS:
            raise ValueError(f"Unknown ResNet block {block!r}; choose one of {sorted(_BLOCKS)}")
        if dim not in (2, 3):
            raise ValueError(f"ResNet supports dim 2 (images) or 3 (video), got {dim}")
        if dim == 2 and stem_temporal_kernel != 1:
            raise ValueError("stem_temporal_kernel other than 1 needs dim=3 (video)")
        spec = parse_norm(norm)
        block_cls = _BLOCKS[block]
        temporal = _per_block_temporal(temporal_kernels, layers, dim)
        self.dim = dim
        self.norm = spec
        self.stride_in_1x1 = stride_in_1x1

        self.conv1 = _conv(3, 64, _size(dim, 7, stem_temporal_kernel), _size(dim, 2), norm=spec, dim=dim)
        self.bn1 = create_norm(spec, 64, dim, layer_name="bn1")
        self.relu = nn.ReLU(inplace=True)
        pool = nn.MaxPool2d if dim == 2 else nn.MaxPool3d
        self.maxpool = pool(_size(dim, 3), _size(dim, 2), _size(dim, 1, 0))

        in_channels = 64
        self.stage_channels: dict[str, int] = {}
        for i, (num_blocks, tks) in enumerate(zip(layers, temporal)):
            name, planes = f"layer{i + 1}", 64 * 2 ** i
            blocks = []
            for j, tk in enumerate(tks):
                blocks.append(block_cls(in_channels, planes, (1 if i == 0 else 2) if j == 0 else 1, norm=spec,
                                        dim=dim, groups=groups, width_per_group=width_per_group,
                                        stride_in_1x1=stride_in_1x1, temporal_kernel=tk,
                                        layer_name=f"{name}.{j}"))
                in_channels = planes * block_cls.expansion
            setattr(self, name, nn.Sequential(*blocks))
            self.stage_channels[name] = in_channels
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(1) if dim == 2 else nn.AdaptiveAvgPool3d(1)
            self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif is_norm(m) and isinstance(getattr(m, "weight", None), nn.Parameter):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, _Block):
                    gamma = getattr(m.last_norm(), "weight", None)
                    if isinstance(gamma, nn.Parameter):
                        nn.init.zeros_(gamma)

    def stage_modules(self, stage: str) -> list[nn.Module]:
        """The modules of one of :data:`STAGE_NAMES` ("stem" is conv1 + bn1)."""
        return [self.conv1, self.bn1] if stage == "stem" else [getattr(self, stage)]

    def freeze(self, freeze_at: int) -> "ResNet":
        """Freeze the first ``freeze_at`` stages, as detectron2's MODEL.BACKBONE.FREEZE_AT.

        0: nothing; 1: the stem; 2: stem + layer1 (res2); ... 5: everything. Frozen parameters
        get ``requires_grad=False`` and frozen BN/SyncBN layers become FrozenBatchNorm (same
        state-dict keys), so their statistics never update, in train mode or not. GN/LN/IN keep
        no statistics, so freezing their parameters is all they need.
        """
        if not 0 <= freeze_at <= len(STAGE_NAMES):
            raise ValueError(f"freeze_at must be in 0..{len(STAGE_NAMES)} (0: train all, 1: stem, "
                             f"2: stem + res2, ...), got {freeze_at}")
        for stage in STAGE_NAMES[:freeze_at]:
            for m in self.stage_modules(stage):
                for p in m.parameters():
                    p.requires_grad_(False)
            name = "bn1" if stage == "stem" else stage  # the stem's only norm is bn1
            setattr(self, name, freeze_module(getattr(self, name)))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if hasattr(self, "fc"):
            x = self.fc(torch.flatten(self.avgpool(x), 1))
        return x


def freeze_module(module: nn.Module) -> nn.Module:
    """Turn every BatchNorm/SyncBatchNorm in ``module`` into FrozenBatchNorm, in place.

    Returns the module, or a new FrozenBatchNorm if ``module`` itself is a BatchNorm.
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return FrozenBatchNorm.from_batchnorm(module)
    for name, child in module.named_children():
        new = freeze_module(child)
        if new is not child:
            setattr(module, name, new)
    return module


def build_resnet(depth: int, norm: str | NormSpec = "BN", dim: int = 2, *, groups: int = 1,
                 width_per_group: int = 64, stride_in_1x1: bool = False, zero_init_residual: bool = True,
                 freeze_at: int = 0, num_classes: int | None = None, stem_temporal_kernel: int = 1,
                 temporal_kernels=None) -> ResNet:
    """Constructs a ResNet / ResNeXt of the given depth with any norm from the norm factory.

    Args:
        depth (int): 18, 34, 50, 101 or 152.
        norm (str or NormSpec): "FrozenBN", "BN", "SyncBN", "GN", "LN", "IN" or "", with an
            optional "+WS" suffix for Weight-Standardized convs. Default: "BN".
        dim (int): 2 for images, 3 for video (see the module docstring). Default: 2.
        groups (int): ResNeXt cardinality (32 for ResNeXt-50 32x4d). Default: 1.
        width_per_group (int): ResNeXt width (4 for 32x4d). Default: 64.
        stride_in_1x1 (bool): stride on the bottleneck's 1x1 conv (MSRA/Caffe2 weights) instead
            of the 3x3 conv (torchvision, detectron2 GN weights). Default: False.
        zero_init_residual (bool): last norm gamma of every block starts at 0. Default: True.
        freeze_at (int): stages to freeze, as MODEL.BACKBONE.FREEZE_AT (0: none). Default: 0.
        num_classes (int, optional): add ``avgpool`` + ``fc`` for classification. Default: None.
        stem_temporal_kernel (int): temporal size of the stem conv (dim=3 only). Default: 1.
        temporal_kernels: per-stage temporal kernel sizes of each block's first conv (dim=3
            only); see :class:`ResNet`. Default: None (all 1).

    Example::

        >>> model = build_resnet(50, "GN+WS", freeze_at=2)
        >>> model.load_state_dict(converted_state_dict)  # torchvision key names
    """
    if depth not in RESNET_SPECS:
        raise ValueError(f"Unsupported ResNet depth {depth}; choose one of {sorted(RESNET_SPECS)}")
    block, layers = RESNET_SPECS[depth]
    model = ResNet(block, layers, norm, dim=dim, groups=groups, width_per_group=width_per_group,
                   stride_in_1x1=stride_in_1x1, zero_init_residual=zero_init_residual, num_classes=num_classes,
                   stem_temporal_kernel=stem_temporal_kernel, temporal_kernels=temporal_kernels)
    return model.freeze(freeze_at)


def build_resnet_from_cfg(cfg, dim: int = 2, **kwargs) -> ResNet:
    """Build the ResNet body named by MODEL.RESNETS.* and MODEL.BACKBONE.FREEZE_AT.

    Extra keyword arguments (e.g. ``temporal_kernels`` for video) go to :func:`build_resnet`.
    """
    r = cfg.MODEL.RESNETS
    return build_resnet(int(r.DEPTH), norm_from_cfg(cfg, r.NORM, "MODEL.RESNETS.NORM"), dim,
                        groups=int(r.NUM_GROUPS), width_per_group=int(r.WIDTH_PER_GROUP),
                        stride_in_1x1=bool(r.STRIDE_IN_1X1), zero_init_residual=bool(r.ZERO_INIT_RESIDUAL),
                        freeze_at=int(cfg.MODEL.BACKBONE.FREEZE_AT), **kwargs)
