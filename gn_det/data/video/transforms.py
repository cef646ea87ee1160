"""Clip transforms: uint8 ``(T, H, W, 3)`` frames -> normalized float ``(3, T, H, W)``.

As PySlowFast does it (DATA.TRAIN_JITTER_SCALES, TRAIN_CROP_SIZE, TEST_CROP_SIZE, MEAN, STD,
TEST.NUM_SPATIAL_CROPS):

- :class:`TrainClipTransform`: the short side is resized to a random integer in
  ``[jitter_scales[0], jitter_scales[1]]``, a random ``crop_size`` square is cut, and the clip is
  flipped left-right with probability 1/2 (the same for every frame). The random numbers come,
  in this order, from the given :class:`numpy.random.Generator`: the scale, the crop's top, its
  left, the flip. The transform reports whether it flipped; the caller applies a
  ``flip_label_map`` to the label (a flip turns "moving left" into "moving right").
- :class:`TestClipTransform`: the short side is resized to ``short_side`` (default the test crop
  size) and spatial crop ``k`` of ``num_spatial_crops`` is cut, evenly spread along the long side
  (3 crops: left/centre/right for landscape, top/centre/bottom for portrait; 1 crop: centre)
  and centred on the short side.

Then values become ``(x / 255 - mean) / std`` per channel (RGB order).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
# v2's resize keeps uint8 clips in uint8 (a vectorised kernel); v1's converts to float first, which
# made resizing, not decoding, the largest cost of a training clip (benchmarks/bench_video_loading.py).
import torchvision.transforms.v2.functional as TF

__all__ = [
    "DEFAULT_MEAN",
    "DEFAULT_STD",
    "short_side_size",
    "resize_short_side",
    "spatial_crop_offset",
    "to_normalized_cthw",
    "TrainClipTransform",
    "TestClipTransform",
    "make_flip_index_map",
]

DEFAULT_MEAN: tuple[float, float, float] = (0.45, 0.45, 0.45)
DEFAULT_STD: tuple[float, float, float] = (0.225, 0.225, 0.225)


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(new height, new width) with the short side ``size`` and the aspect ratio kept (rounded)."""
    if height <= width:
        return size, max(size, int(round(width * size / height)))
    return max(size, int(round(height * size / width))), size


def _check_clip(clip: torch.Tensor) -> None:
    if clip.dim() != 4 or clip.shape[-1] != 3 or clip.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 clip of shape (T, H, W, 3), got {tuple(clip.shape)} {clip.dtype}")


