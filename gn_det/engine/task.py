"""The contract between the task-agnostic engine and a task (detection, video, ...).

The engine (config, trainer, launch, checkpointing, logging, hooks) only ever calls a
:class:`Task`. A task is registered by name and picked by ``cfg.TASK``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol

from torch import nn

__all__ = ["Task", "Evaluator", "TASK_REGISTRY", "register_task", "get_task"]


class Evaluator(Protocol):
    """Accumulates model outputs over a test set, then computes metrics."""

    def reset(self) -> None: ...

    def process(self, inputs: Any, outputs: Any) -> None: ...

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Metrics grouped by kind, for example {"bbox": {"AP": ...}, "segm": {...}}.

        In distributed runs, only the main process returns a non-empty dict.
        """
        ...


class Task(Protocol):
    """What a task supplies to the engine.

    ``build_model`` returns a module that, in train mode, maps a batch from the train loader
    to a dict of scalar losses, and in eval mode maps a test batch to outputs the evaluator
    understands.
    """

    def build_model(self, cfg) -> nn.Module: ...

    def build_train_loader(self, cfg, micro_batch_size: int) -> Iterable:
        """An endless iterable of micro-batches of ``micro_batch_size`` samples for this rank."""
        ...

    def build_test_loader(self, cfg, dataset_name: str) -> Iterable: ...

    def build_evaluator(self, cfg, dataset_name: str, output_dir: str) -> Evaluator: ...


TASK_REGISTRY: dict[str, Callable[[], Task]] = {}


def register_task(name: str) -> Callable:
    """Class decorator: ``@register_task("detection")``."""

    def wrap(factory):
        TASK_REGISTRY[name] = factory
        return factory

    return wrap


def get_task(name: str) -> Task:
    """Instantiate the task registered as ``name``; the error lists the known names."""
    _import_builtin_tasks()
    if name not in TASK_REGISTRY:
        raise KeyError(f"Unknown TASK {name!r}; registered tasks: {sorted(TASK_REGISTRY)}")
    return TASK_REGISTRY[name]()


def _import_builtin_tasks() -> None:
    # Imported lazily so the engine does not depend on any task's modules.
    import importlib

    for module in ("gn_det.modeling.detection_task",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
