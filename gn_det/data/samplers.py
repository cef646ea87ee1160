"""Samplers: endless shuffled training stream sharded across ranks, aspect-ratio grouped
batches, and a duplicate-free sharding of a test set.

The training stream is one global sequence of (index, augmentation seed) pairs, the same on
every rank (one shared seed); rank r takes positions r, r + world, r + 2 world, ... so the
ranks' parts of each global batch are disjoint. The augmentation seed is a function of the
global position only, so a sample is augmented the same way whatever the worker count.
"""

from __future__ import annotations

import itertools
from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from gn_det.utils import comm

__all__ = [
    "shared_random_seed",
    "TrainingSampler",
    "GroupedBatchSampler",
    "PlainBatchSampler",
    "InferenceSampler",
]

_SEED_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads (seed, position) into seeds


def shared_random_seed() -> int:
    """A random seed, identical on all ranks (rank 0's draw, broadcast)."""
    seed = int(torch.randint(2**31, (1,)))
    return int(comm.broadcast_object(seed, src=0))


class TrainingSampler(Sampler):
    """Endless stream of ``(index, augmentation_seed)`` for this rank.

    Args:
        size: dataset length.
        shuffle: new random permutation each pass over the data (else 0..size-1 in order).
        seed: shared by all ranks; None draws a shared random one.
        rank, world_size: default to torch.distributed's (0 and 1 when not distributed).
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int | None = None,
                 rank: int | None = None, world_size: int | None = None):
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset, got size {size}")
        self.size, self.shuffle = int(size), shuffle
        self.seed = int(seed) if seed is not None else shared_random_seed()
        self.rank = comm.get_rank() if rank is None else int(rank)
        self.world_size = comm.get_world_size() if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} out of range for world size {self.world_size}")

    def _global_stream(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed)
        while True:
            order = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
            yield from order.tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        stream = itertools.islice(enumerate(self._global_stream()), self.rank, None, self.world_size)
        for position, index in stream:
            yield index, (self.seed * _SEED_MIX + position) % (2**63)


class GroupedBatchSampler(Sampler):
    """Batches whose images all share a group (landscape 0 or portrait 1).

    Keeps one buffer per group and emits a buffer when it holds ``batch_size`` items, so the
    padded batch tensor wastes little space.

    Args:
        sampler: endless iterable of ``(index, seed)`` (a :class:`TrainingSampler`).
        group_ids: group of each dataset index.
        batch_size: samples per batch.
    """

    def __init__(self, sampler: Sampler, group_ids: Sequence[int], batch_size: int):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler, self.group_ids, self.batch_size = sampler, list(group_ids), int(batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        buffers: dict[int, list] = {}
        for item in self.sampler:
            buf = buffers.setdefault(self.group_ids[item[0]], [])
            buf.append(item)
            if len(buf) == self.batch_size:
                yield buf[:]
                buf.clear()


class PlainBatchSampler(Sampler):
    """Consecutive items of an endless sampler, ``batch_size`` at a time (no grouping)."""

    def __init__(self, sampler: Sampler, batch_size: int):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler, self.batch_size = sampler, int(batch_size)

    def __iter__(self) -> Iterator[list]:
        it = iter(self.sampler)
        while batch := list(itertools.islice(it, self.batch_size)):
            yield batch


class InferenceSampler(Sampler):
    """This rank's contiguous shard of ``range(size)``: shards are disjoint and cover all.

    The first ``size % world_size`` ranks get one extra index, so no index is repeated
    (a repeated image would be counted twice by the evaluator).
    """

    def __init__(self, size: int, rank: int | None = None, world_size: int | None = None):
        self.size = int(size)
        self.rank = comm.get_rank() if rank is None else int(rank)
        self.world_size = comm.get_world_size() if world_size is None else int(world_size)
        per, extra = divmod(self.size, self.world_size)
        self.begin = self.rank * per + min(self.rank, extra)
        self.end = self.begin + per + (1 if self.rank < extra else 0)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.begin, self.end))

    def __len__(self) -> int:
        return self.end - self.begin
