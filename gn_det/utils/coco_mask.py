"""COCO segmentations (polygons, uncompressed or compressed RLE) as binary masks (pycocotools)."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["decode_segmentation"]


def decode_segmentation(seg: list | dict, h: int, w: int) -> np.ndarray:
    """Binary (H, W) uint8 mask from polygons, uncompressed RLE or compressed RLE."""
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = seg
    return mask_utils.decode(rle)
