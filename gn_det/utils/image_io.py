"""Read an image file into an RGB tensor: the one image reader, with one error policy.

Every dataset, tool and calibration routine reads images through :func:`read_image`, so every
bad file meets the same rule: a missing, empty, truncated, corrupt or oversized (decompression
bomb) file raises :class:`ImageReadError` naming the file and the reason in one line. Whether that
stops the run or becomes a counted skip is the caller's choice (DATALOADER.SKIP_BAD_SAMPLES).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

__all__ = ["ImageReadError", "read_image", "read_image_pil"]


class ImageReadError(OSError):
    """An image file cannot be used; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = os.fspath(path), reason
        super().__init__(f"cannot read image {self.path}: {reason}")

    def __reduce__(self):  # DataLoader workers re-raise exceptions in the main process by pickling
        return type(self), (self.path, self.reason)


def read_image_pil(path: str | os.PathLike) -> Image.Image:
    """The fully decoded RGB ``PIL.Image`` of ``path`` (a truncated file fails here, not later).

    Raises:
        ImageReadError: missing, empty, truncated, corrupt, not an image, or a decompression bomb.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageReadError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except Image.DecompressionBombError as e:
        raise ImageReadError(path, f"too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(path, f"corrupt or not an image ({e})") from None


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """``path`` as a uint8 tensor (3, H, W), RGB. Raises :class:`ImageReadError` (see
    :func:`read_image_pil`)."""
    return torch.from_numpy(np.asarray(read_image_pil(path)).copy()).permute(2, 0, 1).contiguous()
