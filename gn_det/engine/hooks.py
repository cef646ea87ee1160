"""Hooks around the training loop: checkpointing, periodic evaluation, metric writers.

A hook sees the trainer (``self.trainer``) and is called ``before_train``, ``before_step``,
``after_step`` (``trainer.iter`` is the iteration just run) and ``after_train``. Order matters:
the trainer registers checkpointer, then evaluation, then writers, so a checkpoint is on disk
before an evaluation that might fail, and evaluation results reach the same metrics.json line.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Sequence

from ..utils import comm
from ..utils.events import EventWriter, get_event_storage
from .evaluate import evaluate_task, flatten_results

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["HookBase", "PeriodicCheckpointer", "EvalHook", "PeriodicWriter"]

logger = logging.getLogger(__name__)


class HookBase:
    """Base class of training hooks; override the calls you need (all default to no-ops)."""

    trainer: "Trainer"

    def before_train(self) -> None: ...

    def after_train(self) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...


def _period_ended(trainer: "Trainer", period: int) -> bool:
    """After every ``period``-th iteration (``period`` > 0) except the last, which
    ``after_train`` covers."""
    done = trainer.iter + 1
    return period > 0 and done % period == 0 and done < trainer.max_iter


class PeriodicCheckpointer(HookBase):
    """Saves ``model_{iter:07d}.pth`` every ``period`` iterations and ``model_final.pth`` at the end."""

    def __init__(self, period: int):
        self.period = period

    def after_step(self) -> None:
        if _period_ended(self.trainer, self.period):
            self.trainer.save_checkpoint(f"model_{self.trainer.iter:07d}")

    def after_train(self) -> None:
        if self.trainer.finished:
            self.trainer.save_checkpoint("model_final")


class EvalHook(HookBase):
    """Evaluates every ``period`` iterations (0: only at the end) and after the last one.

    Metrics go into the event storage as ``{kind}/{metric}`` (``{dataset}/{kind}/{metric}`` with
    several test sets), so they land in metrics.json and TensorBoard.
    """

    def __init__(self, period: int):
        self.period = period

    def _evaluate(self) -> None:
        t = self.trainer
        results = evaluate_task(t.cfg, t.unwrapped_model, t.task)
        t.last_eval_results = results
        if comm.is_main_process() and results:
            flat = flatten_results(results[next(iter(results))] if len(results) == 1 else results)
            if flat:
                get_event_storage().put_scalars(**flat)
        comm.synchronize()

    def after_step(self) -> None:
        if _period_ended(self.trainer, self.period):
            self._evaluate()

    def after_train(self) -> None:
        if self.trainer.finished and self.trainer.cfg.DATASETS.TEST:
            self._evaluate()


class PeriodicWriter(HookBase):
    """Calls every writer every ``period`` iterations and at the end (main process only).

    Args:
        writers: the writers, or a callable making them when training starts (so files are
            opened only by runs that train, knowing their start iteration).
        period: LOG_PERIOD.
    """

    def __init__(self, writers: Sequence[EventWriter] | Callable[[], Sequence[EventWriter]], period: int):
        self._make = writers if callable(writers) else (lambda: list(writers))
        self.writers: list[EventWriter] = []
        self.period = max(1, period)

    def before_train(self) -> None:
        self.writers = list(self._make())

    def after_step(self) -> None:
        it = self.trainer.iter
        if (it + 1) % self.period == 0 or it + 1 == self.trainer.max_iter:
            for w in self.writers:
                w.write()

    def after_train(self) -> None:
        for w in self.writers:
            w.write()
            w.close()
        self.writers = []
