"""One ResNet / ResNeXt for images (dim=2) and video (dim=3), with any norm from the factory.

Module and parameter names are exactly torchvision's (``conv1``, ``bn1``, ``layer1`` ..
``layer4``, ``<i>.conv1/bn1/conv2/bn2/conv3/bn3``, ``downsample.0/.1``, optional ``fc``),
so torchvision checkpoints and the converter's outputs load key for key; the ``bnK``
names hold whatever norm was asked for (GN, FrozenBN, ...).

Named outputs (``out_features``) use detectron2's stage names, mapped onto the torchvision modules:

=========  ==================================  ==============  ===================
name       modules                             spatial stride  channels (R18 / R50)
=========  ==================================  ==============  ===================
"stem"     conv1, bn1, relu, maxpool           4               64 / 64
"res2"     layer1                              4               64 / 256
"res3"     layer2                              8               128 / 512
"res4"     layer3                              16              256 / 1024
"res5"     layer4                              32              512 / 2048
=========  ==================================  ==============  ===================

With ``out_features`` the forward returns ``{name: tensor}`` (like detectron2's ``out_features``
and timm's ``features_only``), and stages after the last requested one are not built, as in
detectron2 (and as torchvision's ``IntermediateLayerGetter`` drops them).

For video (dim=3) every kernel gains a leading temporal size and the temporal kernel of each
block's first conv is chosen per block (``temporal_kernels``), as I3D needs: e.g. 3 -> (3, 1, 1)
vs 1 -> (1, 1, 1) for the bottleneck's first 1x1 conv. Temporal padding is ``k // 2``
(:func:`~gn_det.layers.norm.create_conv`), so odd temporal kernels keep T at temporal stride 1.
The stem is PySlowFast's I3D stem: conv (``stem_temporal_kernel``)x7x7 with stride (1, 2, 2)
(``stem_temporal_kernel=5`` gives 5x7x7, padding (2, 3, 3)), then a max pool with kernel
(1, 3, 3), stride (1, 2, 2), padding (0, 1, 1). Time is downsampled only where asked:

* ``temporal_strides``: one temporal stride per stage, placed on the stage's first block, on the
  conv that carries the spatial stride (the 3x3, or the 1x1 with ``stride_in_1x1``; a basic
  block's first conv) and on its shortcut conv: stride (t, s, s).
* ``temporal_pool``: a parameter-free ``MaxPool3d`` with kernel = stride = (t, 1, 1) after res2
  (``layer1``), PySlowFast I3D's ``pool1`` ([2, 1, 1]). It is registered as ``temporal_pool``
  only when t > 1 and holds no state, so the state-dict keys stay torchvision's. The "res2"
  output is taken before it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from gn_det.layers.conv_norm import is_norm
from gn_det.layers.frozen_bn import FrozenBatchNorm
from gn_det.layers.norm import NormSpec, create_conv, create_norm, parse_norm
from gn_det.config import ConfigError, refuse_unsupported
from gn_det.modeling.cfg_norm import group_norm_width_problems, norm_from_cfg
from gn_det.modeling.backbone.resnet_specs import RESNET_SPECS  # torch-free, for command-line help

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "RESNET_SPECS", "build_resnet", "build_resnet_from_cfg",
           "resnet_cfg_problems", "freeze_module", "STAGE_NAMES", "OUT_FEATURE_NAMES"]

# freeze_at counts these from the input: 1 = stem, 2 = stem + res2 (layer1), ...
STAGE_NAMES = ("stem", "layer1", "layer2", "layer3", "layer4")
# detectron2's names of the same stages, for ``out_features``
OUT_FEATURE_NAMES = ("stem", "res2", "res3", "res4", "res5")


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
                       dim: int, layer_name: str, temporal_stride: int = 1) -> nn.Module | None:
        if stride == 1 and temporal_stride == 1 and in_channels == out_channels:
            return None
        return nn.Sequential(
            _conv(in_channels, out_channels, _size(dim, 1), _size(dim, stride, temporal_stride), norm=norm,
                  dim=dim),
            create_norm(norm, out_channels, dim, layer_name=f"{layer_name}.downsample.1"))

    def last_norm(self) -> nn.Module:
        """The norm whose gamma starts at 0 with ``zero_init_residual``."""
        raise NotImplementedError

    def _residual(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class BasicBlock(_Block):
    """Two 3x3 convs (ResNet-18/34).

    In 3D, ``temporal_kernel`` is the first conv's temporal size and ``temporal_stride`` its
    temporal stride (and the shortcut's); that conv also carries the spatial stride.
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *, norm: NormSpec, dim: int = 2,
                 groups: int = 1, width_per_group: int = 64, stride_in_1x1: bool = False,
                 temporal_kernel: int = 1, temporal_stride: int = 1, layer_name: str = "") -> None:
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise ValueError("BasicBlock (ResNet-18/34) supports only groups=1 and width_per_group=64; "
                             "use depth >= 50 for ResNeXt")
        self.conv1 = _conv(in_channels, planes, _size(dim, 3, temporal_kernel),
                           _size(dim, stride, temporal_stride), norm=norm, dim=dim)
        self.bn1 = create_norm(norm, planes, dim, layer_name=f"{layer_name}.bn1")
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv(planes, planes, _size(dim, 3), norm=norm, dim=dim)
        self.bn2 = create_norm(norm, planes, dim, layer_name=f"{layer_name}.bn2")
        self.downsample = self._make_shortcut(in_channels, planes, stride, norm, dim, layer_name, temporal_stride)

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
    the first 1x1 conv in 3D (I3D's (3, 1, 1) vs (1, 1, 1)); ``temporal_stride`` goes on the conv
    that carries the spatial stride and on the shortcut.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *, norm: NormSpec, dim: int = 2,
                 groups: int = 1, width_per_group: int = 64, stride_in_1x1: bool = False,
                 temporal_kernel: int = 1, temporal_stride: int = 1, layer_name: str = "") -> None:
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        out_channels = planes * self.expansion
        # (spatial, temporal) strides of the 1x1 and the 3x3: the temporal stride goes where the spatial one does
        on_1x1, on_3x3 = (stride, temporal_stride), (1, 1)
        if not stride_in_1x1:
            on_1x1, on_3x3 = on_3x3, on_1x1
        self.conv1 = _conv(in_channels, width, _size(dim, 1, temporal_kernel), _size(dim, *on_1x1),
                           norm=norm, dim=dim)
        self.bn1 = create_norm(norm, width, dim, layer_name=f"{layer_name}.bn1")
        self.conv2 = _conv(width, width, _size(dim, 3), _size(dim, *on_3x3), norm=norm, dim=dim,
                           groups=groups)
        self.bn2 = create_norm(norm, width, dim, layer_name=f"{layer_name}.bn2")
        self.conv3 = _conv(width, out_channels, _size(dim, 1), norm=norm, dim=dim)
        self.bn3 = create_norm(norm, out_channels, dim, layer_name=f"{layer_name}.bn3")
        self.relu = nn.ReLU(inplace=True)
        self.downsample = self._make_shortcut(in_channels, out_channels, stride, norm, dim, layer_name,
                                              temporal_stride)

    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self._residual(x, out)


