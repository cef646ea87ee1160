"""Loader plumbing every task shares: endless seeded training loaders, exact resume, skipped
samples, one-pass test loaders.

Conventions a task's dataset follows to use it:

- Training datasets are indexed by ``(index, seed)`` keys (from
  :class:`~gn_det.data.samplers.TrainingSampler`) and draw all augmentation randomness from a
  generator seeded with that key, so the sample stream is a pure function of the config's seed:
  resuming at micro-batch ``k`` (:class:`SkipFirst`) continues it exactly, whatever the number
  of workers.
- A sample that cannot be used and should not stop the epoch is returned as a
  :class:`SkippedSample`; :class:`SkipBadSamples` drops it from its batch, counts it, logs its
  name and keeps the list (``skipped``); the trainer polls that list, tags each entry with its
  iteration and writes the run's total to ``OUTPUT_DIR/skipped_samples.json``
  (:mod:`gn_det.engine.skipped`).
- Batches are lists of samples (:func:`list_collate`); models stack what they need.

:func:`build_train_loader` and :func:`build_test_loader` put these together.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from gn_det.data.samplers import GroupedBatchSampler, InferenceSampler, PlainBatchSampler, TrainingSampler

__all__ = ["SkippedSample", "SkipBadSamples", "SkipFirst", "ConcatDatasets", "list_collate", "loader_generator",
           "build_train_loader", "build_test_loader"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedSample:
    """Returned by a dataset instead of a sample it could not use (the loader drops and counts it).

    Attributes:
        file_name: the file (image, video) at fault.
        reason: why, in one line.
    """

    file_name: str
    reason: str


def list_collate(batch: list) -> list:
    """A batch is the list of its samples."""
    return batch


def loader_generator(seed: int) -> torch.Generator:
    """The generator a DataLoader draws its workers' base seed from.

    DataLoader draws that seed when iteration starts; drawing it from its own generator rather
    than the global RNG means starting a loader never shifts the training random stream (a
    resumed run restores that stream from its checkpoint and must continue it exactly).
    """
    return torch.Generator().manual_seed(max(int(seed), 0))


class ConcatDatasets(Dataset):
    """Datasets end to end; unlike torch's ConcatDataset it passes ``(index, seed)`` keys on."""

    def __init__(self, datasets: Sequence[Dataset]):
        if not datasets:
            raise ValueError("ConcatDatasets needs at least one dataset")
        self.datasets = list(datasets)
        self.ends = list(itertools.accumulate(len(d) for d in self.datasets))

    def __len__(self) -> int:
        return self.ends[-1]

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        which = bisect.bisect_right(self.ends, index)
        local = index - (self.ends[which - 1] if which else 0)
        return self.datasets[which][(local, seed) if seed is not None else local]


class SkipBadSamples:
    """Iterates a DataLoader, drops :class:`SkippedSample` markers (counted, logged, listed) and
    the batches they leave empty.

    Attributes:
        num_skipped: samples dropped so far.
        skipped: ``(file_name, reason)`` of each, in order.
    """

    def __init__(self, loader: Iterable[list]):
        self.loader = loader
        self.num_skipped = 0
        self.skipped: list[tuple[str, str]] = []

    def __iter__(self) -> Iterator[list]:
        try:
            for batch in self.loader:
                kept = []
                for s in batch:
                    if isinstance(s, SkippedSample):
                        self.num_skipped += 1
                        self.skipped.append((s.file_name, s.reason))
                        logger.warning("skipped bad sample (%d so far): %s", self.num_skipped, s.reason)
                    else:
                        kept.append(s)
                if kept:
                    yield kept
        except Exception as e:
            original = _worker_error(e)
            if original is None:
                raise
            raise original from e


    def __len__(self) -> int:  # test loaders only (the train sampler is endless)
        return len(self.loader)


def _worker_error(exc: Exception) -> Exception | None:
    """The error a DataLoader worker raised, with its own message again, or None if ``exc`` is not one.

    The DataLoader re-raises a worker's error as the same type with the message "Caught X in
    DataLoader worker process 0." and the worker's whole traceback; a bad image (DatasetError
    naming the file) then reads as that first line. The worker's traceback stays in the chain.
    """
    text = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else ""
    if not text.startswith("Caught ") or " in DataLoader worker process " not in text.split("\n", 1)[0]:
        return None
    # The traceback's last line: "[module.]X: message" (the messages this project raises are one line).
    last = text.rstrip().rpartition("\n")[2]
    name, sep, message = last.partition(": ")
    if not sep or name.rpartition(".")[2] != type(exc).__name__ or not message:
        return None
    try:
        return type(exc)(message)
    except Exception:  # a type that takes other arguments: keep torch's error
        return None


class SkipFirst:
    """A batch sampler without its first ``n`` batches (resuming at a known position)."""

    def __init__(self, batch_sampler: Iterable, n: int):
        self.batch_sampler, self.n = batch_sampler, n

    def __iter__(self):
        it = iter(self.batch_sampler)
        for _ in range(self.n):
            next(it)
        return it


def build_train_loader(dataset: Dataset, micro_batch_size: int, *, seed: int, num_workers: int,
                       group_ids: Sequence[int] | None = None, skip_batches: int = 0,
                       collate_fn: Callable[[list], Any] = list_collate) -> SkipBadSamples:
    """An endless loader of this rank's micro-batches of ``dataset``.

    Args:
        dataset: indexed by ``(index, seed)`` keys (see the module docstring).
        micro_batch_size: samples per batch on this rank.
        seed: the run's seed (cfg.SEED); < 0 draws a random seed shared by all ranks.
        num_workers: DataLoader worker processes (0: load in this process).
        group_ids: one group id per sample (aspect-ratio groups): a batch holds one group only.
        skip_batches: skip this many micro-batches first (exact resume).
        collate_fn: how a list of samples becomes a batch (default: the list itself).
    """
    sampler = TrainingSampler(len(dataset), shuffle=True, seed=seed if seed >= 0 else None)
    if group_ids is not None:
        batch_sampler = GroupedBatchSampler(sampler, group_ids, micro_batch_size)
    else:
        batch_sampler = PlainBatchSampler(sampler, micro_batch_size)
    if skip_batches:
        batch_sampler = SkipFirst(batch_sampler, skip_batches)
    loader = DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=collate_fn,
                        generator=loader_generator(seed))
    return SkipBadSamples(loader)


def build_test_loader(dataset: Dataset, *, seed: int, num_workers: int, batch_size: int = 1,
                      collate_fn: Callable[[list], Any] = list_collate) -> SkipBadSamples:
    """One pass over this rank's shard of ``dataset`` in order (each sample on exactly one rank);
    the evaluator gathers the shards."""
    loader = DataLoader(dataset, batch_size=batch_size, sampler=InferenceSampler(len(dataset)),
                        num_workers=num_workers, collate_fn=collate_fn, generator=loader_generator(seed))
    return SkipBadSamples(loader)
