"""Run a task's evaluator over its test sets: the engine's task-agnostic inference loop."""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from ..utils import comm
from ..utils.progress import progress_bar
from .task import Evaluator, Task

__all__ = ["inference_on_dataset", "evaluate_task", "flatten_results", "format_results_table",
           "preserve_rng"]

logger = logging.getLogger(__name__)


@contextmanager
def preserve_rng() -> Iterator[None]:
    """Restore python/numpy/torch/CUDA RNG states on exit, so evaluation during training does
    not change the training's random stream (a resumed run must match an uninterrupted one)."""
    py, npy = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def inference_on_dataset(model: nn.Module, data_loader: Iterable, evaluator: Evaluator,
                         desc: str = "eval") -> dict[str, dict[str, float]]:
    """Feed every batch of ``data_loader`` to ``model`` (eval mode, no grad) and the evaluator.

    Returns ``evaluator.evaluate()``; the model's train/eval mode is restored afterwards.
    """
    evaluator.reset()
    total = len(data_loader) if hasattr(data_loader, "__len__") else None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), preserve_rng():
            for inputs in progress_bar(data_loader, total=total, desc=desc, disable=not comm.is_main_process(),
                               leave=False, dynamic_ncols=True):
                evaluator.process(inputs, model(inputs))
    finally:
        model.train(was_training)
    return evaluator.evaluate() or {}


def evaluate_task(cfg, model: nn.Module, task: Task) -> "OrderedDict[str, dict[str, dict[str, float]]]":
    """Evaluate ``model`` on every dataset in ``cfg.DATASETS.TEST`` with the task's evaluator.

    ``model`` must not be DDP-wrapped (ranks may see different numbers of test batches).
    Returns ``{dataset: {kind: {metric: value}}}``; only the main process gets non-empty
    metrics in distributed runs. Each dataset's table is logged.
    """
    results: OrderedDict[str, dict[str, dict[str, float]]] = OrderedDict()
    for name in cfg.DATASETS.TEST:
        loader = task.build_test_loader(cfg, name)
        evaluator = task.build_evaluator(cfg, name, cfg.OUTPUT_DIR)
        res = inference_on_dataset(model, loader, evaluator, desc=f"eval {name}")
        results[name] = res
        if comm.is_main_process() and res:
            logger.info("Evaluation results for %s:\n%s", name, format_results_table(res))
    return results


def flatten_results(results: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"bbox": {"AP": 1.0}}`` -> ``{"bbox/AP": 1.0}`` (any depth)."""
    flat: dict[str, float] = {}
    for k, v in results.items():
        if isinstance(v, dict):
            flat.update(flatten_results(v, f"{prefix}{k}/"))
        else:
            flat[f"{prefix}{k}"] = float(v)
    return flat


def format_results_table(results: dict[str, dict[str, float]]) -> str:
    """One row per metric kind ("bbox", "segm", ...), one column per metric; kinds with the same
    metrics share a table. Per-category entries ("AP-person": names with "-") are left out, as
    in detectron2's summary: the evaluator prints those itself."""
    from ..utils.table import format_table

    tables: dict[tuple[str, ...], list[list]] = {}
    for kind, metrics in results.items():
        metrics = flatten_results(metrics) if isinstance(metrics, dict) else {kind: float(metrics)}
        metrics = {k: v for k, v in metrics.items() if "-" not in k} or metrics
        tables.setdefault(tuple(metrics), []).append([kind] + list(metrics.values()))
    return "\n".join(format_table(rows, ["task"] + list(cols), float_fmt=".4f") for cols, rows in tables.items())
