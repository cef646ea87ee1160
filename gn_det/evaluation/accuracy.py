"""Accuracy of class predictions, shared by the image and the video classification evaluators."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["topk_accuracy", "per_class_top1"]


def topk_accuracy(topk: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Top-1 and top-k accuracy (%) from ``topk`` (N, k) predicted classes, best first."""
    if len(labels) == 0:
        return float("nan"), float("nan")
    hits = topk == labels[:, None]
    return float(hits[:, 0].mean() * 100), float(hits.any(axis=1).mean() * 100)


def per_class_top1(labels: np.ndarray, top1: np.ndarray, class_names: Sequence[str],
                   count_key: str) -> dict[str, dict[str, float]]:
    """``{class: {count_key: samples of the class, "top1": accuracy % (nan without samples)}}``."""
    out = {}
    for i, name in enumerate(class_names):
        mine = labels == i
        n = int(mine.sum())
        out[name] = {count_key: n, "top1": float((top1[mine] == i).mean() * 100) if n else float("nan")}
    return out
