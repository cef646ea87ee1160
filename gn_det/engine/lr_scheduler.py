"""Learning-rate schedule: fvcore param schedulers (linear/constant warmup, then multi-step decay).

The schedule is a *multiplier* of each param group's base lr, a function of training progress
``iter / MAX_ITER``, so param groups with different base lrs (bias lr factor) keep their ratio.
"""

from __future__ import annotations

import logging

from fvcore.common.param_scheduler import (CompositeParamScheduler, ConstantParamScheduler,
                                           CosineParamScheduler, LinearParamScheduler,
                                           MultiStepParamScheduler, ParamScheduler)
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ..config import ConfigError

__all__ = ["ParamSchedulerLR", "build_lr_multiplier", "build_lr_scheduler"]

logger = logging.getLogger(__name__)


class ParamSchedulerLR(LRScheduler):
    """A torch LR scheduler driven by an fvcore :class:`ParamScheduler` multiplier.

    ``step()`` is called once per optimizer step; after ``k`` steps every group's lr is
    ``base_lr * multiplier(k / max_iter)``. Only the step count matters on resume: the schedule
    and the base lrs are those this scheduler was built with (the config the run is started
    with), so a resumed run whose config changed BASE_LR, STEPS, MAX_ITER, warmup ... follows the
    new schedule from the resume iteration on. (``base_lrs`` is saved too, for the record.)
    """

    def __init__(self, optimizer: Optimizer, multiplier: ParamScheduler, max_iter: int,
                 last_epoch: int = -1):
        if max_iter <= 0:
            raise ConfigError(f"SOLVER.MAX_ITER must be > 0, got {max_iter}")
        self._multiplier = multiplier
        self._max_iter = max_iter
        super().__init__(optimizer, last_epoch=last_epoch)

    def state_dict(self) -> dict:
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        """Continue at the saved step count on *this* schedule: sets every group's lr (and
        ``initial_lr``, which an optimizer state load may have overwritten) to its value there."""
        self.last_epoch = int(state_dict["last_epoch"])
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["initial_lr"] = base_lr
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def get_lr(self) -> list[float]:
        factor = self._multiplier(min(self.last_epoch / self._max_iter, 1.0))
        return [base_lr * factor for base_lr in self.base_lrs]


def build_lr_multiplier(cfg) -> ParamScheduler:
    """The lr multiplier over progress in [0, 1] described by ``cfg.SOLVER``.

    ``WarmupMultiStepLR``: ``GAMMA ** (number of STEPS <= iter)``; ``WarmupCosineLR``: cosine
    to 0. Both preceded by ``WARMUP_ITERS`` of warmup: "linear" goes from ``WARMUP_FACTOR``
    to the schedule's value at the end of warmup, "constant" holds ``WARMUP_FACTOR``.
    """
    s = cfg.SOLVER
    max_iter = s.MAX_ITER
    if s.LR_SCHEDULER_NAME == "WarmupMultiStepLR":
        if list(s.STEPS) != sorted(s.STEPS):
            raise ConfigError(f"SOLVER.STEPS must be increasing, got {tuple(s.STEPS)}")
        # As detectron2: a short run (MAX_ITER overridden) simply never reaches the later steps.
        steps = [x for x in s.STEPS if x < max_iter]
        if len(steps) != len(s.STEPS):
            logger.warning("SOLVER.STEPS %s: steps at or past SOLVER.MAX_ITER %d are ignored",
                           tuple(s.STEPS), max_iter)
        main = MultiStepParamScheduler(values=[s.GAMMA ** k for k in range(len(steps) + 1)],
                                       milestones=list(steps), num_updates=max_iter)
    elif s.LR_SCHEDULER_NAME == "WarmupCosineLR":
        main = CosineParamScheduler(1.0, 0.0)
    else:
        raise ConfigError(f"Unknown SOLVER.LR_SCHEDULER_NAME {s.LR_SCHEDULER_NAME!r}; "
                         f"use 'WarmupMultiStepLR' or 'WarmupCosineLR'")
    if s.WARMUP_ITERS <= 0:
        return main
    warmup_len = min(s.WARMUP_ITERS / max_iter, 1.0)
    end = main(warmup_len)
    if s.WARMUP_METHOD == "linear":
        warmup = LinearParamScheduler(s.WARMUP_FACTOR * main(0.0), end)
    elif s.WARMUP_METHOD == "constant":
        warmup = ConstantParamScheduler(s.WARMUP_FACTOR * main(0.0))
    else:
        raise ConfigError(f"Unknown SOLVER.WARMUP_METHOD {s.WARMUP_METHOD!r}; use 'linear' or 'constant'")
    if warmup_len >= 1.0:
        return warmup
    # "rescaled": the warmup scheduler sees its own progress 0..1; "fixed": the main one keeps
    # seeing global progress, so its milestones stay in absolute iterations.
    return CompositeParamScheduler([warmup, main], lengths=[warmup_len, 1 - warmup_len],
                                   interval_scaling=["rescaled", "fixed"])


def build_lr_scheduler(cfg, optimizer: Optimizer) -> ParamSchedulerLR:
    """The per-iteration lr scheduler for ``optimizer`` from ``cfg.SOLVER``."""
    return ParamSchedulerLR(optimizer, build_lr_multiplier(cfg), cfg.SOLVER.MAX_ITER)
