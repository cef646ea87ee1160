"""Clip-level and video-level accuracy of a video classifier, correct across DDP ranks.

Each test video is seen as ``views_per_video`` views (TEST.NUM_ENSEMBLE_VIEWS temporal clips x
TEST.NUM_SPATIAL_CROPS spatial crops). The evaluator follows the engine's
:class:`~gn_det.engine.task.Evaluator` protocol and reports, in percent:

- ``clip_top1`` / ``clip_top5``: every view scored on its own;
- ``top1`` / ``top5``: video level, the softmax scores averaged over the views of each video (as
  PySlowFast's multi-view test does), over the videos with at least one view;
- ``mean_class_top1``: the video-level top-1 of each class, averaged over classes with videos;
- ``num_videos``, ``num_views``, ``missing_views`` (views expected but never scored: unreadable
  videos the loader skipped), ``missing_videos`` (videos with no view at all: left out of the
  accuracies and listed by path in the results file).

With fewer than 5 classes, "top5" is top-K with K the number of classes.

DDP: every rank scores its shard of the views; ``evaluate`` (called on every rank) first gathers
the view keys ``(video, view)`` so that a view scored on several ranks (a sampler that pads) is
kept on the lowest one only, then gathers per-video score sums and per-view top-5 classes: about
K floats per video, not per view. Only the main process returns metrics and writes
``video_results.json`` (metrics, class names, per-class accuracy, confusion counts, missing
videos) and, for at most ``confusion_max_classes`` classes, ``confusion_matrix.png`` (video
level, rows normalized), both atomically.
"""

from __future__ import annotations

import io
import json
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from gn_det.evaluation.accuracy import per_class_top1, topk_accuracy
from gn_det.utils import comm
from gn_det.utils.io import atomic_write_file, atomic_write_text
from gn_det.utils.table import format_metrics_table, format_per_class_table

__all__ = ["VideoEvaluator", "confusion_matrix", "write_confusion_png", "RESULTS_FILE",
           "CONFUSION_FILE", "TOPK"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "video_results.json"
CONFUSION_FILE = "confusion_matrix.png"
TOPK = 5


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (K, K): row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, predictions), 1)
    return cm


