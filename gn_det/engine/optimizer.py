"""SGD with momentum and per-parameter-kind weight decay / lr (detectron2's conventions).

* parameters of norm layers (GroupNorm, BatchNorm*, SyncBatchNorm, LayerNorm, InstanceNorm: any
  layer the norm factory makes; FrozenBatchNorm has none) get ``SOLVER.WEIGHT_DECAY_NORM``
  (0 by default, as in the GN paper's fine-tuning) — this also covers their bias (beta);
* other biases get ``SOLVER.WEIGHT_DECAY_BIAS`` (None: same as ``WEIGHT_DECAY``);
* every bias (norm beta included) gets lr ``BASE_LR * SOLVER.BIAS_LR_FACTOR``;
* everything else: ``BASE_LR`` and ``WEIGHT_DECAY``.
Frozen parameters (``requires_grad=False``) are left out.
"""

from __future__ import annotations

from torch import nn
from torch.optim import SGD, Optimizer

from ..layers.conv_norm import is_norm

__all__ = ["get_param_groups", "build_optimizer"]


def get_param_groups(model: nn.Module, base_lr: float, weight_decay: float,
                     weight_decay_norm: float | None = None, weight_decay_bias: float | None = None,
                     bias_lr_factor: float = 1.0) -> list[dict]:
    """Optimizer param groups, one per distinct (lr, weight_decay), each listing its params.

    Each group also carries ``"names"`` (parameter names, for logging and tests).
    """
    wd_norm = weight_decay if weight_decay_norm is None else weight_decay_norm
    wd_bias = weight_decay if weight_decay_bias is None else weight_decay_bias
    seen: set[int] = set()
    groups: dict[tuple[float, float], dict] = {}
    for module_name, module in model.named_modules():
        norm_module = is_norm(module)
        for param_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            is_bias = param_name == "bias"
            wd = wd_norm if norm_module else (wd_bias if is_bias else weight_decay)
            lr = base_lr * bias_lr_factor if is_bias else base_lr
            group = groups.setdefault((lr, wd), {"params": [], "names": [], "lr": lr, "weight_decay": wd})
            group["params"].append(p)
            group["names"].append(f"{module_name}.{param_name}" if module_name else param_name)
    return list(groups.values())


def build_optimizer(cfg, model: nn.Module) -> Optimizer:
    """SGD with ``SOLVER.MOMENTUM``/``NESTEROV`` and the param groups of :func:`get_param_groups`."""
    s = cfg.SOLVER
    groups = get_param_groups(model, s.BASE_LR, s.WEIGHT_DECAY, s.WEIGHT_DECAY_NORM, s.WEIGHT_DECAY_BIAS,
                              s.BIAS_LR_FACTOR)
    if not groups:
        raise ValueError("The model has no trainable parameters (all frozen?)")
    return SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV)
