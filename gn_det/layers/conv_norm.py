"""Which modules are norms, and how a conv feeding one becomes Weight-Standardized.

The norm-type lists and :func:`to_ws_conv` are shared by the model builders, the converter's
surgery, calibration and the optimizer's param groups, so they all agree on what a norm is.

Weight-Standardize the convs that feed a norm layer inside torchvision-built modules:

torchvision's FPN and detection heads build their layers with ``Conv2dNormActivation``,
which always uses a plain ``nn.Conv2d`` and offers no hook for the conv class. WS belongs
only on convs followed by a norm (see REFERENCE.md), so after building such a module we
walk it and swap the conv of every ``Sequential(conv, norm, ...)`` for a WS conv with the
same weights and state-dict keys.
"""

from __future__ import annotations

from torch import nn
from torchvision.ops import FrozenBatchNorm2d as TVFrozenBatchNorm2d

from .frozen_bn import FrozenBatchNorm
from .norm import NormSpec, parse_norm
from .ws_conv import WS_COUNTERPARTS

__all__ = ["BATCH_NORM_TYPES", "NORM_TYPES", "WS_COUNTERPARTS", "is_norm", "batch_norm_channels",
           "ws_counterpart", "to_ws_conv", "standardize_conv_norm_pairs"]

# The BatchNorm family: BatchNorm1d/2d/3d, SyncBatchNorm, torchvision's and gn_det's FrozenBN.
BATCH_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, TVFrozenBatchNorm2d, FrozenBatchNorm)
# Every norm layer: the BN family, GN (and LN/IN as the factory makes them) and torch's other norms.
NORM_TYPES = BATCH_NORM_TYPES + (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm,
                                 nn.LocalResponseNorm)


def is_norm(module: nn.Module) -> bool:
    """True for any norm layer (BN, SyncBN, FrozenBN, GN/LN/IN, ...)."""
    return isinstance(module, NORM_TYPES)


def batch_norm_channels(bn: nn.Module) -> int:
    """Channels of a BN-family layer (torchvision's FrozenBatchNorm2d has no ``num_features``)."""
    return bn.num_features if hasattr(bn, "num_features") else bn.weight.numel()


def ws_counterpart(conv: nn.Module) -> type[nn.Module] | None:
    """The WS class that computes what ``conv`` computes, standardized; None if there is none.

    Plain Conv2d/Conv3d, and subclasses that only change construction (torchvision's
    ``Conv3DSimple``/``Conv3DNoTemporal``): no own ``forward``/``_conv_forward``, no child modules.
    A subclass with its own forward (detectron2's Conv2d calling its ``.norm``) has none.
    """
    for plain, ws in WS_COUNTERPARTS.items():
        if type(conv) is plain:
            return ws
        if (isinstance(conv, plain) and not isinstance(conv, tuple(WS_COUNTERPARTS.values()))
                and type(conv).forward is plain.forward and type(conv)._conv_forward is plain._conv_forward
                and next(conv.children(), None) is None):
            return ws
    return None


def to_ws_conv(conv: nn.Module, ws_mode: str = "authors") -> nn.Module:
    """The WS version of a conv that has one (:func:`ws_counterpart`): same weights, keys, train mode
    and requires_grad."""
    cls = ws_counterpart(conv)
    if cls is None:
        raise TypeError(f"{type(conv).__name__} has no Weight-Standardized counterpart")
    ws = cls.from_conv(conv, ws_mode=ws_mode)
    ws.train(conv.training)
    ws.weight.requires_grad_(conv.weight.requires_grad)
    if ws.bias is not None:
        ws.bias.requires_grad_(conv.bias.requires_grad)
    return ws


def standardize_conv_norm_pairs(module: nn.Module, norm: str | NormSpec) -> int:
    """Make every conv directly followed by a norm inside a ``Sequential`` a WS conv.

    Does nothing unless ``norm`` asks for "+WS". Convs that already standardize, or are not
    followed by a norm (FPN convs without norm, predictors), are left alone.

    Args:
        module: any module; searched recursively, changed in place.
        norm: the part's norm choice, for example "GN+WS" (its ``ws_mode`` is used).

    Returns:
        The number of convs replaced.
    """
    spec = parse_norm(norm)
    if not spec.ws:
        return 0
    replaced = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        children = list(seq.named_children())
        for (name, conv), (_, nxt) in zip(children, children[1:]):
            # exact type: WS convs subclass nn.Conv2d
            if type(conv) in WS_COUNTERPARTS and is_norm(nxt):
                setattr(seq, name, to_ws_conv(conv, spec.ws_mode))
                replaced += 1
    return replaced