def resize_short_side(clip_tchw: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a ``(T, C, H, W)`` clip so its short side is ``size`` (bilinear, antialiased)."""
    h, w = clip_tchw.shape[-2:]
    new_h, new_w = short_side_size(h, w, size)
    if (new_h, new_w) == (h, w):
        return clip_tchw
    return TF.resize(clip_tchw, [new_h, new_w], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)


def spatial_crop_offset(height: int, width: int, crop: int, index: int, num_crops: int) -> tuple[int, int]:
    """(top, left) of spatial crop ``index`` of ``num_crops`` (see the module docstring)."""
    if not 0 <= index < num_crops:
        raise ValueError(f"spatial crop index must be in [0, {num_crops}), got {index}")
    if crop > height or crop > width:
        raise ValueError(f"crop {crop} is larger than the {height}x{width} frame")
    top, left = (height - crop) // 2, (width - crop) // 2
    if num_crops > 1:
        if height > width:
            top = int(round((height - crop) * index / (num_crops - 1)))
        else:
            left = int(round((width - crop) * index / (num_crops - 1)))
    return top, left


def to_normalized_cthw(clip_tchw: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(T, 3, H, W)`` -> float32 ``(3, T, H, W)``, ``(x / 255 - mean) / std``."""
    x = clip_tchw.permute(1, 0, 2, 3).float().div_(255.0)
    m = torch.as_tensor(mean, dtype=torch.float32).view(3, 1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1, 1)
    return x.sub_(m).div_(s).contiguous()


def _check_norm(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != 3 or len(std) != 3 or any(float(v) <= 0 for v in std):
        raise ValueError(f"mean and std need 3 values (RGB), std all > 0; got mean={mean}, std={std}")


class TrainClipTransform:
    """Random short-side scale, random crop, random horizontal flip, normalize.

    ``transform(clip, rng) -> (float (3, T, crop, crop), flipped)``.
    """

    def __init__(self, jitter_scales: Sequence[int] = (256, 320), crop_size: int = 224,
                 mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD, flip: bool = True):
        lo, hi = (int(v) for v in jitter_scales)
        if not crop_size <= lo <= hi:
            raise ValueError(f"need crop_size <= jitter_scales[0] <= jitter_scales[1], got crop_size="
                             f"{crop_size}, jitter_scales={list(jitter_scales)}")
        _check_norm(mean, std)
        self.jitter_scales, self.crop_size = (lo, hi), int(crop_size)
        self.mean, self.std, self.flip = tuple(mean), tuple(std), flip

    def __call__(self, clip: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, bool]:
        _check_clip(clip)
        x = resize_short_side(clip.permute(0, 3, 1, 2), int(rng.integers(self.jitter_scales[0],
                                                                          self.jitter_scales[1] + 1)))
        h, w = x.shape[-2:]
        top = int(rng.integers(0, h - self.crop_size + 1))
        left = int(rng.integers(0, w - self.crop_size + 1))
        x = x[..., top:top + self.crop_size, left:left + self.crop_size]
        flipped = bool(self.flip and rng.random() < 0.5)
        if flipped:
            x = x.flip(-1)
        return to_normalized_cthw(x, self.mean, self.std), flipped


class TestClipTransform:
    """Short-side resize, spatial crop ``k`` of ``num_spatial_crops``, normalize.

    ``transform(clip, spatial_index) -> float (3, T, crop, crop)``.
    """

    __test__ = False  # not a pytest test class when imported into a test module

    def __init__(self, test_crop_size: int = 256, num_spatial_crops: int = 3,
                 mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD,
                 short_side: int | None = None):
        self.crop_size = int(test_crop_size)
        self.short_side = int(short_side) if short_side is not None else self.crop_size
        if self.short_side < self.crop_size or num_spatial_crops < 1:
            raise ValueError(f"need short_side >= test_crop_size and num_spatial_crops >= 1, got "
                             f"short_side={self.short_side}, test_crop_size={self.crop_size}, "
                             f"num_spatial_crops={num_spatial_crops}")
        _check_norm(mean, std)
        self.num_spatial_crops, self.mean, self.std = int(num_spatial_crops), tuple(mean), tuple(std)

    def __call__(self, clip: torch.Tensor, spatial_index: int) -> torch.Tensor:
        return self.crop(self.resize(clip), spatial_index)

    def resize(self, clip: torch.Tensor) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)`` -> uint8 ``(T, 3, H', W')`` with the short side resized: the part
        the spatial crops of one clip share (the test dataset does it once per clip)."""
        _check_clip(clip)
        return resize_short_side(clip.permute(0, 3, 1, 2), self.short_side)

    def crop(self, resized: torch.Tensor, spatial_index: int) -> torch.Tensor:
        """Spatial crop ``spatial_index`` of a :meth:`resize` output, normalized ``(3, T, crop, crop)``."""
        h, w = resized.shape[-2:]
        top, left = spatial_crop_offset(h, w, self.crop_size, spatial_index, self.num_spatial_crops)
        x = resized[..., top:top + self.crop_size, left:left + self.crop_size]
        return to_normalized_cthw(x, self.mean, self.std)


def make_flip_index_map(flip_label_map: Mapping[str, str] | None, classes: Sequence[str]) -> dict[int, int]:
    """Class index -> class index after a horizontal flip, from a name -> name map.

    The map is made symmetric (``{"a": "b"}`` also flips ``b`` to ``a``); classes not in it keep
    their label. Keys and values may be ints for integer-label lists.

    Raises:
        ValueError: a name that is not a class, or a map that sends two classes to one.
    """
    if not flip_label_map:
        return {}
    index = {c: i for i, c in enumerate(classes)}
    out: dict[int, int] = {}
    for a, b in flip_label_map.items():
        a, b = str(a), str(b)
        unknown = [n for n in (a, b) if n not in index]
        if unknown:
            raise ValueError(f"flip_label_map names unknown class(es) {unknown}; classes are {list(classes)}")
        for src, dst in ((index[a], index[b]), (index[b], index[a])):
            if out.setdefault(src, dst) != dst:
                raise ValueError(f"flip_label_map sends class {classes[src]!r} to both "
                                 f"{classes[out[src]]!r} and {classes[dst]!r}")
    return out
