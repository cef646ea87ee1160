"""Training events: a per-iteration scalar store and the writers that publish it.

* :class:`EventStorage` keeps every scalar's history (fvcore ``HistoryBuffer``);
* :class:`JSONWriter` appends one JSON dict per iteration to ``metrics.json`` (detectron2's
  convention: ``{"iteration": 19, "loss_cls": ..., "lr": ..., "time": ...}``). Values are those
  of that iteration (losses averaged over ranks and micro-batches), not smoothed, so runs can be
  compared line by line;
* :class:`TensorboardWriter` writes the same scalars as TensorBoard events;
* :class:`ConsoleWriter` logs iteration, losses (median of the last 20), lr, time/iter, ETA.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections import defaultdict

import torch
from fvcore.common.history_buffer import HistoryBuffer

__all__ = ["EventStorage", "get_event_storage", "EventWriter", "JSONWriter", "TensorboardWriter",
           "ConsoleWriter", "trim_metrics_file"]

_CURRENT_STORAGE: list["EventStorage"] = []


def get_event_storage() -> "EventStorage":
    """The storage of the training loop now running (inside ``with EventStorage(...)``)."""
    if not _CURRENT_STORAGE:
        raise RuntimeError("get_event_storage() must be called inside a 'with EventStorage(...)' block")
    return _CURRENT_STORAGE[-1]


class EventStorage:
    """Scalars by name, each with its history of (value, iteration)."""

    def __init__(self, start_iter: int = 0):
        self.iter = start_iter
        self._history: dict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._latest: dict[str, tuple[float, int]] = {}

    def put_scalar(self, name: str, value: float | torch.Tensor) -> None:
        value = float(value.detach().item() if isinstance(value, torch.Tensor) else value)
        self._history[name].update(value, self.iter)
        self._latest[name] = (value, self.iter)

    def put_scalars(self, **kwargs: float | torch.Tensor) -> None:
        for name, value in kwargs.items():
            self.put_scalar(name, value)

    def history(self, name: str) -> HistoryBuffer:
        if name not in self._history:
            raise KeyError(f"No scalar named {name!r} was recorded")
        return self._history[name]

    def histories(self) -> dict[str, HistoryBuffer]:
        return dict(self._history)

    def latest(self) -> dict[str, tuple[float, int]]:
        """``{name: (value, iteration)}`` of each scalar's newest value."""
        return dict(self._latest)

    def __enter__(self) -> "EventStorage":
        _CURRENT_STORAGE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        assert _CURRENT_STORAGE[-1] is self
        _CURRENT_STORAGE.pop()


class EventWriter:
    """Publishes what :class:`EventStorage` holds; ``write`` is called every LOG_PERIOD iterations."""

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _NewScalarsWriter(EventWriter):
    """A writer that publishes each scalar value once: it tracks, per scalar, the newest
    iteration already written."""

    def __init__(self) -> None:
        self._written: dict[str, int] = {}

    def _new_by_iteration(self) -> dict[int, dict[str, float]]:
        by_iter: dict[int, dict[str, float]] = defaultdict(dict)
        for name, (value, it) in get_event_storage().latest().items():
            if it > self._written.get(name, -1):
                by_iter[it][name] = value
                self._written[name] = it
        return dict(sorted(by_iter.items()))