def write_confusion_png(cm: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, title: str = "") -> None:
    """A confusion-matrix heat map (rows normalized to 1, counts in the cells), written atomically.

    Uses matplotlib's Agg canvas directly (no pyplot state, no display needed).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = len(class_names)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    side = max(4.0, 0.45 * k + 2.5)
    fig = Figure(figsize=(side, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), labels=list(class_names), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels=list(class_names), fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 20:  # counts stay legible
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_file(path, lambda f: f.write(buf.getvalue()))


class VideoEvaluator:
    """Clip- and video-level top-1 / top-5 over a test set of multi-view videos.

    Args:
        class_names: name of class ``i`` at index ``i``.
        views_per_video: views each video has (temporal clips x spatial crops).
        video_paths: path of each video, by video index (names the videos that got no view).
        output_dir: where ``video_results.json`` and ``confusion_matrix.png`` go; None: nothing written.
        distributed: gather the ranks' views before scoring.
        dataset_name: named in the log and the json.
        confusion_max_classes: draw the confusion matrix up to this many classes.

    ``process(inputs, outputs)`` takes the test batch (a list of samples with "video_index",
    "view" and "label", or a batch dict from collate_video_samples) and the logits (N, K).
    """

    def __init__(self, class_names: Sequence[str], views_per_video: int, video_paths: Sequence[str],
                 output_dir: str | None = None, distributed: bool = True, dataset_name: str = "",
                 confusion_max_classes: int = 50):
        if views_per_video < 1:
            raise ValueError(f"views_per_video must be >= 1, got {views_per_video}")
        self.class_names = list(class_names)
        self.views_per_video = int(views_per_video)
        self.video_paths = list(video_paths)
        self._output_dir = output_dir
        self._distributed = distributed
        self._dataset_name = dataset_name
        self._confusion_max_classes = confusion_max_classes
        self.reset()

    def reset(self) -> None:
        self._keys: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._logits: list[np.ndarray] = []

    def process(self, inputs: Sequence[Mapping[str, Any]] | Mapping[str, Any], outputs: torch.Tensor) -> None:
        """Record one batch: each view's key ``video_index * views_per_video + view``, its label and logits."""
        if isinstance(inputs, Mapping):
            videos, views, labels = (np.asarray(inputs[k], dtype=np.int64).reshape(-1)
                                     for k in ("video_index", "view", "label"))
        else:
            videos, views, labels = (np.array([int(s[k]) for s in inputs], dtype=np.int64)
                                     for k in ("video_index", "view", "label"))
        if outputs.ndim != 2 or len(videos) != len(outputs):
            raise ValueError(f"process() needs logits (N, K) for N={len(videos)} views, got shape {tuple(outputs.shape)}")
        if len(views) and (views.min() < 0 or views.max() >= self.views_per_video):
            raise ValueError(f"view indices {sorted(set(views.tolist()))} are outside [0, {self.views_per_video}): "
                             f"the test loader's views per video differ from the evaluator's")
        self._keys.append(videos * self.views_per_video + views)
        self._labels.append(labels)
        self._logits.append(outputs.detach().float().cpu().numpy())

    # ------------------------------------------------------------------------- gathering
    def _local(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = len(self.class_names)
        keys = np.concatenate(self._keys) if self._keys else np.zeros(0, np.int64)
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.int64)
        logits = np.concatenate(self._logits) if self._logits else np.zeros((0, k), np.float32)
        _, first = np.unique(keys, return_index=True)  # a view scored twice here counts once
        first = np.sort(first)
        return keys[first], labels[first], logits[first]

    def _gather(self) -> tuple[list, int] | None:
        """Per rank ``(video ids, score sums, view counts, view labels, view top-k)``; None off the main process."""
        keys, labels, logits = self._local()
        multi = self._distributed and comm.get_world_size() > 1
        if multi:  # keep a view on the lowest rank that scored it
            all_keys = comm.all_gather(keys)
            earlier = np.concatenate([np.zeros(0, np.int64)] + all_keys[:comm.get_rank()])
            mine = ~np.isin(keys, earlier)
            keys, labels, logits = keys[mine], labels[mine], logits[mine]
        k = min(TOPK, logits.shape[1]) if logits.ndim == 2 and logits.shape[1] else min(TOPK, len(self.class_names))
        topk = np.argsort(-logits, axis=1, kind="stable")[:, :k] if len(logits) else np.zeros((0, k), np.int64)
        videos = keys // self.views_per_video
        ids, inverse, counts = np.unique(videos, return_inverse=True, return_counts=True)
        sums = np.zeros((len(ids), logits.shape[1] if logits.ndim == 2 else 0), dtype=np.float64)
        if len(logits):
            np.add.at(sums, inverse, _softmax(logits.astype(np.float64)))
        video_labels = np.zeros(len(ids), np.int64)
        video_labels[inverse] = labels
        part = (ids, sums, counts, video_labels, labels, topk)
        parts = comm.all_gather(part) if multi else [part]
        return (parts, k) if comm.is_main_process() else None

    # ------------------------------------------------------------------------- scoring
    def evaluate(self) -> dict[str, dict[str, float]]:
        """Gather, score, write the results; ``{}`` on non-main processes."""
        gathered = self._gather()
        if gathered is None:
            return {}
        parts, k = gathered
        num_classes = len(self.class_names)
        view_labels = np.concatenate([p[4] for p in parts])
        view_topk = np.concatenate([p[5].reshape(-1, k) for p in parts])
        ids = np.concatenate([p[0] for p in parts])
        width = max([p[1].shape[1] for p in parts if p[1].ndim == 2 and len(p[1])], default=num_classes)
        sums = np.concatenate([p[1].reshape(-1, width) for p in parts])
        counts = np.concatenate([p[2] for p in parts])
        labels_of = np.concatenate([p[3] for p in parts])
        # Views of one video may sit on several ranks (shard boundaries): add their sums.
        videos, inverse = np.unique(ids, return_inverse=True)
        total = np.zeros((len(videos), width), dtype=np.float64)
        np.add.at(total, inverse, sums)
        views = np.zeros(len(videos), dtype=np.int64)
        np.add.at(views, inverse, counts)
        video_labels = np.zeros(len(videos), dtype=np.int64)
        video_labels[inverse] = labels_of
        mean_scores = total / np.maximum(views, 1)[:, None]
        video_topk = np.argsort(-mean_scores, axis=1, kind="stable")[:, :k]

        top1, top5 = topk_accuracy(video_topk, video_labels)
        clip_top1, clip_top5 = topk_accuracy(view_topk, view_labels)
        expected_videos = len(self.video_paths)
        missing_videos = sorted(set(range(expected_videos)) - set(videos.tolist()))
        per_class = self._per_class(video_labels, video_topk[:, 0] if len(videos) else video_labels)
        with_videos = [v["top1"] for v in per_class.values() if v["num_videos"]]
        metrics = {"top1": top1, "top5": top5, "clip_top1": clip_top1, "clip_top5": clip_top5,
                   "mean_class_top1": float(np.mean(with_videos)) if with_videos else float("nan"),
                   "num_videos": float(len(videos)), "num_views": float(views.sum()),
                   "missing_views": float(expected_videos * self.views_per_video - views.sum()),
                   "missing_videos": float(len(missing_videos))}
        if not len(videos):
            logger.warning("No view of %s was scored: accuracies are NaN", self._dataset_name or "the test set")
        cm = (confusion_matrix(video_labels, video_topk[:, 0], num_classes)
              if len(videos) and num_classes <= self._confusion_max_classes else None)
        self._write(metrics, per_class, cm, k, missing_videos)
        self._log(metrics, per_class, missing_videos)
        return {"video": metrics}

    def _per_class(self, labels: np.ndarray, top1: np.ndarray) -> dict[str, dict[str, float]]:
        return per_class_top1(labels, top1, self.class_names, "num_videos")

    def _write(self, metrics: dict, per_class: dict, cm: np.ndarray | None, k: int, missing: list[int]) -> None:
        if not self._output_dir:
            return
        record = {"dataset": self._dataset_name, **metrics, "top5_k": k, "views_per_video": self.views_per_video,
                  "classes": self.class_names, "per_class": per_class,
                  "missing_videos": [self.video_paths[i] for i in missing],
                  "confusion_matrix": cm.tolist() if cm is not None else None}
        path = os.path.join(self._output_dir, RESULTS_FILE)
        atomic_write_text(json.dumps(record, indent=1) + "\n", path)
        if cm is not None:
            write_confusion_png(cm, self.class_names, os.path.join(self._output_dir, CONFUSION_FILE),
                                title=f"{self._dataset_name}: video top-1 {metrics['top1']:.1f}%")
        logger.info("Wrote video-level results of %d videos to %s", int(metrics["num_videos"]), path)

    def _log(self, metrics: dict, per_class: dict, missing: list[int]) -> None:
        text = (f"Video accuracy (%) on {self._dataset_name} ({self.views_per_video} views per video):\n"
                f"{format_metrics_table(metrics, '.2f')}")
        if len(per_class) <= self._confusion_max_classes:
            text += "\nPer-class video top-1 (%):\n" + format_per_class_table(
                {name: v["top1"] for name, v in per_class.items()}, metric="top1", float_fmt=".2f")
        if missing:
            shown = ", ".join(self.video_paths[i] for i in missing[:5])
            text += f"\n{len(missing)} video(s) had no readable view and are not scored: {shown}"
        logger.info("%s", text)