_BLOCKS: dict[str, type[_Block]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _check_temporal_kernel(k: int, what: str) -> None:
    # create_conv pads k // 2 in time; only an odd k keeps T unchanged at temporal stride 1.
    if not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise ValueError(f"{what}: temporal kernel sizes must be odd positive ints (1, 3, 5, ...) so that "
                         f"padding k // 2 keeps the clip length, got {k!r}")


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
        for k in ks:
            _check_temporal_kernel(k, f"temporal_kernels for layer{stage}")
        out.append(ks)
    return out


def _check_temporal_strides(temporal_strides: Sequence[int] | None, num_stages: int, dim: int) -> list[int]:
    """One temporal stride per stage (default all 1); anything but 1 needs dim=3."""
    if temporal_strides is None:
        return [1] * num_stages
    strides = list(temporal_strides)
    if len(strides) != num_stages or any(not isinstance(t, int) or t < 1 for t in strides):
        raise ValueError(f"temporal_strides needs one positive int per stage ({num_stages}), got {temporal_strides!r}")
    if dim == 2 and any(t != 1 for t in strides):
        raise ValueError("temporal_strides other than 1 need dim=3 (video)")
    return strides


def _check_out_features(out_features: Sequence[str] | None, num_classes: int | None) -> list[str] | None:
    """Validate ``out_features`` and return it in network order (None stays None)."""
    if out_features is None:
        return None
    if isinstance(out_features, str):
        raise TypeError(f"out_features must be a list of names such as ['res2', 'res3'], got the string "
                        f"{out_features!r}")
    names = list(out_features)
    unknown = [n for n in names if n not in OUT_FEATURE_NAMES]
    if unknown:
        raise ValueError(f"out_features = {names}: unknown name(s) {unknown}; valid names are "
                         f"{list(OUT_FEATURE_NAMES)} (detectron2's stage names)")
    if not names:
        raise ValueError(f"out_features must name at least one of {list(OUT_FEATURE_NAMES)}, or be None")
    if len(set(names)) != len(names):
        raise ValueError(f"out_features = {names} lists a name twice")
    if num_classes is not None:
        # A feature extractor and a classifier at once has no single forward output; keep them apart.
        raise ValueError("out_features and num_classes cannot be used together: with out_features the "
                         "ResNet is a feature extractor (no avgpool/fc)")
    return sorted(names, key=OUT_FEATURE_NAMES.index)


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
            at ``layer4``. Not allowed with ``out_features``.
        stem_temporal_kernel: temporal size of the stem conv in 3D (5 gives I3D's 5x7x7).
        temporal_kernels: 3D only: per stage, an int or a list with one temporal kernel size per
            block, for each block's first conv. None: all 1. Sizes must be odd.
        out_features: names from :data:`OUT_FEATURE_NAMES` ("stem", "res2" .. "res5"). If set, the
            forward returns an OrderedDict ``{name: tensor}`` in network order and stages after the
            last requested one are not built. None: the forward returns the last stage's output
            (or the logits with ``num_classes``), as torchvision's ResNet.
        temporal_strides: 3D only: temporal stride of each of the 4 stages, on its first block
            (the conv with the spatial stride, and the shortcut). None: all 1.
        temporal_pool: 3D only: if > 1, max-pool time by this factor (kernel = stride) after res2,
            as PySlowFast I3D's pool1. Default: 1 (none).

    Attributes:
        out_features: the requested names in network order, or None.
        out_channels: ``{name: channels}`` of the named outputs (of every built stage when
            ``out_features`` is None).
        out_strides: ``{name: spatial stride}`` of the same outputs, relative to the input.
        out_temporal_strides: ``{name: temporal stride}`` of the same outputs (all 1 in 2D).
        stage_channels: ``{"layer1": channels, ...}`` of every built stage (torchvision names).
    """

    def __init__(self, block: str, layers: Sequence[int], norm: str | NormSpec = "BN", *, dim: int = 2,
                 groups: int = 1, width_per_group: int = 64, stride_in_1x1: bool = False,
                 zero_init_residual: bool = True, num_classes: int | None = None,
                 stem_temporal_kernel: int = 1, temporal_kernels=None,
                 out_features: Sequence[str] | None = None, temporal_strides: Sequence[int] | None = None,
                 temporal_pool: int = 1) -> None:
        super().__init__()
        if block not in _BLOCKS:
            raise ValueError(f"Unknown ResNet block {block!r}; choose one of {sorted(_BLOCKS)}")
        if dim not in (2, 3):
            raise ValueError(f"ResNet supports dim 2 (images) or 3 (video), got {dim}")
        if dim == 2 and stem_temporal_kernel != 1:
            raise ValueError("stem_temporal_kernel other than 1 needs dim=3 (video)")
        _check_temporal_kernel(stem_temporal_kernel, "stem_temporal_kernel")
        if not isinstance(temporal_pool, int) or temporal_pool < 1:
            raise ValueError(f"temporal_pool must be a positive int (1: no pooling), got {temporal_pool!r}")
        if dim == 2 and temporal_pool != 1:
            raise ValueError("temporal_pool other than 1 needs dim=3 (video)")
        spec = parse_norm(norm)
        block_cls = _BLOCKS[block]
        temporal = _per_block_temporal(temporal_kernels, layers, dim)
        t_strides = _check_temporal_strides(temporal_strides, len(layers), dim)
        self.out_features = _check_out_features(out_features, num_classes)
        # Stages after the last requested output would only cost memory and time.
        num_stages = len(layers) if self.out_features is None else OUT_FEATURE_NAMES.index(self.out_features[-1])
        self.dim = dim
        self.norm = spec
        self.stride_in_1x1 = stride_in_1x1

        self.conv1 = _conv(3, 64, _size(dim, 7, stem_temporal_kernel), _size(dim, 2), norm=spec, dim=dim)
        self.bn1 = create_norm(spec, 64, dim, layer_name="bn1")
        self.relu = nn.ReLU(inplace=True)
        pool = nn.MaxPool2d if dim == 2 else nn.MaxPool3d
        self.maxpool = pool(_size(dim, 3), _size(dim, 2), _size(dim, 1, 0))
        channels, strides, t_total = {"stem": 64}, {"stem": 4}, {"stem": 1}

        in_channels, t_stride = 64, 1
        self.stage_channels: dict[str, int] = {}
        self.temporal_pool: nn.Module | None = None
        for i, (tks, ts) in enumerate(zip(temporal[:num_stages], t_strides)):
            name, planes = f"layer{i + 1}", 64 * 2 ** i
            blocks = []
            for j, tk in enumerate(tks):
                first = j == 0
                blocks.append(block_cls(in_channels, planes, (1 if i == 0 else 2) if first else 1, norm=spec,
                                        dim=dim, groups=groups, width_per_group=width_per_group,
                                        stride_in_1x1=stride_in_1x1, temporal_kernel=tk,
                                        temporal_stride=ts if first else 1, layer_name=f"{name}.{j}"))
                in_channels = planes * block_cls.expansion
            setattr(self, name, nn.Sequential(*blocks))
            self.stage_channels[name] = in_channels
            out_name = OUT_FEATURE_NAMES[i + 1]
            t_stride *= ts
            channels[out_name], strides[out_name], t_total[out_name] = in_channels, 4 * 2 ** i, t_stride
            if i == 0 and temporal_pool > 1:
                # No parameters or buffers: the state-dict keys stay torchvision's.
                self.temporal_pool = nn.MaxPool3d((temporal_pool, 1, 1), (temporal_pool, 1, 1))
                t_stride *= temporal_pool
        names = list(channels) if self.out_features is None else self.out_features
        self.out_channels: dict[str, int] = {n: channels[n] for n in names}
        self.out_strides: dict[str, int] = {n: strides[n] for n in names}
        self.out_temporal_strides: dict[str, int] = {n: t_total[n] for n in names}
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
        """The modules of one of :data:`STAGE_NAMES` ("stem" is conv1 + bn1); [] for a stage not built."""
        if stage == "stem":
            return [self.conv1, self.bn1]
        return [getattr(self, stage)] if hasattr(self, stage) else []

    def freeze(self, freeze_at: int) -> "ResNet":
        """Freeze the first ``freeze_at`` stages, as detectron2's MODEL.BACKBONE.FREEZE_AT.

        0: nothing; 1: the stem; 2: stem + layer1 (res2); ... 5: everything. Frozen parameters
        get ``requires_grad=False`` and frozen BN/SyncBN layers become FrozenBatchNorm (same
        state-dict keys), so their statistics never update, in train mode or not. GN/LN/IN keep
        no statistics, so freezing their parameters is all they need. Stages not built (after
        the last of ``out_features``) are skipped. The swap is done on this module in place, so
        a wrapper holding it (e.g. :class:`~gn_det.modeling.backbone.fpn.ResNetFPN`) sees it.
        """
        if not 0 <= freeze_at <= len(STAGE_NAMES):
            raise ValueError(f"freeze_at must be in 0..{len(STAGE_NAMES)} (0: train all, 1: stem, "
                             f"2: stem + res2, ...), got {freeze_at}")
        for stage in STAGE_NAMES[:freeze_at]:
            modules = self.stage_modules(stage)
            if not modules:
                continue
            for m in modules:
                for p in m.parameters():
                    p.requires_grad_(False)
            name = "bn1" if stage == "stem" else stage  # the stem's only norm is bn1
            setattr(self, name, freeze_module(getattr(self, name)))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """The last stage (or logits with ``num_classes``); with ``out_features``, ``{name: tensor}``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        wanted = self.out_features
        outputs: dict[str, torch.Tensor] = OrderedDict()
        if wanted is not None and "stem" in wanted:
            outputs["stem"] = x
        for i in range(len(self.stage_channels)):
            x = getattr(self, f"layer{i + 1}")(x)  # looked up each time: freeze() may swap it
            name = OUT_FEATURE_NAMES[i + 1]
            if wanted is not None and name in wanted:
                outputs[name] = x  # res2 is taken before the temporal pool
            if i == 0 and self.temporal_pool is not None:
                x = self.temporal_pool(x)
        if wanted is not None:
            return outputs
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
                 temporal_kernels=None, out_features: Sequence[str] | None = None,
                 temporal_strides: Sequence[int] | None = None, temporal_pool: int = 1) -> ResNet:
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
        out_features (list of str, optional): named stage outputs, any of "stem", "res2", "res3",
            "res4", "res5"; the forward then returns an OrderedDict of them and the model has
            ``out_channels`` / ``out_strides`` for each. Not with ``num_classes``. Default: None.
        temporal_strides (list of int, optional): temporal stride of each of the 4 stages
            (dim=3 only). Default: None (all 1).
        temporal_pool (int): max-pool time by this factor after res2 (dim=3 only), as I3D's
            pool1. Default: 1 (none).

    Example::

        >>> model = build_resnet(50, "GN+WS", freeze_at=2)
        >>> model.load_state_dict(converted_state_dict)  # torchvision key names
        >>> body = build_resnet(50, "GN", out_features=["res3", "res4", "res5"])
        >>> {k: v.shape[-1] for k, v in body(torch.zeros(1, 3, 224, 224)).items()}
        {'res3': 28, 'res4': 14, 'res5': 7}
    """
    if depth not in RESNET_SPECS:
        raise ConfigError(f"Unsupported ResNet depth {depth}; choose one of {sorted(RESNET_SPECS)}",
                          ["MODEL.RESNETS.DEPTH"])
    block, layers = RESNET_SPECS[depth]
    model = ResNet(block, layers, norm, dim=dim, groups=groups, width_per_group=width_per_group,
                   stride_in_1x1=stride_in_1x1, zero_init_residual=zero_init_residual, num_classes=num_classes,
                   stem_temporal_kernel=stem_temporal_kernel, temporal_kernels=temporal_kernels,
                   out_features=out_features, temporal_strides=temporal_strides, temporal_pool=temporal_pool)
    return model.freeze(freeze_at)


def resnet_cfg_problems(cfg) -> list[str]:
    """The MODEL.RESNETS values :func:`build_resnet_from_cfg` cannot build, one ``"KEY = value: ..."``
    sentence each, checked before building (every task's config check runs it): the depth, ResNeXt
    widths on basic blocks, and widths MODEL.RESNETS.NORM's GroupNorm cannot split."""
    r = cfg.MODEL.RESNETS
    depth = int(r.DEPTH)
    if depth not in RESNET_SPECS:
        return [f"MODEL.RESNETS.DEPTH = {r.DEPTH!r}: Unsupported ResNet depth {depth}; choose one of "
                f"{sorted(RESNET_SPECS)}"]
    groups, per_group = int(r.NUM_GROUPS), int(r.WIDTH_PER_GROUP)
    if RESNET_SPECS[depth][0] == "basic" and (groups, per_group) != (1, 64):
        key, value = ("MODEL.RESNETS.NUM_GROUPS", groups) if groups != 1 else ("MODEL.RESNETS.WIDTH_PER_GROUP",
                                                                             per_group)
        return [f"{key} = {value}: ResNet-{depth} (basic blocks) has NUM_GROUPS 1 and WIDTH_PER_GROUP 64; use "
                f"DEPTH >= 50 for ResNeXt"]
    norm = "MODEL.RESNETS.NORM"
    widths = [("", "the stem's norm layers", norm, 64)]
    for i, stage in enumerate(OUT_FEATURE_NAMES[1:]):
        planes = 64 * 2 ** i
        if RESNET_SPECS[depth][0] == "bottleneck":
            widths.append(("MODEL.RESNETS.WIDTH_PER_GROUP", f"{stage}'s bottleneck convs (NUM_GROUPS x "
                           f"WIDTH_PER_GROUP x {2 ** i})", norm, int(planes * (per_group / 64.0)) * groups))
        widths.append(("", f"{stage}'s output convs", norm, planes * _BLOCKS[RESNET_SPECS[depth][0]].expansion))
    problems = group_norm_width_problems(cfg, widths)
    return problems[:1]  # the first split that fails says it; the wider stages repeat it


def build_resnet_from_cfg(cfg, dim: int = 2, *, out_features: Sequence[str] | bool | None = None,
                          **kwargs) -> ResNet:
    """Build the ResNet body named by MODEL.RESNETS.* and MODEL.BACKBONE.FREEZE_AT.

    Args:
        cfg: the config.
        dim: 2 for images, 3 for video.
        out_features: None or False (default): no named outputs, the forward returns the last
            stage as before. True: use MODEL.RESNETS.OUT_FEATURES. A list of names: use those.
        kwargs: more keyword arguments for :func:`build_resnet` (e.g. ``temporal_kernels``).

    Raises:
        ConfigError: a value :func:`resnet_cfg_problems` refuses.
    """
    refuse_unsupported(resnet_cfg_problems(cfg))
    r = cfg.MODEL.RESNETS
    if out_features is True:
        out_features = list(r.OUT_FEATURES)
    elif out_features is False:
        out_features = None
    return build_resnet(int(r.DEPTH), norm_from_cfg(cfg, r.NORM, "MODEL.RESNETS.NORM"), dim,
                        groups=int(r.NUM_GROUPS), width_per_group=int(r.WIDTH_PER_GROUP),
                        stride_in_1x1=bool(r.STRIDE_IN_1X1), zero_init_residual=bool(r.ZERO_INIT_RESIDUAL),
                        freeze_at=int(cfg.MODEL.BACKBONE.FREEZE_AT), out_features=out_features, **kwargs)
