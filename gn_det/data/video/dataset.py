"""A map-style dataset of video clips for 3D-conv classification (Kinetics-style).

Keys are ``index`` or ``(index, seed)`` (what :class:`gn_det.data.samplers.TrainingSampler`
yields). All randomness of a sample comes from ``np.random.default_rng([seed, index])``
(``[index]`` when the seed is None), used in this order: the clip start, then the transform's
scale/crop/flip (:class:`~gn_det.data.video.transforms.TrainClipTransform`). If the video is bad,
replacement ``k`` (1, 2, ...) uses ``default_rng([seed, index, k])``: first the replacement
index, then its clip and augmentation. So a sample is a pure function of its key, whatever the
worker count or what the process saw before: resuming at a known position gives the same data.

Training: ``len(dataset)`` is the number of videos and a sample is::

    {"video": float32 (3, T, crop, crop), "label": int, "video_index": int, "path": str,
     "replaced": [(path, reason), ...]}

A missing, empty, truncated, undecodable or (with ``too_short="skip"``) too-short video never
raises: the dataset draws a replacement index from the key's generator (deterministic: the same
key always gets the same replacement), records ``(path, reason)`` in ``bad_videos`` (this
process's copy: DataLoader workers have their own) and returns the failures in the sample's
``"replaced"`` list, so the main process can log and count them. After ``max_retries``
replacements it raises :class:`~gn_det.data.coco_dataset.DatasetError` listing the bad files.
Known-bad videos are not decoded again in the same process.

Testing: one item per view, ``len(dataset) = videos x num_ensemble_views x num_spatial_crops``,
item ``i`` being video ``i // views``, view ``i % views`` = temporal clip ``view // crops``,
spatial crop ``view % crops``::

    {"video", "label", "video_index", "path", "view", "temporal_index", "spatial_index",
     "replaced": []}

or, for a bad video, a :class:`SkippedView` (a :class:`gn_det.data.common.SkippedSample` that also
names the video index, view and label): the shared loader plumbing
(:class:`~gn_det.data.common.SkipBadSamples`) drops it from its batch, counts it and logs its file,
and the evaluator, which knows how many views each video has, reports the view as missing: it is
never silently lost. The last decoded temporal clip is cached, so the spatial crops of one clip
(consecutive items) decode the video once.

:func:`collate_video_samples` batches samples of either kind (for callers that do not use
:class:`~gn_det.data.common.SkipBadSamples`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from gn_det.data.coco_dataset import DatasetError
from gn_det.data.common import SkippedSample
from gn_det.data.video.annotations import VideoRecord
from gn_det.data.video.decode import VideoDecodeError, decode_clip
from gn_det.data.video.sampling import TOO_SHORT_POLICIES, TooShortError, test_clip_indices, train_clip_indices
from gn_det.data.video.transforms import (DEFAULT_MEAN, DEFAULT_STD, TestClipTransform, TrainClipTransform,
                                          make_flip_index_map)

__all__ = ["VideoClipDataset", "SkippedView", "collate_video_samples"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedView(SkippedSample):
    """A test view of a video that cannot be read (``reason`` names the file and the failure).

    Attributes:
        video_index, view, label: which view of which video was lost, and the video's class.
    """

    video_index: int = -1
    view: int = -1
    label: int = -1


def _key_rng(index: int, seed: int | None, attempt: int = 0) -> np.random.Generator:
    """``default_rng([seed, index])`` (``[index]`` without a seed), ``+ [attempt]`` for replacements."""
    entropy = [index] if seed is None else [int(seed) % 2**64, index]
    return np.random.default_rng(entropy + ([attempt] if attempt else []))


class VideoClipDataset(Dataset):
    """Clips of the videos in ``records`` (see the module docstring for keys and samples).

    Args:
        records: the videos (e.g. ``load_video_list(...).records``).
        classes: class names; a record's label must be one of them.
        num_frames, sampling_rate: T frames every ``sampling_rate`` frames.
        train: training (random clip and augmentation, bad videos replaced) or test (views).
        jitter_scales, crop_size: training short-side range and crop.
        test_crop_size: test short side and crop.
        num_ensemble_views, num_spatial_crops: test temporal clips and spatial crops per video.
        mean, std: per-channel normalization (RGB, of x / 255).
        too_short: ``"clamp"`` (repeat the last frame) or ``"skip"`` (treat as bad).
        flip_label_map: class name -> class name after a horizontal flip (made symmetric).
        random_flip: flip training clips left-right with probability 1/2 (PySlowFast's DATA.RANDOM_FLIP).
        max_retries: training replacements tried before giving up.
        decode_threads: decoder threads per video (1 suits DataLoader workers).
        name: for messages.
    """

    def __init__(self, records: Sequence[VideoRecord], classes: Sequence[str], *, num_frames: int = 8,
                 sampling_rate: int = 8, train: bool = True, jitter_scales: Sequence[int] = (256, 320),
                 crop_size: int = 224, test_crop_size: int = 256, num_ensemble_views: int = 10,
                 num_spatial_crops: int = 3, mean: Sequence[float] = DEFAULT_MEAN,
                 std: Sequence[float] = DEFAULT_STD, too_short: str = "clamp",
                 flip_label_map: Mapping[str, str] | None = None, random_flip: bool = True, max_retries: int = 10,
                 decode_threads: int = 1, name: str = "videos") -> None:
        if too_short not in TOO_SHORT_POLICIES:
            raise ValueError(f"too_short must be one of {TOO_SHORT_POLICIES}, got {too_short!r}")
        if not records:
            raise ValueError(f"{name}: no videos")
        if num_frames < 1 or sampling_rate < 1 or num_ensemble_views < 1 or num_spatial_crops < 1:
            raise ValueError("num_frames, sampling_rate, num_ensemble_views and num_spatial_crops must be >= 1")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.name = name
        self.classes = [str(c) for c in classes]
        class_index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({r.label for r in records if r.label not in class_index})
        if unknown:
            raise ValueError(f"{name}: label(s) {unknown[:5]} are not among the {len(self.classes)} classes")
        self.paths = [r.path for r in records]
        self.labels = np.asarray([class_index[r.label] for r in records], dtype=np.int64)
        self.num_frames, self.sampling_rate = int(num_frames), int(sampling_rate)
        self.train, self.too_short, self.max_retries = bool(train), too_short, int(max_retries)
        self.num_ensemble_views, self.num_spatial_crops = int(num_ensemble_views), int(num_spatial_crops)
        self.decode_threads = int(decode_threads)
        self.flip_index_map = make_flip_index_map(flip_label_map, self.classes)
        if self.train:
            self.transform = TrainClipTransform(jitter_scales, crop_size, mean, std, flip=random_flip)
        else:
            self.transform = TestClipTransform(test_crop_size, num_spatial_crops, mean, std)
        self.bad_videos: list[tuple[str, str]] = []  # (path, reason), first failure of each video
        self._bad: dict[int, str] = {}
        self._cache: tuple[tuple[int, int], torch.Tensor] | None = None

    # ------------------------------------------------------------------ sizes
    @property
    def num_videos(self) -> int:
        return len(self.paths)

    @property
    def views_per_video(self) -> int:
        return self.num_ensemble_views * self.num_spatial_crops

    def __len__(self) -> int:
        return self.num_videos if self.train else self.num_videos * self.views_per_video

    # ------------------------------------------------------------------ access
    def __getitem__(self, key: int | tuple[int, int | None]) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range [0, {len(self)})")
        return self._train_item(index, seed) if self.train else self._test_item(index)

    def _mark_bad(self, video_index: int, reason: str) -> None:
        if video_index not in self._bad:
            self._bad[video_index] = reason
            self.bad_videos.append((self.paths[video_index], reason))
            logger.warning("%s: bad video %s: %s", self.name, self.paths[video_index], reason)

    def _frames(self, video_index: int, choose) -> torch.Tensor:
        """Decoded frames; on any failure the video is remembered as bad and VideoDecodeError raised."""
        if video_index in self._bad:
            raise VideoDecodeError(self.paths[video_index], self._bad[video_index])
        try:
            frames, _, _ = decode_clip(self.paths[video_index], choose, threads=self.decode_threads)
            return frames
        except (VideoDecodeError, TooShortError) as e:
            reason = e.reason if isinstance(e, VideoDecodeError) else str(e)
        except Exception as e:  # anything else a strange file makes the decoder do: still one bad video
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            reason = f"decoding failed ({type(e).__name__}: {first})"
        self._mark_bad(video_index, reason)
        raise VideoDecodeError(self.paths[video_index], reason)

    def _train_item(self, index: int, seed: int | None) -> dict[str, Any]:
        replaced: list[tuple[str, str]] = []
        current, rng = index, _key_rng(index, seed)
        for attempt in range(1, self.max_retries + 2):
            try:
                frames = self._frames(current, lambda n: train_clip_indices(
                    n, self.num_frames, self.sampling_rate, rng, self.too_short))
            except VideoDecodeError as e:
                replaced.append((e.path, e.reason))
                # A fresh generator per attempt: the replacement does not depend on how far the
                # failed try got (a known-bad video is not even opened again).
                rng = _key_rng(index, seed, attempt)
                current = int(rng.integers(self.num_videos))
                continue
            video, flipped = self.transform(frames, rng)
            label = int(self.labels[current])
            if flipped:
                label = self.flip_index_map.get(label, label)
            return {"video": video, "label": label, "video_index": current, "path": self.paths[current],
                    "replaced": replaced}
        listed = "; ".join(f"{p}: {r}" for p, r in replaced[:5])
        raise DatasetError(
            f"{self.name}: no usable video after {self.max_retries + 1} tries starting at index {index} "
            f"({listed}). Run gn-det-check-videos on the list to find and drop the bad files")

    def _test_item(self, index: int) -> dict[str, Any] | SkippedView:
        video_index, view = divmod(index, self.views_per_video)
        temporal, spatial = divmod(view, self.num_spatial_crops)
        base = {"label": int(self.labels[video_index]), "video_index": video_index, "path": self.paths[video_index],
                "view": view, "temporal_index": temporal, "spatial_index": spatial}
        if self._cache is not None and self._cache[0] == (video_index, temporal):
            resized = self._cache[1]
        else:
            try:
                frames = self._frames(video_index, lambda n: test_clip_indices(
                    n, self.num_frames, self.sampling_rate, temporal, self.num_ensemble_views, self.too_short))
            except VideoDecodeError as e:
                return SkippedView(e.path, f"{self.name}: video {e.path}, view {view}: {e.reason}",
                                   video_index=video_index, view=view, label=base["label"])
            # The spatial crops of a clip come in a row (the test loader keeps order): decode and
            # resize once for all of them.
            resized = self.transform.resize(frames)
            self._cache = ((video_index, temporal), resized)
        return {"video": self.transform.crop(resized, spatial), **base, "replaced": []}


def collate_video_samples(samples: Sequence[dict[str, Any] | SkippedSample]) -> dict[str, Any]:
    """Batch samples of :class:`VideoClipDataset`; skipped test views are set apart.

    Returns:
        ``{"video": float (B, 3, T, H, W) (empty (0,) tensor when B == 0), "label": int64 (B,),
        "video_index": int64 (B,), "path": [B], "view"/"temporal_index"/"spatial_index": int64 (B,)
        (test samples), "replaced": [(path, reason), ...] of all samples,
        "skipped": [{"path", "reason", "video_index", "view", "label"}, ...]}``
    """
    good = [s for s in samples if not isinstance(s, SkippedSample)]
    out: dict[str, Any] = {
        "video": torch.stack([s["video"] for s in good]) if good else torch.empty(0),
        "label": torch.tensor([s["label"] for s in good], dtype=torch.int64),
        "video_index": torch.tensor([s["video_index"] for s in good], dtype=torch.int64),
        "path": [s["path"] for s in good],
        "replaced": [r for s in good for r in s.get("replaced", [])],
        "skipped": [{"path": s.file_name, "reason": s.reason, "video_index": getattr(s, "video_index", -1),
                     "view": getattr(s, "view", -1), "label": getattr(s, "label", -1)}
                    for s in samples if isinstance(s, SkippedSample)],
    }
    for key in ("view", "temporal_index", "spatial_index"):
        if any(key in s for s in good):
            out[key] = torch.tensor([s[key] for s in good], dtype=torch.int64)
    return out
