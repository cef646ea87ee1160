"""A small, deterministic image classification set generated on the fly.

Ten classes of shapes and textures (disc, square, triangle, ring, cross, horizontal /
vertical / diagonal stripes, checkerboard, dots) drawn with random colours, position, size,
rotation, a background gradient and pixel noise, so a classifier must learn shape and
texture rather than colour. Image ``i`` of a set depends only on ``(seed, i)``, so a set is
reproducible and a larger set extends a smaller one with the same seed.

The images can be written as PNG files in ImageFolder layout (``root/<class>/<i>.png``), so
code that reads a user's image folder runs unchanged on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gn_det.utils.io import atomic_write_file

__all__ = ["SYNTHETIC_CLASSES", "render_synthetic_image", "make_synthetic_classification",
           "write_image_folder"]

SYNTHETIC_CLASSES = ("disc", "square", "triangle", "ring", "cross",
                     "h_stripes", "v_stripes", "diag_stripes", "checker", "dots")


def _rotated(u: np.ndarray, v: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return c * u + s * v, -s * u + c * v


def _shape_mask(name: str, u: np.ndarray, v: np.ndarray, r: float, rng: np.random.Generator
                ) -> np.ndarray:
    """Foreground mask of a shape centered at (0, 0) with radius ``r`` in coordinates (u, v)."""
    if name == "disc":
        return u ** 2 + v ** 2 <= r ** 2
    if name == "ring":
        d = np.sqrt(u ** 2 + v ** 2)
        return (d <= r) & (d >= r * rng.uniform(0.5, 0.7))
    ru, rv = _rotated(u, v, rng.uniform(0, np.pi / 2))
    if name == "square":
        return (np.abs(ru) <= r * 0.85) & (np.abs(rv) <= r * 0.85)
    if name == "cross":
        arm = r * rng.uniform(0.25, 0.35)
        return ((np.abs(ru) <= arm) & (np.abs(rv) <= r)) | ((np.abs(rv) <= arm) & (np.abs(ru) <= r))
    if name == "triangle":  # equilateral, pointing along a random direction
        ru, rv = _rotated(u, v, rng.uniform(0, 2 * np.pi))
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            nu, nv = np.cos(2 * np.pi * k / 3), np.sin(2 * np.pi * k / 3)
            inside &= nu * ru + nv * rv <= r * 0.5
        return inside
    raise ValueError(name)


def _texture_mask(name: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Foreground of a periodic texture in coordinates (u, v) (image units)."""
    period = rng.uniform(0.1, 0.2)
    phase = rng.uniform(0, 1)
    jitter = rng.uniform(-0.2, 0.2)  # radians: orientation is the class, up to this jitter
    if name in ("h_stripes", "v_stripes", "diag_stripes"):
        angle = {"h_stripes": 0.0, "v_stripes": np.pi / 2,
                 "diag_stripes": rng.choice([np.pi / 4, -np.pi / 4])}[name] + jitter
        _, rv = _rotated(u, v, angle)
        return ((rv / period + phase) % 1.0) < 0.5
    ru, rv = _rotated(u, v, jitter)
    if name == "checker":
        return (np.floor(ru / period + phase) + np.floor(rv / period + phase)) % 2 == 0
    if name == "dots":
        fu = (ru / period + phase) % 1.0 - 0.5
        fv = (rv / period + phase) % 1.0 - 0.5
        return fu ** 2 + fv ** 2 <= rng.uniform(0.08, 0.15)
    raise ValueError(name)


def render_synthetic_image(label: int, rng: np.random.Generator, image_size: int = 64) -> np.ndarray:
    """Draw one image of class ``SYNTHETIC_CLASSES[label]`` as an (H, W, 3) uint8 array."""
    name = SYNTHETIC_CLASSES[label]
    coords = (np.arange(image_size) + 0.5) / image_size
    y, x = np.meshgrid(coords, coords, indexing="ij")
    background = rng.uniform(0, 1, 3)
    foreground = rng.uniform(0, 1, 3)
    while np.abs(foreground - background).sum() < 0.6:  # keep the object visible
        foreground = rng.uniform(0, 1, 3)
    # background: base colour plus a random linear gradient
    gx, gy = rng.uniform(-0.3, 0.3, 2)
    img = background[None, None, :] + (gx * (x - 0.5) + gy * (y - 0.5))[:, :, None]
    cx, cy = rng.uniform(0.3, 0.7, 2)
    u, v = x - cx, y - cy
    if name in ("disc", "square", "triangle", "ring", "cross"):
        mask = _shape_mask(name, u, v, rng.uniform(0.18, 0.32), rng)
    else:  # a texture patch of random size at a random place
        half = rng.uniform(0.22, 0.36)
        mask = _texture_mask(name, u, v, rng) & (np.abs(u) <= half) & (np.abs(v) <= half)
    img = np.where(mask[:, :, None], foreground[None, None, :], img)
    img = img + rng.normal(0, rng.uniform(0.02, 0.08), img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def make_synthetic_classification(num_per_class: int, *, image_size: int = 64, seed: int = 0,
                                  num_classes: int = len(SYNTHETIC_CLASSES)
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``num_per_class * num_classes`` images with balanced, interleaved labels.

    Args:
        num_per_class: images per class.
        image_size: side of the square images in pixels.
        seed: image ``i`` is drawn from ``numpy.random.default_rng([seed, i])``.
        num_classes: use the first ``num_classes`` of :data:`SYNTHETIC_CLASSES` (2 to 10).

    Returns:
        ``(images, labels)``: uint8 tensor (N, 3, H, W) and int64 tensor (N,), label of image
        ``i`` being ``i % num_classes``.
    """
    if not 2 <= num_classes <= len(SYNTHETIC_CLASSES):
        raise ValueError(f"num_classes must be in [2, {len(SYNTHETIC_CLASSES)}], got {num_classes}")
    if num_per_class <= 0 or image_size < 8:
        raise ValueError(f"need num_per_class > 0 and image_size >= 8, got {num_per_class}, {image_size}")
    n = num_per_class * num_classes
    labels = torch.arange(n) % num_classes
    arrays = [render_synthetic_image(int(labels[i]), np.random.default_rng([seed, i]), image_size)
              for i in range(n)]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return images, labels


def write_image_folder(images: torch.Tensor, labels: torch.Tensor, root: str | Path,
                       class_names: tuple[str, ...] = SYNTHETIC_CLASSES) -> list[Path]:
    """Write uint8 images (N, 3, H, W) as ``root/<class_name>/<i:05d>.png`` (each file atomically).

    Returns the written paths, in image order.
    """
    root = Path(root)
    paths = []
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = root / class_names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05d}.png"
        pixels = Image.fromarray(img.permute(1, 2, 0).numpy())
        atomic_write_file(path, lambda f, pixels=pixels: pixels.save(f, format="PNG"))
        paths.append(path)
    return paths
