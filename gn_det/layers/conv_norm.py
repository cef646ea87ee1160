"""Weight-Standardize the convs that feed a norm layer inside torchvision-built modules.

torchvision's FPN and detection heads build their layers with ``Conv2dNormActivation``,
which always uses a plain ``nn.Conv2d`` and offers no hook for the conv class. WS belongs
only on convs followed by a norm (see REFERENCE.md), so after building such a module we
walk it and swap the conv of every ``Sequential(conv, norm, ...)`` for a WS conv with the
same weights and state-dict keys.
"""

from __future__ import annotations

from torch import nn

from .frozen_bn import FrozenBatchNorm
from .norm import NormSpec, parse_norm
from .ws_conv import WSConv2d, WSConv3d

__all__ = ["NORM_TYPES", "is_norm", "standardize_conv_norm_pairs"]

# Every class the norm factory can return for a real norm (nn.Identity means "no norm").
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, FrozenBatchNorm)
_WS_FOR_PLAIN = {nn.Conv2d: WSConv2d, nn.Conv3d: WSConv3d}


def is_norm(module: nn.Module) -> bool:
    """True for any norm layer the factory makes (BN, SyncBN, FrozenBN, GN/LN/IN)."""
    return isinstance(module, NORM_TYPES)


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
            ws_cls = _WS_FOR_PLAIN.get(type(conv))  # exact type: WS convs subclass nn.Conv2d
            if ws_cls is not None and is_norm(nxt):
                setattr(seq, name, ws_cls.from_conv(conv, ws_mode=spec.ws_mode))
                replaced += 1
    return replaced
