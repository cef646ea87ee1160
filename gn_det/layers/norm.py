"""The one norm factory: every norm layer in gn_det, 2D and 3D, is made here.

A norm is named by a short string, as in detectron2's configs:

=============  =====================================================================
name           layer
=============  =====================================================================
"BN"           nn.BatchNorm{1,2,3}d
"SyncBN"       nn.SyncBatchNorm (aliases "nnSyncBN", "naiveSyncBN" from detectron2)
"FrozenBN"     :class:`~gn_det.layers.frozen_bn.FrozenBatchNorm` (buffers only)
"GN"           nn.GroupNorm, 32 groups by default, or a fixed number of channels per group
"LN"           nn.GroupNorm with one group (Layer Norm over C and all spatial dims)
"IN"           nn.GroupNorm with C groups (Instance Norm, affine)
""             no norm (``create_norm`` returns nn.Identity; ``get_norm_layer`` returns None)
=============  =====================================================================

A "+WS" suffix ("GN+WS", "BN+WS") asks for Weight-Standardized convs in front of the
norm; :func:`parse_norm` splits it off and :func:`create_conv` honours it.

How GN picks its group count for C channels (``group_policy``, see :func:`group_count`):

======================  ==================================================================
policy                  groups
======================  ==================================================================
"strict" (default)      ``num_groups`` (or ``C // channels_per_group``), refused unless it
                        divides C
"divisor"               the largest count <= ``num_groups`` that divides C (C=24, G=32: 24;
                        C=40: 20; C=45: 15)
"channels_per_group"    ``C // channels_per_group`` when that divides; otherwise the group size
                        that divides C closest to ``channels_per_group`` (ties: the smaller
                        size, i.e. more groups); C=24 at 16 per group: 2 groups of 12
======================  ==================================================================

The non-strict policies exist for networks whose widths are not multiples of 32 (MobileNet,
EfficientNet, RegNet, ShuffleNet, R(2+1)D ...); the converter's report lists every layer's groups.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Callable

from torch import nn

from .frozen_bn import FrozenBatchNorm
from .norm_names import GROUP_POLICIES, NORM_NAMES  # torch-free, for command-line choices
from .ws_conv import WS_COUNTERPARTS, get_ws_config

__all__ = ["NormSpec", "NORM_NAMES", "GROUP_POLICIES", "parse_norm", "create_norm", "get_norm_layer",
           "create_conv", "group_count"]

_ALIASES = {"nnSyncBN": "SyncBN", "naiveSyncBN": "SyncBN", "none": "", "None": ""}
_BATCHNORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


@dataclass(frozen=True)
class NormSpec:
    """A parsed norm choice.

    Attributes:
        name: one of :data:`NORM_NAMES`.
        ws: whether convs feeding this norm are Weight-Standardized.
        num_groups: GN groups (used when ``channels_per_group`` is None).
        channels_per_group: if set, GN uses C // channels_per_group groups instead.
        eps: the norm's eps (1e-5, as in the GN paper and BN).
        ws_mode: WS convention, see :mod:`gn_det.layers.ws_conv`.
        group_policy: how GN's group count adapts to C, one of :data:`GROUP_POLICIES` (see the
            module docstring); "channels_per_group" needs ``channels_per_group``.
    """

    name: str
    ws: bool = False
    num_groups: int = 32
    channels_per_group: int | None = None
    eps: float = 1e-5
    ws_mode: str = "authors"
    group_policy: str = "strict"

    def __post_init__(self) -> None:
        if self.group_policy not in GROUP_POLICIES:
            raise ValueError(f"Unknown group policy {self.group_policy!r}; choose one of {GROUP_POLICIES}")
        if self.group_policy == "channels_per_group" and (self.channels_per_group or 0) <= 0:
            raise ValueError(f"group policy 'channels_per_group' needs a positive channels_per_group "
                             f"(e.g. 16), got {self.channels_per_group}")

    def __str__(self) -> str:
        return self.name + ("+WS" if self.ws else "")


def parse_norm(norm: str | NormSpec, **overrides) -> NormSpec:
    """Turn "GN", "GN+WS", "FrozenBN", "" ... into a :class:`NormSpec`.

    Keyword overrides (``num_groups``, ``channels_per_group``, ``eps``, ``ws_mode``,
    ``group_policy``) are applied on top. An unknown name raises ValueError listing the valid ones.
    """
    if isinstance(norm, NormSpec):
        return replace(norm, **overrides) if overrides else norm
    if not isinstance(norm, str):
        raise TypeError(f"norm must be a string such as 'GN' or 'GN+WS', got {norm!r}")
    text = norm.strip()
    ws = False
    if text.upper().endswith("+WS"):
        text, ws = text[:-3].strip(), True
    text = _ALIASES.get(text, text)
    by_upper = {n.upper(): n for n in NORM_NAMES}
    if text.upper() not in by_upper:
        raise ValueError(f"Unknown norm {norm!r}; choose one of "
                         f"{[n for n in NORM_NAMES if n]} or '' for none, optionally with '+WS'")
    spec = NormSpec(name=by_upper[text.upper()], ws=ws, **overrides)
    if spec.ws:
        get_ws_config(spec.ws_mode)
    return spec


def group_count(spec: NormSpec, num_channels: int, layer_name: str = "") -> int:
    """Number of GN groups for ``num_channels`` under ``spec.group_policy`` (module docstring).

    Raises:
        ValueError: strict policy and a split that does not divide (the message names the layer).
    """
    where = f" for layer {layer_name!r}" if layer_name else ""
    if spec.name == "LN":
        return 1
    if spec.name == "IN":
        return num_channels
    if spec.group_policy == "divisor":
        if spec.num_groups <= 0:
            raise ValueError(f"GroupNorm{where}: num_groups must be positive, got {spec.num_groups}")
        return max(g for g in range(1, min(spec.num_groups, num_channels) + 1) if num_channels % g == 0)
    if spec.group_policy == "channels_per_group":
        sizes = [d for d in range(1, num_channels + 1) if num_channels % d == 0]
        size = min(sizes, key=lambda d: (abs(d - spec.channels_per_group), d))
        return num_channels // size
    if spec.channels_per_group is not None:
        if spec.channels_per_group <= 0 or num_channels % spec.channels_per_group:
            raise ValueError(f"GroupNorm{where}: {num_channels} channels cannot be split into groups of "
                             f"{spec.channels_per_group} channels; choose channels_per_group dividing "
                             f"{num_channels}, or a non-strict group policy")
        return num_channels // spec.channels_per_group
    if spec.num_groups <= 0 or num_channels % spec.num_groups:
        raise ValueError(f"GroupNorm{where}: {num_channels} channels are not divisible by "
                         f"{spec.num_groups} groups; choose num_groups dividing {num_channels}, "
                         f"set channels_per_group, or use group_policy 'divisor' or 'channels_per_group'")
    return spec.num_groups


def create_norm(norm: str | NormSpec, num_channels: int, dim: int = 2, *, layer_name: str = "",
                **overrides) -> nn.Module:
    """Build the norm layer named by ``norm`` for ``num_channels`` channels.

    Args:
        norm: a name from :data:`NORM_NAMES` (optionally "+WS", which only affects convs) or a
            :class:`NormSpec`.
        num_channels: channels of the input.
        dim: spatial dims of the input: 1, 2 (images) or 3 (video). GN/LN/IN/FrozenBN/SyncBN are
            the same module for every dim; BN picks BatchNorm{dim}d.
        layer_name: used only in error messages.
        overrides: ``num_groups``, ``channels_per_group``, ``eps`` (see :class:`NormSpec`).
    """
    spec = parse_norm(norm, **overrides)
    if dim not in _BATCHNORMS:
        raise ValueError(f"dim must be 1, 2 or 3, got {dim}")
    if spec.name == "":
        return nn.Identity()
    if spec.name == "BN":
        return _BATCHNORMS[dim](num_channels, eps=spec.eps)
    if spec.name == "SyncBN":
        return nn.SyncBatchNorm(num_channels, eps=spec.eps)
    if spec.name == "FrozenBN":
        return FrozenBatchNorm(num_channels, eps=spec.eps)
    return nn.GroupNorm(group_count(spec, num_channels, layer_name), num_channels, eps=spec.eps)


def get_norm_layer(norm: str | NormSpec, dim: int = 2, **overrides) -> Callable[[int], nn.Module] | None:
    """A ``norm_layer(num_channels)`` callable for torchvision-style builders, or None for no norm."""
    spec = parse_norm(norm, **overrides)
    if spec.name == "":
        return None
    return partial(create_norm, spec, dim=dim)


def create_conv(in_channels: int, out_channels: int, kernel_size, stride=1, padding=None,
                dilation=1, groups: int = 1, bias: bool = False, *, dim: int = 2,
                norm: str | NormSpec = "") -> nn.Module:
    """A 2D or 3D conv, Weight-Standardized when ``norm`` says "+WS".

    ``padding`` defaults to "same"-style ``dilation * (k - 1) // 2`` per dim.
    """
    spec = parse_norm(norm)
    ks = (kernel_size,) * dim if isinstance(kernel_size, int) else tuple(kernel_size)
    dil = (dilation,) * dim if isinstance(dilation, int) else tuple(dilation)
    if padding is None:
        padding = tuple(d * (k - 1) // 2 for k, d in zip(ks, dil))
    plain = {2: nn.Conv2d, 3: nn.Conv3d}.get(dim)
    if plain is None:
        raise ValueError(f"create_conv supports dim 2 or 3, got {dim}")
    args = (in_channels, out_channels, ks, stride, padding, dil, groups, bias)
    return WS_COUNTERPARTS[plain](*args, ws_mode=spec.ws_mode) if spec.ws else plain(*args)
