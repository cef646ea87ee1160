"""Weight Standardization (Qiao et al., arXiv 1903.10520) for 2D and 3D convs.

Each output channel's weight is standardized over (in, kt, kh, kw) before the
convolution: W_hat = (W - mean(W)) / std(W). The layers keep the plain conv's
state-dict keys (``weight``, ``bias``), so checkpoints move between WS and plain
convs without renaming.

Three conventions exist in the wild (see shared REFERENCE.md); they differ in the
variance estimator and in where eps goes:

=========  ==========  ======================  =======
name       variance    eps                     default
=========  ==========  ======================  =======
"authors"  unbiased    std + eps, eps = 1e-5   yes (the WS authors' code, mmcv ConvWS2d)
"paper"    biased      sqrt(var + eps), 1e-5
"timm"     biased      sqrt(var + eps), 1e-6   (timm StdConv2d)
=========  ==========  ======================  =======
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["WSConfig", "WS_MODES", "standardize_weight", "WSConv2d", "WSConv3d", "WS_COUNTERPARTS", "fold_ws"]


@dataclass(frozen=True)
class WSConfig:
    """How weights are standardized: variance estimator and eps placement."""

    unbiased: bool
    eps: float
    eps_inside_sqrt: bool


WS_MODES: dict[str, WSConfig] = {
    "authors": WSConfig(unbiased=True, eps=1e-5, eps_inside_sqrt=False),
    "paper": WSConfig(unbiased=False, eps=1e-5, eps_inside_sqrt=True),
    "timm": WSConfig(unbiased=False, eps=1e-6, eps_inside_sqrt=True),
}


def get_ws_config(mode: str) -> WSConfig:
    """Look up a WS convention by name; the error lists the valid names."""
    try:
        return WS_MODES[mode]
    except KeyError:
        raise ValueError(f"Unknown weight-standardization mode {mode!r}; "
                         f"choose one of {sorted(WS_MODES)}") from None


def standardize_weight(weight: torch.Tensor, mode: str = "authors") -> torch.Tensor:
    """Standardize a conv weight per output channel, over all other dims.

    This runs on every forward of every WS conv, so it is written with the fewest kernels
    (``benchmarks/bench_primitives.py`` measures it): "paper" and "timm" (biased variance,
    eps inside the square root) are exactly a training-mode ``F.batch_norm`` over
    ``weight.reshape(1, out, -1)``, one fused kernel each way, as timm's StdConv2d does.
    "authors" (unbiased std, eps added to it) is no batch norm: one ``var_mean`` and one
    fused multiply-add forward, and a hand-written backward (:class:`_AuthorsWS`).
    """
    cfg = get_ws_config(mode)
    if cfg.eps_inside_sqrt and not cfg.unbiased:
        flat = weight.reshape(1, weight.shape[0], -1)
        return F.batch_norm(flat, None, None, training=True, momentum=0.0, eps=cfg.eps).reshape_as(weight)
    if cfg.unbiased and not cfg.eps_inside_sqrt:
        return _AuthorsWS.apply(weight, cfg.eps)
    # No named mode lands here; kept so any WSConfig is honoured.
    dims = tuple(range(1, weight.dim()))
    var, mean = torch.var_mean(weight, dim=dims, correction=int(cfg.unbiased), keepdim=True)
    if cfg.eps_inside_sqrt:
        return (weight - mean) * torch.rsqrt(var + cfg.eps)
    return (weight - mean) / (var.sqrt() + cfg.eps)


class _AuthorsWS(torch.autograd.Function):
    """y = (w - mean) / (std + eps), unbiased std per output channel, with a fused backward.

    Autograd through ``var_mean`` and four elementwise ops runs about ten weight-sized kernels
    per step; this runs two forward and five backward. With d = w - mean, s = std, D = s + eps
    and n values per channel, dy/dw applied to g is::

        g / D - sum(g) / (n D) - d * sum(g * d) / (D**2 (n - 1) s)
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, eps: float) -> torch.Tensor:
        dims = tuple(range(1, weight.dim()))
        var, mean = torch.var_mean(weight, dim=dims, correction=1, keepdim=True)
        std = var.sqrt()
        inv = (std + eps).reciprocal()
        ctx.save_for_backward(weight, mean, std, inv)
        return torch.addcmul(-mean * inv, weight, inv)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        weight, mean, std, inv = ctx.saved_tensors
        dims = tuple(range(1, weight.dim()))
        n = weight[0].numel()
        centered = weight - mean
        grad_sum = grad.sum(dims, keepdim=True)
        grad_dot = (grad * centered).sum(dims, keepdim=True)
        coef = grad_dot * inv * inv / ((n - 1) * std)
        out = torch.addcmul(-grad_sum * inv / n, grad, inv)
        return out.addcmul_(centered, coef, value=-1), None


class _WSMixin:
    """Shared by the 2D and 3D WS convs: standardize, then run the plain conv."""

    ws_mode: str

    def _init_ws(self, ws_mode: str) -> None:
        get_ws_config(ws_mode)  # fail early on a bad name
        self.ws_mode = ws_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, standardize_weight(self.weight, self.ws_mode), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", ws_mode={self.ws_mode}"

    def to_plain_conv(self) -> nn.Module:
        """A plain conv whose weight is the standardized weight (WS folded in)."""
        plain_cls = nn.Conv2d if isinstance(self, nn.Conv2d) else nn.Conv3d
        plain = plain_cls(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                          self.padding, self.dilation, self.groups, self.bias is not None,
                          self.padding_mode, device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            plain.weight.copy_(standardize_weight(self.weight, self.ws_mode))
            if self.bias is not None:
                plain.bias.copy_(self.bias)
        return plain

    @classmethod
    def from_conv(cls, conv: nn.Module, ws_mode: str = "authors"):
        """A WS conv with the same geometry and (raw) weights as ``conv``."""
        ws = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                 conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                 ws_mode=ws_mode, device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            ws.weight.copy_(conv.weight)
            if conv.bias is not None:
                ws.bias.copy_(conv.bias)
        return ws


class WSConv2d(_WSMixin, nn.Conv2d):
    """nn.Conv2d with Weight Standardization; same arguments plus ``ws_mode``."""

    def __init__(self, *args, ws_mode: str = "authors", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_ws(ws_mode)


class WSConv3d(_WSMixin, nn.Conv3d):
    """nn.Conv3d with Weight Standardization; same arguments plus ``ws_mode``."""

    def __init__(self, *args, ws_mode: str = "authors", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_ws(ws_mode)


# Exact plain conv type -> its WS version (subclasses may have their own forward: no counterpart).
WS_COUNTERPARTS: dict[type[nn.Module], type[nn.Module]] = {nn.Conv2d: WSConv2d, nn.Conv3d: WSConv3d}


def fold_ws(model: nn.Module) -> int:
    """Replace every WS conv in ``model`` by a plain conv holding its standardized weight.

    For inference and export: outputs are unchanged, the per-step standardization is gone.
    Returns the number of convs folded.
    """
    folded = 0
    for name, child in list(model.named_children()):
        if isinstance(child, _WSMixin):
            setattr(model, name, child.to_plain_conv())
            folded += 1
        else:
            folded += fold_ws(child)
    return folded
