"""Samplers: seeded endless shuffling, rank sharding, aspect grouping, test-set sharding."""

import itertools

import pytest

from gn_det.data.samplers import GroupedBatchSampler, InferenceSampler, PlainBatchSampler, TrainingSampler


def _take(it, n):
    return list(itertools.islice(iter(it), n))


def test_training_sampler_is_seeded_and_covers_each_epoch():
    a = _take(TrainingSampler(10, seed=3, rank=0, world_size=1), 30)
    b = _take(TrainingSampler(10, seed=3, rank=0, world_size=1), 30)
    c = _take(TrainingSampler(10, seed=4, rank=0, world_size=1), 30)
    assert a == b and a != c
    indices = [i for i, _ in a]
    for epoch in range(3):
        assert sorted(indices[10 * epoch:10 * epoch + 10]) == list(range(10))
    assert indices[:10] != indices[10:20]  # reshuffled each epoch
    assert len({s for _, s in a}) == 30  # one augmentation seed per draw


@pytest.mark.parametrize("size", [9, 10])
def test_two_ranks_take_disjoint_parts_of_each_global_batch(size):
    per_rank, world = 2, 2
    ranks = [TrainingSampler(size, seed=0, rank=r, world_size=world) for r in range(world)]
    streams = [_take(PlainBatchSampler(s, per_rank), 20) for s in ranks]
    single = _take(TrainingSampler(size, seed=0, rank=0, world_size=1), 20 * per_rank * world)
    for step in range(20):
        parts = [streams[r][step] for r in range(world)]
        global_batch = single[step * per_rank * world:(step + 1) * per_rank * world]
        # Together the ranks' parts are exactly the global batch, without overlap.
        assert sorted(parts[0] + parts[1]) == sorted(global_batch)
        assert not set(parts[0]) & set(parts[1])


def test_aspect_grouping_never_mixes_orientations():
    groups = [0, 1, 0, 0, 1, 1, 0, 1, 0, 0, 1]
    sampler = TrainingSampler(len(groups), seed=1, rank=0, world_size=1)
    batches = _take(GroupedBatchSampler(sampler, groups, batch_size=3), 40)
    assert all(len(b) == 3 and len({groups[i] for i, _ in b}) == 1 for b in batches)
    assert {groups[b[0][0]] for b in batches} == {0, 1}
    # Nothing lost or reordered: per group, the batches are the stream's items of that group.
    stream = _take(sampler, 200)
    for g in (0, 1):
        drawn = [item for b in batches if groups[b[0][0]] == g for item in b]
        assert drawn == [item for item in stream if groups[item[0]] == g][:len(drawn)]


@pytest.mark.parametrize("size, world", [(10, 3), (2, 4), (12, 2)])
def test_inference_shards_are_disjoint_and_cover(size, world):
    shards = [list(InferenceSampler(size, rank=r, world_size=world)) for r in range(world)]
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(size)) and len(flat) == size
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
