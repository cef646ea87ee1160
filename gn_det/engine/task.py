"""The contract between the task-agnostic engine and a task (detection, video, ...).

The engine (config, trainer, launch, checkpointing, logging, hooks) only ever calls a
:class:`Task`. A task registers itself by name with :func:`register_task` when its module is
imported, and is picked by ``cfg.TASK``. The engine names no task module: gn_det's own tasks
live in :mod:`gn_det.tasks` and are declared as entry points (group ``gn_det_tasks`` in
``pyproject.toml``), which :func:`get_task` loads on first use; an outside package adds a task
the same way, or ``cfg.TASK`` may be ``"package.module:Factory"`` (imported on first use, also
in spawned worker processes).

Optional parts a task may add (the engine checks for them):

* ``add_config(cfg)`` (a static method): adds the task's own config keys and defaults. It is
  registered with the config (:func:`gn_det.config.register_task_config`), which calls it before
  a file is merged, so the task's keys are known and other tasks' keys stay out.
* ``check_config(cfg, detectron2_file=False)`` (a static method): raises ``ConfigError`` for a
  value the task cannot honour; run by :func:`gn_det.config.load_config` on every config it returns.
* ``add_detectron2_defaults(cfg)`` (a static method): sets detectron2's defaults where they differ
  from the task's; applied to config files that name no TASK (detectron2's own YAML files).
* ``weight_parts(cfg) -> dict[str, str]``: the model parts MODEL.WEIGHTS must fill, as
  ``{part name: state-dict key prefix}``; a load that leaves one of them empty is refused
  unless MODEL.WEIGHTS_ALLOW_EMPTY_PARTS names it.
* ``weights_transform(cfg, model, raw, path) -> dict[str, Tensor]``: turn the content of a
  MODEL.WEIGHTS file (read once, safely) into the model's state-dict names: format renaming,
  norm conversion, 2D -> 3D inflation. Default: the file's ``"model"`` entry or the file itself.
  See :mod:`gn_det.checkpoint.model_loading`.

* ``build_train_loader(cfg, micro_batch_size, skip_batches=0)``: with a ``skip_batches`` argument
  the loader starts after the first ``skip_batches`` micro-batches of this rank's endless
  stream; the trainer passes the number already consumed when resuming, which (together with
  the RNG states the checkpoint restores) makes a resumed run continue exactly. Draw data
  randomness from a seeded generator tied to the position in the stream, not from worker RNG.
  ``build_model`` itself never loads MODEL.WEIGHTS: the engine does, once.
* ``find_unused_parameters = True``: when some parameters may get no gradient in a step (DDP).

Models move their inputs to their own device; the engine does not touch batches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from ..config import register_task_config
from ..utils.plugins import entry_point_names, load_entry_point

if TYPE_CHECKING:  # torch only for the annotations: the CLIs read the tasks' config keys without it
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
    """Class decorator: ``@register_task("detection")``; also registers the class's
    ``add_config`` (its config keys) under the same name."""

    def wrap(factory):
        TASK_REGISTRY[name] = factory
        register_task_config(name, getattr(factory, "add_config", None) or _no_keys,
                             check=getattr(factory, "check_config", None),
                             add_detectron2_defaults=getattr(factory, "add_detectron2_defaults", None))
        return factory

    return wrap


def _no_keys(cfg) -> None:
    """``add_config`` of a task that declares no keys of its own."""


def get_task(name: str) -> Task:
    """Instantiate the task registered as ``name`` (or ``"module:Factory"``); the error lists the
    known names."""
    if name not in TASK_REGISTRY and ":" not in name:
        load_entry_point(name)  # an installed task registers itself on import
    if name not in TASK_REGISTRY and ":" in name:
        import importlib

        module, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise KeyError(f"TASK {name!r}: cannot import {attr!r} from module {module!r} ({e})") from None
        TASK_REGISTRY[name] = factory
    if name not in TASK_REGISTRY:
        known = sorted(set(TASK_REGISTRY) | set(entry_point_names()))
        raise KeyError(f"Unknown TASK {name!r}; known tasks: {known}, or 'package.module:TaskClass'")
    return TASK_REGISTRY[name]()
