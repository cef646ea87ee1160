"""Detection transforms: shortest-edge resize (multi-scale in training) and horizontal flip.

Boxes and masks go through torchvision.transforms.v2 as tv_tensors, so they move with the
image. Randomness comes from a ``torch.Generator`` per sample (seeded by the sampler), so a
sample's augmentation does not depend on the worker that loads it or on how many workers
there are.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

__all__ = ["ResizeShortestEdge", "DetectionTransform", "build_detection_transform"]

# Boxes thinner than this (pixels) after resizing are dropped: torchvision's Mask R-CNN
# rejects boxes without positive width and height.
_MIN_BOX_SIDE = 1e-2


class ResizeShortestEdge:
    """Pick a shortest-edge length, then cap the longest side (detectron2's rule).

    Args:
        short_edge_lengths: candidate lengths; with ``sample_style="range"`` exactly two
            numbers, the inclusive bounds of a uniform integer draw.
        max_size: the longest side is never longer than this (0: no cap).
        sample_style: "choice" (one of the lengths) or "range".
    """

    def __init__(self, short_edge_lengths: Sequence[int], max_size: int, sample_style: str = "choice"):
        lengths = [int(s) for s in (short_edge_lengths if isinstance(short_edge_lengths, Sequence)
                                    else [short_edge_lengths])]
        if sample_style not in ("choice", "range"):
            raise ValueError(f"sample_style must be 'choice' or 'range', got {sample_style!r}")
        if sample_style == "range" and len(lengths) != 2:
            raise ValueError(f"sample_style 'range' needs [min, max], got {lengths}")
        if not lengths or min(lengths) <= 0:
            raise ValueError(f"shortest-edge lengths must be positive, got {lengths}")
        self.lengths, self.max_size, self.sample_style = lengths, int(max_size), sample_style

    def sample_length(self, generator: torch.Generator | None = None) -> int:
        if self.sample_style == "range":
            lo, hi = self.lengths
            return int(torch.randint(lo, hi + 1, (1,), generator=generator))
        return self.lengths[int(torch.randint(len(self.lengths), (1,), generator=generator))]

    def output_size(self, h: int, w: int, short: int) -> tuple[int, int]:
        """(new_h, new_w) for an (h, w) image and a shortest edge of ``short``."""
        scale = short / min(h, w)
        if self.max_size > 0 and max(h, w) * scale > self.max_size:
            scale = self.max_size / max(h, w)
        return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


class DetectionTransform:
    """Resize, then (training) flip horizontally with probability ``flip_prob``.

    ``transform(image, boxes, masks, generator)`` takes uint8 image (3, H, W), xyxy boxes
    (N, 4) and uint8 masks (N, H, W) (N may be 0 for box-only data) and returns
    ``(image, boxes, masks, keep)``, ``keep`` being the boolean index of boxes kept (those
    still of positive size), to select matching labels.
    """

    def __init__(self, resize: ResizeShortestEdge, flip_prob: float = 0.0):
        self.resize, self.flip_prob = resize, float(flip_prob)

    def __call__(self, image: torch.Tensor, boxes: torch.Tensor, masks: torch.Tensor,
                 generator: torch.Generator | None = None):
        h, w = image.shape[-2:]
        img = tv_tensors.Image(image)
        bxs = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w))
        msk = tv_tensors.Mask(masks)

        size = list(self.resize.output_size(h, w, self.resize.sample_length(generator)))
        img = F.resize(img, size, antialias=True)
        bxs = F.resize(bxs, size)
        if msk.shape[0]:
            msk = F.resize(msk, size)  # nearest for masks
        else:
            msk = tv_tensors.Mask(masks.new_zeros((0, *size)))

        if self.flip_prob > 0 and float(torch.rand(1, generator=generator)) < self.flip_prob:
            img, bxs = F.horizontal_flip(img), F.horizontal_flip(bxs)
            msk = F.horizontal_flip(msk)

        keep = ((bxs[:, 2] - bxs[:, 0]) > _MIN_BOX_SIDE) & ((bxs[:, 3] - bxs[:, 1]) > _MIN_BOX_SIDE)
        if msk.shape[0]:
            msk = msk[keep]
        return img, bxs[keep], msk, keep.as_subclass(torch.Tensor)


def build_detection_transform(cfg, is_train: bool) -> DetectionTransform:
    """The transform of ``cfg.INPUT``: MIN_SIZE_TRAIN (+ _SAMPLING), MAX_SIZE_TRAIN and
    RANDOM_FLIP for training; MIN_SIZE_TEST and MAX_SIZE_TEST, no flip, for testing."""
    if is_train:
        resize = ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
        flip = cfg.INPUT.RANDOM_FLIP
        if flip not in ("horizontal", "none"):
            raise ValueError(f"INPUT.RANDOM_FLIP must be 'horizontal' or 'none', got {flip!r}")
        return DetectionTransform(resize, 0.5 if flip == "horizontal" else 0.0)
    return DetectionTransform(ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST))
