"""A synthetic COCO-format instance-segmentation set: coloured shapes on textured backgrounds.

It is the embedded default dataset of the demo and the tests: no download, deterministic by
seed (same seed -> byte-identical json and identical JPEG pixels), small enough to train a
Mask R-CNN on a CPU in minutes, yet it exercises everything real COCO data does:

- 5 shape classes (circle, square, triangle, star, cross) with random size, rotation,
  colour and position; colour never gives the class away, the shape does.
- Objects may overlap a little; the annotation of an occluded object is its visible part.
- Segmentations: polygons for fully visible objects, compressed RLE for occluded ones (and a
  random few others), uncompressed RLE for crowd regions (iscrowd=1), as COCO stores them.
- A few images hold no object at all, some only a crowd region, so empty-image filtering
  has work to do.
- Category ids are non-contiguous (2, 4, 6, ...) as COCO's are, so the id mapping is
  exercised end to end.

Every mask is rasterized by pycocotools from the very polygon/RLE written to the json, and
the image is painted from those masks, so ``annToMask`` returns exactly the drawn pixels.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from gn_det.utils.io import atomic_write_file, atomic_write_text
from gn_det.utils.coco_mask import decode_segmentation
from gn_det.utils.progress import LoggedProgress, progress_bar

__all__ = ["SHAPE_CLASSES", "GENERATOR_VERSION", "generate_synthetic_coco"]

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
logger = logging.getLogger(__name__)
# Bump when the output for a given seed changes, so cached sets are regenerated.
GENERATOR_VERSION = 2
# Non-contiguous on purpose, as COCO's are (1..90 with gaps).
_CATEGORY_IDS = tuple(2 * (k + 1) for k in range(len(SHAPE_CLASSES)))

_JPEG_QUALITY = 92
_MIN_VISIBLE_FRACTION = 0.75  # every object keeps at least this fraction of its pixels visible


def _shape_polygon(kind: str, cx: float, cy: float, r: float, theta: float) -> np.ndarray:
    """Vertices (V, 2) of a shape of circumradius ``r`` rotated by ``theta`` radians."""
    if kind == "circle":
        angles = np.linspace(0.0, 2 * np.pi, 40, endpoint=False)
        radii = np.full_like(angles, r)
    elif kind == "square":
        angles = np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full(4, r)
    elif kind == "triangle":
        angles = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        radii = np.full(3, r)
    elif kind == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    elif kind == "cross":
        a = 0.38 * r  # half arm width
        pts = [(a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r),
               (-a, r), (-a, a), (-r, a), (-r, -a), (-a, -a), (-a, -r)]  # fmt: skip
        xy = np.asarray(pts, dtype=np.float64)
        angles = np.arctan2(xy[:, 1], xy[:, 0])
        radii = np.hypot(xy[:, 0], xy[:, 1])
    else:
        raise ValueError(f"unknown shape {kind!r}; known: {SHAPE_CLASSES}")
    angles = angles + theta
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


def _polygon_to_flat(poly: np.ndarray, h: int, w: int) -> list[float]:
    """COCO's flat [x0, y0, x1, y1, ...] list, clipped to the image and rounded to 0.01 px."""
    poly = poly.copy()
    poly[:, 0] = poly[:, 0].clip(0, w)
    poly[:, 1] = poly[:, 1].clip(0, h)
    return [round(float(v), 2) for v in poly.reshape(-1)]


def _rasterize(flat_polygon: list[float], h: int, w: int) -> np.ndarray:
    """The binary mask pycocotools decodes for this polygon (the ground truth by definition)."""
    return decode_segmentation([flat_polygon], h, w).astype(bool)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a random ``cells x cells`` grid upsampled bilinearly."""
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    up = Image.fromarray(grid).resize((w, h), Image.BILINEAR)
    return np.asarray(up, dtype=np.float32) / 255.0


def _background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured background (H, W, 3) float image and its base colour."""
    base = rng.uniform(60, 190, size=3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)[..., None]
    img = base + rng.uniform(-40, 40, size=3) * gradient
    img = img + (_smooth_noise(rng, h, w, int(rng.integers(3, 9)))[..., None] - 0.5) * 60
    # Stripes of random frequency and direction: texture the model must learn to ignore.
    freq = rng.uniform(0.08, 0.4)
    phi = rng.uniform(0, np.pi)
    stripes = np.sin(freq * (np.cos(phi) * xx + np.sin(phi) * yy))[..., None]
    img = img + stripes * rng.uniform(5, 20)
    img = img + rng.normal(0, 4, size=(h, w, 3))
    return img, base


def _object_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A colour far enough from the background's base colour to be visible."""
    for _ in range(50):
        colour = rng.uniform(0, 255, size=3)
        if np.abs(colour - background).sum() > 160:
            return colour
    return 255.0 - background