class JSONWriter(_NewScalarsWriter):
    """Appends one line per iteration to ``json_file``, which reads as one run.

    Args:
        json_file: the metrics.json path.
        start_iter: the iteration this run starts at. Records of iterations >= ``start_iter``
            already in the file (written by a run that stopped after its last checkpoint, or by an
            earlier run in the same folder) are dropped first, and a cut-off last line (a kill in
            the middle of a write) is removed, so the file never holds an iteration twice.
            ``None``: append as is.
    """

    def __init__(self, json_file: str, start_iter: int | None = 0):
        super().__init__()
        if start_iter is not None and os.path.isfile(json_file):
            trim_metrics_file(json_file, start_iter)
        self._file = open(json_file, "a", encoding="utf-8")

    def write(self) -> None:
        for it, scalars in self._new_by_iteration().items():
            self._file.write(json.dumps({"iteration": it, **scalars}, sort_keys=False) + "\n")
        # flush, not fsync: a killed process loses nothing, and the training loop does not wait
        # on the disk every LOG_PERIOD (resume drops lines past the checkpoint anyway).
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def trim_metrics_file(json_file: str, start_iter: int) -> tuple[int, bool]:
    """Drop the records of iterations >= ``start_iter`` from a metrics.json, and a cut-off last
    line (no newline and not valid JSON); rewrites the file atomically if anything changed.

    Lines that are complete but cannot be read are kept (the file is the user's record).

    Returns:
        (records dropped, whether a cut-off last line was removed).
    """
    from .io import atomic_write_text

    with open(json_file, encoding="utf-8", errors="replace") as f:
        lines = f.readlines()
    kept, dropped, cut = [], 0, False
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
            if i == len(lines) - 1 and not line.endswith("\n"):
                cut = True
                continue
        if isinstance(record, dict) and isinstance(record.get("iteration"), int) \
                and record["iteration"] >= start_iter:
            dropped += 1
            continue
        if line.strip():
            kept.append(line if line.endswith("\n") else line + "\n")
    text = "".join(kept)
    if text != "".join(lines):
        atomic_write_text(text, json_file)
    if dropped or cut:
        done = ([f"dropped {dropped} record(s) of iterations >= {start_iter}"] if dropped else []) + \
            (["removed a cut-off last line"] if cut else [])
        logging.getLogger(__name__).info("%s: %s, so it reads as one run continuing at iteration %d",
                                         json_file, " and ".join(done), start_iter)
    return dropped, cut


class TensorboardWriter(_NewScalarsWriter):
    """TensorBoard event files under ``log_dir`` (torch.utils.tensorboard).

    Args:
        log_dir: the folder (OUTPUT_DIR).
        purge_step: the iteration this run starts at: events of steps >= ``purge_step`` that
            earlier event files in ``log_dir`` hold are hidden by TensorBoard (``SummaryWriter``'s
            ``purge_step``), so a resumed run shows as one curve. ``None``: keep everything.
    """

    def __init__(self, log_dir: str, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter  # slow import: only when used

        super().__init__()
        self._writer = SummaryWriter(log_dir, purge_step=purge_step)

    def write(self) -> None:
        for it, scalars in self._new_by_iteration().items():
            for name, value in scalars.items():
                self._writer.add_scalar(name, value, it)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class ConsoleWriter(EventWriter):
    """Logs ``iter``, ETA, losses (median over ``window`` iterations), time/iter, data time, lr."""

    def __init__(self, max_iter: int, window: int = 20):
        self.max_iter = max_iter
        self.window = window
        self.logger = logging.getLogger("gn_det.train")
        self._last_printed: int | None = None

    def write(self) -> None:
        storage = get_event_storage()
        latest = storage.latest()
        if "total_loss" not in latest:
            return
        it = latest["total_loss"][1]
        if it == self._last_printed:
            return
        self._last_printed = it
        h = storage.histories()
        sec = h["time"].median(self.window) if "time" in h else None
        parts = [f"iter: {it + 1}/{self.max_iter}"]
        if sec is not None:
            parts.insert(0, f"eta: {datetime.timedelta(seconds=int(sec * (self.max_iter - it - 1)))}")
        parts += [f"{k}: {h[k].median(self.window):.4g}" for k in sorted(h)
                  if k.startswith("loss") or k == "total_loss"]
        if sec is not None:
            parts.append(f"time: {sec:.4f}")
        if "data_time" in h:
            parts.append(f"data_time: {h['data_time'].median(self.window):.4f}")
        if "lr" in latest:
            parts.append(f"lr: {latest['lr'][0]:.5g}")
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            parts.append(f"max_mem: {torch.cuda.max_memory_allocated() / 2**20:.0f}M")
        self.logger.info("  ".join(parts))
