"""Top-1 / top-5 accuracy of a classifier over a whole test split, correct across DDP ranks.

The evaluator follows the engine's :class:`~gn_det.engine.task.Evaluator` protocol. Per image it
keeps only the sample index, the label and the top-k predicted classes (k = min(5, number of
outputs)); at the end the ranks' records are gathered on the main process (``comm.all_gather``)
and de-duplicated by sample index, so an image is counted once whatever the sharding.

Metrics are percentages: ``{"classification": {"top1", "top5", "num_images"}}``. With fewer
than 5 outputs, "top5" is top-K with K the number of outputs (100 when every label is a valid
output). The per-class top-1 accuracy and the class names go to
``<output_dir>/classification_results.json`` (written atomically).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from gn_det.evaluation.accuracy import per_class_top1, topk_accuracy
from gn_det.utils import comm
from gn_det.utils.io import atomic_write_text
from gn_det.utils.table import format_metrics_table, format_per_class_table

__all__ = ["ClassificationEvaluator", "RESULTS_FILE", "TOPK"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "classification_results.json"
TOPK = 5
_PER_CLASS_LOG_LIMIT = 50  # longer class lists are in the json only


class ClassificationEvaluator:
    """Top-1 and top-5 accuracy (%) over a test split, plus per-class top-1.

    Args:
        class_names: name of class ``i`` at index ``i`` (the dataset's sorted folder names).
        output_dir: where ``classification_results.json`` goes; None writes nothing.
        distributed: gather the ranks' records before scoring (only the main process returns metrics).
        dataset_name: named in the log and the json.

    ``process(inputs, outputs)`` takes the test batch (samples with "index" and "label") and the
    model's logits (N, K).
    """

    def __init__(self, class_names: Sequence[str], output_dir: str | None = None, distributed: bool = True,
                 dataset_name: str = ""):
        self.class_names = list(class_names)
        self._output_dir = output_dir
        self._distributed = distributed
        self._dataset_name = dataset_name
        self.reset()

    def reset(self) -> None:
        self._indices: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._topk: list[np.ndarray] = []

    def process(self, inputs: Sequence[Mapping[str, Any]], outputs: torch.Tensor) -> None:
        """Record one batch: each sample's ``index`` and ``label``, and the top-k classes of its logits."""
        if outputs.ndim != 2 or len(inputs) != len(outputs):
            raise ValueError(f"process() needs logits (N, K) for N={len(inputs)} samples, got shape "
                             f"{tuple(outputs.shape)}")
        k = min(TOPK, outputs.shape[1])
        self._topk.append(outputs.detach().float().topk(k, dim=1).indices.cpu().numpy().astype(np.int64))
        self._indices.append(np.array([int(d["index"]) for d in inputs], dtype=np.int64))
        self._labels.append(np.array([int(d["label"]) for d in inputs], dtype=np.int64))

    def _gather(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """All ranks' (indices, labels, topk), one row per distinct sample index; None off the main process."""
        k = min(TOPK, max(len(self.class_names), 1))
        local = (np.concatenate(self._indices) if self._indices else np.zeros(0, np.int64),
                 np.concatenate(self._labels) if self._labels else np.zeros(0, np.int64),
                 np.concatenate(self._topk) if self._topk else np.zeros((0, k), np.int64))
        parts = comm.all_gather(local) if self._distributed and comm.get_world_size() > 1 else [local]
        if not comm.is_main_process():
            return None
        parts = [p for p in parts if len(p[0])]
        if not parts:
            return local
        indices, labels, topk = (np.concatenate(x) for x in zip(*parts))
        _, first = np.unique(indices, return_index=True)  # a repeated image counts once
        return indices[first], labels[first], topk[first]

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Gather, score, write the per-class json; ``{}`` on non-main processes."""
        gathered = self._gather()
        if gathered is None:
            return {}
        _, labels, topk = gathered
        top1, top5 = topk_accuracy(topk, labels)
        if not len(labels):
            logger.warning("No image of %s was evaluated: accuracies are NaN", self._dataset_name or "the test set")
        metrics = {"top1": top1, "top5": top5, "num_images": float(len(labels))}
        per_class = self._per_class(labels, topk[:, 0] if len(labels) else labels)
        self._write(metrics, per_class, topk.shape[1] if topk.ndim == 2 else TOPK)
        self._log(metrics, per_class)
        return {"classification": metrics}

    def _per_class(self, labels: np.ndarray, top1: np.ndarray) -> dict[str, dict[str, float]]:
        return per_class_top1(labels, top1, self.class_names, "num_images")

    def _write(self, metrics: dict[str, float], per_class: dict[str, dict[str, float]], k: int) -> None:
        if not self._output_dir:
            return
        path = os.path.join(self._output_dir, RESULTS_FILE)
        record = {"dataset": self._dataset_name, **metrics, "top5_k": k, "classes": self.class_names,
                  "per_class": per_class}
        atomic_write_text(json.dumps(record, indent=1) + "\n", path)
        logger.info("Wrote per-class accuracy of %d images to %s", int(metrics["num_images"]), path)

    def _log(self, metrics: dict[str, float], per_class: dict[str, dict[str, float]]) -> None:
        text = f"Classification accuracy (%) on {self._dataset_name}:\n{format_metrics_table(metrics, '.2f')}"
        if len(per_class) <= _PER_CLASS_LOG_LIMIT:
            text += "\nPer-class top-1 (%):\n" + format_per_class_table(
                {name: v["top1"] for name, v in per_class.items()}, metric="top1", float_fmt=".2f")
        logger.info("%s", text)
