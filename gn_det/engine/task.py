"""The contract between the task-agnostic engine and a task (detection, video, ...).

The engine (config, trainer, launch, checkpointing, logging, hooks) only ever calls a
:class:`Task`. A task is registered by name and picked by ``cfg.TASK``; ``cfg.TASK`` may also be
``"package.module:Factory"`` for a task living outside gn_det (imported on first use, also in
spawned worker processes).

Optional parts a task may add (the engine checks for them):

* ``build_train_loader(cfg, micro_batch_size, skip_batches=0)``: with a ``skip_batches`` argument
  the loader starts after the first ``skip_batches`` micro-batches of this rank's endless
  stream; the trainer passes the number already consumed when resuming, which (together with
  the RNG states the checkpoint restores) makes a resumed run continue exactly. Draw data
  randomness from a seeded generator tied to the position in the stream, not from worker RNG.
* ``load_weights(model, path)``: how MODEL.WEIGHTS initializes a fresh run (format conversion,
  key renaming). Without it the engine loads a gn_det checkpoint's "model" entry non-strictly.
  ``build_model`` itself should not load MODEL.WEIGHTS (the engine calls this once).
* ``find_unused_parameters = True``: when some parameters may get no gradient in a step (DDP).

Models move their inputs to their own device; the engine does not touch batches.
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
    """Instantiate the task registered as ``name`` (or ``"module:Factory"``); the error lists the
    known names."""
    _import_builtin_tasks()
    if name not in TASK_REGISTRY and ":" in name:
        import importlib

        module, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise KeyError(f"TASK {name!r}: cannot import {attr!r} from module {module!r} ({e})") from None
        TASK_REGISTRY[name] = factory
    if name not in TASK_REGISTRY:
        raise KeyError(f"Unknown TASK {name!r}; registered tasks: {sorted(TASK_REGISTRY)}, "
                       f"or 'package.module:TaskClass'")
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
