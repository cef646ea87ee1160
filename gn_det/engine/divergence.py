"""Is a checkpoint good enough to resume from? The rule behind ``last_checkpoint``.

A diverging run can keep finite losses for a while after its weights have blown up, so a
checkpoint written then would make a poor "last good checkpoint": resuming from it fails again at
any learning rate. A checkpoint is therefore *named* good (``last_checkpoint`` points at it,
``--resume`` and the non-finite-loss message use it) only when

1. every floating-point tensor of the model is finite;
2. the weights did not blow up: the L2 norm of all parameters is at most :data:`FACTOR` times
   its value at the previous good checkpoint (or, before one, when training started in this
   process). A diverging step multiplies it by orders of magnitude before the loss shows it;
   SGD with weight decay changes it by a few percent per period;
3. the losses are not exploding. With the *window median* being the median ``total_loss`` of
   the last :data:`WINDOW` iterations (fewer at the start), the *best* being the lowest window
   median of the run so far and the *start level* the median of the run's first :data:`WINDOW`
   losses, the limit is the larger of :data:`FACTOR` x best and the start level; neither the
   current window median nor the loss of the checkpoint's own iteration may exceed it. (The start
   level keeps a run whose loss has fallen near 0 from calling an ordinary noisy batch an
   explosion: a diverging loss rises far above where training began.) Best and start level
   travel in the checkpoint, so a resumed run keeps them. Non-finite losses never get this far:
   the trainer stops at the first one.

A checkpoint that fails is still written (for inspection, and counted by the retention) but
``last_checkpoint`` keeps naming the previous good one, and the log says why in one line.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

import torch
from torch import nn

__all__ = ["WINDOW", "FACTOR", "DivergenceWatch", "non_finite_tensors", "parameter_norm"]

WINDOW = 20
FACTOR = 10.0


def non_finite_tensors(model: nn.Module) -> list[str]:
    """Names of the floating-point tensors (parameters and buffers) of ``model`` holding a NaN or an inf."""
    return [name for name, t in model.state_dict().items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


@torch.no_grad()
def parameter_norm(model: nn.Module) -> float:
    """The L2 norm of all parameters of ``model`` together (computed in float64)."""
    squares = [p.detach().double().pow(2).sum() for p in model.parameters()]
    return float(torch.stack(squares).sum().sqrt().cpu()) if squares else 0.0


class DivergenceWatch:
    """Follows the losses and the weights of a run; says when a checkpoint would not be good.

    Args:
        window: iterations per window (:data:`WINDOW`).
        factor: the growth that counts as blowing up (:data:`FACTOR`).

    Call :meth:`start` when training starts, :meth:`update` after every step, :meth:`problem`
    when a checkpoint is about to be written and :meth:`accept` after a good one was.
    """

    def __init__(self, window: int = WINDOW, factor: float = FACTOR):
        self.window, self.factor = window, factor
        self._recent: deque[float] = deque(maxlen=window)
        self._first: list[float] = []  # the run's first losses, until `window` of them
        self.last_iter: int | None = None
        self.best: float | None = None
        self.best_iter: int | None = None
        self.start_level: float | None = None
        self.reference_norm: float | None = None

    def start(self, model: nn.Module) -> None:
        """Take the weights' norm as the reference (the weights training starts from)."""
        self.reference_norm = parameter_norm(model)

    def update(self, iteration: int, total_loss: float) -> None:
        """Record the total loss of ``iteration``."""
        self._recent.append(float(total_loss))
        self.last_iter = iteration
        if len(self._first) < self.window and (self.start_level is None or self._first):
            self._first.append(float(total_loss))
            self.start_level = statistics.median(self._first)
        median = statistics.median(self._recent)
        if math.isfinite(median) and (self.best is None or median < self.best):
            self.best, self.best_iter = median, iteration

    def state_dict(self) -> dict:
        """What a resumed run needs to go on judging the same way (plain values, weights_only-safe)."""
        return {"best": self.best, "best_iter": self.best_iter, "start_level": self.start_level,
                "start_complete": len(self._first) >= self.window or not self._first}

    def load_state_dict(self, state: dict | None) -> None:
        """Continue from :meth:`state_dict` (None, from an older checkpoint: start afresh)."""
        if not state:
            return
        self.best, self.best_iter = state.get("best"), state.get("best_iter")
        self.start_level = state.get("start_level")
        if not state.get("start_complete", True):
            self.start_level = None  # the first window was not full: measure it again from here

    def accept(self, model: nn.Module) -> None:
        """A good checkpoint of ``model`` was written: its norm is the new reference."""
        self.reference_norm = parameter_norm(model)

    def problem(self, model: nn.Module) -> str | None:
        """Why ``model`` now would not be a good checkpoint, in one clause; None when it would."""
        bad = non_finite_tensors(model)
        if bad:
            return f"{len(bad)} model tensor(s) hold NaN or inf (first: {bad[0]})"
        norm = parameter_norm(model)
        if self.reference_norm and norm > self.factor * self.reference_norm:
            return (f"the weights blew up: their L2 norm is {norm:.4g}, {norm / self.reference_norm:.3g}x the "
                    f"{self.reference_norm:.4g} of the last good checkpoint (or the start)")
        return self._loss_problem()

    def _loss_problem(self) -> str | None:
        if not self._recent:
            return None
        if not all(math.isfinite(v) for v in self._recent):
            return f"a total_loss of the last {len(self._recent)} iterations was not finite"
        if self.best is None or self.best <= 0:
            return None
        limit = max(self.factor * self.best, self.start_level or 0.0)
        median, last = statistics.median(self._recent), self._recent[-1]
        first = self.last_iter - len(self._recent) + 1
        above = (f"above both {self.factor:g}x the best window median {self.best:.4g} (iteration {self.best_iter}) "
                 f"and the start level {self.start_level or 0.0:.4g}")
        if median > limit:
            return (f"the losses are exploding: median total_loss of iterations {first}-{self.last_iter} is "
                    f"{median:.4g}, {above}")
        if last > limit:
            return f"the losses are exploding: total_loss of iteration {self.last_iter} is {last:.4g}, {above}"
        return None
