"""Clip sampling: exact frame indices for training and test clips, too-short policies."""

import numpy as np
import pytest

from gn_det.data.video import sampling
from gn_det.data.video.sampling import TooShortError, required_frames, train_clip_indices


def test_required_frames_is_the_span_of_the_clip():
    assert required_frames(8, 8) == 57
    assert required_frames(32, 2) == 63
    assert required_frames(1, 5) == 1
    with pytest.raises(ValueError):
        required_frames(0, 2)


def test_train_indices_exact():
    # span 7 in 20 frames: starts 0..13; default_rng(0).integers(0, 14) is 11.
    idx = train_clip_indices(20, 4, 2, np.random.default_rng(0))
    assert idx.tolist() == [11, 13, 15, 17]
    assert idx.dtype == np.int64
    # The start is one integers(0, N - span + 1) draw of the given generator.
    for seed in range(20):
        start = int(np.random.default_rng(seed).integers(0, 20 - 7 + 1))
        assert train_clip_indices(20, 4, 2, np.random.default_rng(seed)).tolist() == [start + 2 * k for k in range(4)]


def test_train_start_range():
    rng = np.random.default_rng(1)
    clips = [train_clip_indices(10, 3, 2, rng) for _ in range(400)]  # span 5: starts 0..5
    assert {int(c[0]) for c in clips} == set(range(6))
    assert max(int(c[-1]) for c in clips) == 9


def test_exact_fit_has_a_single_start():
    assert train_clip_indices(7, 4, 2, np.random.default_rng(3)).tolist() == [0, 2, 4, 6]


def test_too_short_clamp_and_skip():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert train_clip_indices(5, 4, 2, rng, "clamp").tolist() == [0, 2, 4, 4]
    assert rng.bit_generator.state == state  # no draw when clamped
    assert sampling.test_clip_indices(3, 4, 3, 0, 2, "clamp").tolist() == [0, 2, 2, 2]
    with pytest.raises(TooShortError, match="5 frames, a clip needs 7"):
        train_clip_indices(5, 4, 2, rng, "skip")
    with pytest.raises(TooShortError):
        sampling.test_clip_indices(5, 4, 2, 1, 3, "skip")
    for policy in ("clamp", "skip"):  # no frame at all: always an error
        with pytest.raises(TooShortError):
            train_clip_indices(0, 4, 2, rng, policy)
    with pytest.raises(ValueError, match="too_short"):
        train_clip_indices(50, 4, 2, rng, "pad")


def test_test_indices_exact():
    # 100 frames, 8 frames at stride 2 (span 15): starts spread over 0..85.
    assert [sampling.test_clip_indices(100, 8, 2, k, 3)[0] for k in range(3)] == [0, 42, 85]
    assert sampling.test_clip_indices(100, 8, 2, 2, 3).tolist() == [85, 87, 89, 91, 93, 95, 97, 99]
    assert sampling.test_clip_indices(100, 8, 2, 0, 1).tolist() == [42 + 2 * k for k in range(8)]
    # 10 views (PySlowFast TEST.NUM_ENSEMBLE_VIEWS) over 300 frames, 32x2 (span 63): delta 237.
    starts = [int(sampling.test_clip_indices(300, 32, 2, k, 10)[0]) for k in range(10)]
    assert starts == [0, 26, 52, 79, 105, 131, 158, 184, 210, 237]
    with pytest.raises(ValueError, match="clip_index"):
        sampling.test_clip_indices(100, 8, 2, 3, 3)


def test_pure_functions():
    a = train_clip_indices(57, 8, 8, np.random.default_rng([5, 9]))
    b = train_clip_indices(57, 8, 8, np.random.default_rng([5, 9]))
    assert a.tolist() == b.tolist() == list(range(0, 57, 8))
    err = TooShortError(3, 7)
    import pickle
    assert str(pickle.loads(pickle.dumps(err))) == str(err)
