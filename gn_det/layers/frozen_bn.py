"""Frozen BatchNorm for any number of spatial dims (2D images, 3D video).

Holds BN's four tensors as buffers, so it loads and saves BN checkpoints with the
same keys (weight, bias, running_mean, running_var), but never trains and never
updates its statistics. This is what detectron2 calls "FrozenBN".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FrozenBatchNorm"]

_REDUCED = (torch.float16, torch.bfloat16)


class FrozenBatchNorm(nn.Module):
    """y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, fixed.

    Works for inputs of shape (N, C, *) with any number of trailing dims. Each forward is one
    fused kernel over x, as detectron2's FrozenBatchNorm2d: ``F.batch_norm(training=False)``
    when x needs no gradient (inference, frozen stages); ``addcmul(shift, x, scale)`` when it
    does, because batch_norm's backward keeps x alive (one activation per layer) where the
    affine form keeps only the per-channel scale. The buffers never get gradients.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-channel affine (scale, shift) this layer applies."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            scale, shift = self.scale_and_shift()
            shape = (1, -1) + (1,) * (x.dim() - 2)
            return torch.addcmul(shift.reshape(shape).to(x.dtype), x, scale.reshape(shape).to(x.dtype))
        params = (self.running_mean, self.running_var, self.weight, self.bias)
        if x.dtype != self.weight.dtype and not (x.dtype in _REDUCED and self.weight.dtype == torch.float32):
            # batch_norm mixes dtypes only as (half or bfloat16 input, float32 buffers)
            params = tuple(t.to(x.dtype) for t in params)
        mean, var, weight, bias = params
        return F.batch_norm(x, mean, var, weight, bias, training=False, momentum=0.0, eps=self.eps)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # BN checkpoints carry num_batches_tracked; it means nothing here, so drop it.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def from_batchnorm(cls, bn: nn.modules.batchnorm._BatchNorm) -> "FrozenBatchNorm":
        """Freeze a trained BatchNorm layer (any dims) into a FrozenBatchNorm."""
        frozen = cls(bn.num_features, bn.eps)
        with torch.no_grad():
            if bn.affine:
                frozen.weight.copy_(bn.weight)
                frozen.bias.copy_(bn.bias)
            if bn.track_running_stats:
                frozen.running_mean.copy_(bn.running_mean)
                frozen.running_var.copy_(bn.running_var)
        return frozen
