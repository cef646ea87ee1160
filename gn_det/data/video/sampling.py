"""Which frames of a video make a clip: pure functions of the numbers they are given.

A clip is ``clip_len`` frames taken every ``stride`` frames (PySlowFast's DATA.NUM_FRAMES and
DATA.SAMPLING_RATE), so it spans ``(clip_len - 1) * stride + 1`` frames of the video
(:func:`required_frames`): the last index touched is ``start + (clip_len - 1) * stride``.

- Training (:func:`train_clip_indices`): the start is drawn uniformly from every start that keeps
  the clip inside the video, with one ``rng.integers`` call on the given
  :class:`numpy.random.Generator` (the only randomness here).
- Testing (:func:`test_clip_indices`): ``num_clips`` starts spread evenly from the first possible
  start (0) to the last one (``num_frames - span``), both included, start ``k`` being
  ``floor(k * (num_frames - span) / (num_clips - 1))``; a single clip is centred
  (``(num_frames - span) // 2``). This is PySlowFast's TEST.NUM_ENSEMBLE_VIEWS.

A video with fewer than :func:`required_frames` frames is "too short". With ``too_short="clamp"``
the clip starts at frame 0 and indices past the end repeat the last frame; with ``"skip"``
:class:`TooShortError` is raised so the caller can replace or skip the video. A video with no
frames at all always raises.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TooShortError", "TOO_SHORT_POLICIES", "required_frames", "train_clip_indices",
           "test_clip_indices"]

TOO_SHORT_POLICIES = ("clamp", "skip")


class TooShortError(ValueError):
    """The video has fewer frames than a clip needs (and the policy is ``"skip"``)."""

    def __init__(self, num_frames: int, needed: int):
        self.num_frames, self.needed = int(num_frames), int(needed)
        super().__init__(f"too short: {self.num_frames} frames, a clip needs {self.needed}")

    def __reduce__(self):  # picklable across DataLoader / process-pool workers
        return (type(self), (self.num_frames, self.needed))


def required_frames(clip_len: int, stride: int) -> int:
    """Frames a clip of ``clip_len`` frames at ``stride`` spans: ``(clip_len - 1) * stride + 1``."""
    _check_clip(clip_len, stride)
    return (clip_len - 1) * stride + 1


def _check_clip(clip_len: int, stride: int) -> None:
    if int(clip_len) < 1 or int(stride) < 1:
        raise ValueError(f"clip_len and stride must be >= 1, got clip_len={clip_len}, stride={stride}")


def _clip(num_frames: int, clip_len: int, stride: int, start: int) -> np.ndarray:
    return np.minimum(start + np.arange(clip_len, dtype=np.int64) * stride, num_frames - 1)


def _fits(num_frames: int, clip_len: int, stride: int, too_short: str) -> bool:
    """True if a whole clip fits; False if it must be clamped; raises for "skip"/no frames."""
    if too_short not in TOO_SHORT_POLICIES:
        raise ValueError(f"too_short must be one of {TOO_SHORT_POLICIES}, got {too_short!r}")
    needed = required_frames(clip_len, stride)
    if num_frames <= 0:
        raise TooShortError(num_frames, needed)
    if num_frames >= needed:
        return True
    if too_short == "skip":
        raise TooShortError(num_frames, needed)
    return False


def train_clip_indices(num_frames: int, clip_len: int, stride: int, rng: np.random.Generator,
                       too_short: str = "clamp") -> np.ndarray:
    """Frame indices (int64, length ``clip_len``) of a random training clip.

    The start is ``rng.integers(0, num_frames - span + 1)`` (one draw; none when the video is
    too short and clamped, the start then being 0).

    Raises:
        TooShortError: the video is too short and ``too_short == "skip"``, or has no frames.
    """
    num_frames, clip_len, stride = int(num_frames), int(clip_len), int(stride)
    if not _fits(num_frames, clip_len, stride, too_short):
        return _clip(num_frames, clip_len, stride, 0)
    start = int(rng.integers(0, num_frames - required_frames(clip_len, stride) + 1))
    return _clip(num_frames, clip_len, stride, start)


def test_clip_indices(num_frames: int, clip_len: int, stride: int, clip_index: int, num_clips: int,
                      too_short: str = "clamp") -> np.ndarray:
    """Frame indices of test clip ``clip_index`` of ``num_clips`` evenly spread clips.

    Raises:
        TooShortError: the video is too short and ``too_short == "skip"``, or has no frames.
        ValueError: ``clip_index`` not in ``[0, num_clips)``.
    """
    num_frames, clip_len, stride = int(num_frames), int(clip_len), int(stride)
    if num_clips < 1 or not 0 <= clip_index < num_clips:
        raise ValueError(f"clip_index must be in [0, {num_clips}), got {clip_index}")
    if not _fits(num_frames, clip_len, stride, too_short):
        return _clip(num_frames, clip_len, stride, 0)
    delta = num_frames - required_frames(clip_len, stride)
    start = delta // 2 if num_clips == 1 else (clip_index * delta) // (num_clips - 1)
    return _clip(num_frames, clip_len, stride, start)


test_clip_indices.__test__ = False  # a library function, not a pytest test when imported by name