def _paint(img: np.ndarray, mask: np.ndarray, colour: np.ndarray, rng: np.random.Generator) -> None:
    """Fill ``mask`` with ``colour`` plus light shading and noise, in place."""
    h, w = mask.shape
    shade = (_smooth_noise(rng, h, w, 3)[..., None] - 0.5) * 30
    texture = colour + shade + rng.normal(0, 3, size=(h, w, 3))
    img[mask] = texture[mask]


def _encode_rle(mask: np.ndarray, compressed: bool) -> dict:
    """COCO RLE of a binary mask: compressed ("counts" a string) or uncompressed (a list)."""
    if compressed:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    # Uncompressed: run lengths in column-major order, starting with a run of zeros.
    flat = mask.astype(np.uint8).reshape(-1, order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def _mask_stats(mask: np.ndarray) -> tuple[list[float], float]:
    """Tight COCO bbox [x, y, w, h] and area of a binary mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return bbox, float(mask_utils.area(rle))


def _place_objects(
    rng: np.random.Generator, h: int, w: int, num_objects: int, crowd: np.ndarray | None
) -> list[tuple[int, list[float], np.ndarray]]:
    """Random shapes (class index, polygon, full mask) in z-order, each kept mostly visible."""
    side = min(h, w)
    placed: list[tuple[int, list[float], np.ndarray]] = []
    for _ in range(num_objects):
        for _attempt in range(20):
            cls = int(rng.integers(len(SHAPE_CLASSES)))
            r = rng.uniform(0.14, 0.28) * side
            # Mostly inside the image: a shape cut by the border is ambiguous.
            cx = rng.uniform(0.85 * r, w - 0.85 * r)
            cy = rng.uniform(0.85 * r, h - 0.85 * r)
            poly = _polygon_to_flat(
                _shape_polygon(SHAPE_CLASSES[cls], cx, cy, r, rng.uniform(0, 2 * np.pi)), h, w
            )
            mask = _rasterize(poly, h, w)
            if mask.sum() < 0.5 * np.pi * (0.3 * r) ** 2:  # mostly outside the image
                continue
            # The new shape goes on top: every shape below (and the crowd) must stay visible.
            below = [m for _, _, m in placed] + ([crowd] if crowd is not None else [])
            if all((m & ~mask).sum() >= _MIN_VISIBLE_FRACTION * m.sum() for m in below):
                placed.append((cls, poly, mask))
                break
    return placed


def _crowd_region(
    rng: np.random.Generator, h: int, w: int
) -> tuple[int, np.ndarray, list[np.ndarray]]:
    """A cluster of small shapes of one class: (class index, union mask, each shape's mask)."""
    side = min(h, w)
    cls = int(rng.integers(len(SHAPE_CLASSES)))
    cx, cy = rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * h, 0.8 * h)
    parts = []
    for _ in range(int(rng.integers(4, 8))):
        r = rng.uniform(0.035, 0.06) * side
        px = cx + rng.uniform(-0.12, 0.12) * side
        py = cy + rng.uniform(-0.12, 0.12) * side
        poly = _shape_polygon(SHAPE_CLASSES[cls], px, py, r, rng.uniform(0, 2 * np.pi))
        parts.append(_rasterize(_polygon_to_flat(poly, h, w), h, w))
    union = np.logical_or.reduce(parts)
    return cls, union, parts


def _make_image(
    rng: np.random.Generator,
    h: int,
    w: int,
    max_objects: int,
    empty: bool,
    with_crowd: bool,
    extra_rle_fraction: float,
) -> tuple[np.ndarray, list[dict]]:
    """One image (H, W, 3) uint8 and its annotations (without ids)."""
    img, bg = _background(rng, h, w)
    crowd = _crowd_region(rng, h, w) if with_crowd else None
    num_objects = 0 if empty else int(rng.integers(1, max_objects + 1))
    objects = _place_objects(rng, h, w, num_objects, crowd[1] if crowd is not None else None)

    # Paint bottom to top: crowd first, then objects in z-order.
    if crowd is not None:
        for part in crowd[2]:
            _paint(img, part, _object_colour(rng, bg), rng)
    for _, _, mask in objects:
        _paint(img, mask, _object_colour(rng, bg), rng)

    anns: list[dict] = []
    covered = np.zeros((h, w), dtype=bool)  # union of everything above, walking top-down
    for cls, poly, mask in reversed(objects):
        visible = mask & ~covered
        covered |= mask
        if (visible == mask).all() and rng.random() >= extra_rle_fraction:
            segmentation: list | dict = [poly]
        else:
            segmentation = _encode_rle(visible, compressed=True)
        bbox, area = _mask_stats(visible)
        anns.append({"cls": cls, "segmentation": segmentation, "bbox": bbox, "area": area, "iscrowd": 0})
    if crowd is not None:
        visible = crowd[1] & ~covered
        bbox, area = _mask_stats(visible)
        anns.append(
            {
                "cls": crowd[0],
                "segmentation": _encode_rle(visible, compressed=False),
                "bbox": bbox,
                "area": area,
                "iscrowd": 1,
            }
        )
    anns.reverse()  # bottom to top, the order they were drawn
    return np.clip(img, 0, 255).astype(np.uint8), anns


def _plan_special_images(
    num_images: int, seed: int, empty_fraction: float, crowd_fraction: float
) -> tuple[set[int], set[int]]:
    """Which images get no object and which a crowd region.

    Exact counts rather than coin flips, so every set has its share (at least one of each
    from 20 images on) and, given two empty images or more, exactly one holds only a crowd.
    """
    def count(fraction: float) -> int:
        n = int(round(fraction * num_images))
        return max(n, 1) if fraction > 0 and num_images >= 20 else n

    n_empty, n_crowd = count(empty_fraction), count(crowd_fraction)
    order = np.random.default_rng([seed, 2**32 - 1]).permutation(num_images).tolist()
    crowd = set(order[:n_crowd])
    # Overlap by one image (then crowd-only) when there are empty images to spare.
    start = n_crowd - 1 if n_crowd and n_empty >= 2 else n_crowd
    return set(order[start:start + n_empty]), crowd


def _write_jpeg(path: Path, img: np.ndarray) -> None:
    atomic_write_file(path, lambda f: Image.fromarray(img).save(f, format="JPEG", quality=_JPEG_QUALITY,
                                                                 subsampling=0))


def generate_synthetic_coco(
    out_dir: str | os.PathLike,
    num_images: int,
    image_size: int | Sequence[int] = 160,
    seed: int = 0,
    *,
    max_objects: int = 4,
    empty_fraction: float = 0.05,
    crowd_fraction: float = 0.15,
    extra_rle_fraction: float = 0.15,
    vary_aspect: bool = False,
    show_progress: bool = True,
) -> tuple[str, str]:
    """Write a synthetic COCO instance-segmentation set: ``out_dir/images/*.jpg`` + a json.

    Args:
        out_dir: folder to write into (created; existing files of the same names are replaced).
        num_images: number of images.
        image_size: side of the square images, or (height, width).
        seed: the set is a pure function of the arguments: the same seed gives a
            byte-identical json and identical pixels.
        max_objects: 1..max_objects shapes per non-empty image.
        empty_fraction: fraction of images without any object (one of them has a crowd).
        crowd_fraction: fraction of images with one crowd region (iscrowd=1, uncompressed RLE).
        extra_rle_fraction: fraction of fully visible objects stored as RLE instead of polygons
            (occluded objects always are RLE: their visible part is no polygon).
        vary_aspect: if True, each image is randomly landscape or portrait (4:3), to exercise
            aspect-ratio grouping.
        show_progress: show a tqdm bar.

    Returns:
        (json_path, image_root): ``out_dir/annotations.json`` and ``out_dir/images``.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    for name, value in (("empty_fraction", empty_fraction), ("crowd_fraction", crowd_fraction),
                        ("extra_rle_fraction", extra_rle_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    h0, w0 = (image_size, image_size) if isinstance(image_size, int) else map(int, image_size)
    if min(h0, w0) < 32:
        raise ValueError(f"image_size must be at least 32 px, got {image_size}")
    out = Path(out_dir)
    image_root = out / "images"
    image_root.mkdir(parents=True, exist_ok=True)

    empty, crowd = _plan_special_images(num_images, seed, empty_fraction, crowd_fraction)
    images, annotations = [], []
    bar = progress_bar(range(num_images), desc="synthetic COCO", disable=not show_progress, unit="img")
    for index in LoggedProgress(logger, f"synthetic COCO {out.name}", num_images, "images").track(bar):
        # One independent stream per image: image i does not depend on how many came before.
        rng = np.random.default_rng([seed, index])
        h, w = h0, w0
        if vary_aspect:
            long_side = int(round(max(h0, w0) * 4 / 3))
            h, w = (min(h0, w0), long_side) if rng.random() < 0.5 else (long_side, min(h0, w0))
        pixels, anns = _make_image(
            rng, h, w, max_objects, index in empty, index in crowd, extra_rle_fraction
        )
        image_id = index + 1
        file_name = f"{index:06d}.jpg"
        _write_jpeg(image_root / file_name, pixels)
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        for ann in anns:
            cls = ann.pop("cls")
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": _CATEGORY_IDS[cls], **ann}
            )

    dataset = {
        "info": {
            "description": "gn_det synthetic shapes",
            "version": str(GENERATOR_VERSION),
            "seed": seed,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": cid, "name": name, "supercategory": "shape"}
            for cid, name in zip(_CATEGORY_IDS, SHAPE_CLASSES)
        ],
    }
    json_path = out / "annotations.json"
    atomic_write_text(json.dumps(dataset, separators=(",", ":")), json_path)
    return str(json_path), str(image_root)

