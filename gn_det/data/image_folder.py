"""Load images from a folder (any nesting) as normalized tensors, for calibration and evaluation.

The folder may be flat or hold class sub-folders (torchvision ImageFolder layout, e.g. an
ImageNet ``val/`` split into synset folders). Images are resized on the shorter side,
center-cropped and normalized with the ImageNet mean/std, as torchvision's classification
weights expect. Unreadable images are skipped, counted and reported with a warning.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from torchvision import transforms

from gn_det.utils.image_io import ImageReadError, read_image_pil
from gn_det.utils.progress import progress_bar

__all__ = ["IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD", "ImageFolderError", "LoadedImages",
           "find_images", "build_eval_transform", "load_image_folder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageFolderError(ValueError):
    """The image folder is missing, not a folder, or holds no usable image."""


@dataclass
class LoadedImages:
    """Images loaded by :func:`load_image_folder`.

    Attributes:
        images: float tensor (N, 3, S, S), ImageNet-normalized.
        labels: class index per image (classes = sorted top-level sub-folder names), or None
            when some image lies directly in the root folder (no class layout).
        classes: the class names ``labels`` index into (empty without a class layout).
        paths: the file of each loaded image.
        num_skipped: unreadable files skipped while loading.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    num_skipped: int = 0


def find_images(root: str | Path) -> list[Path]:
    """All .jpg/.jpeg/.png files under ``root`` (any depth, any extension case), sorted.

    Raises:
        ImageFolderError: ``root`` does not exist, is not a folder, or has no image file.
    """
    root = Path(root)
    if not root.exists():
        raise ImageFolderError(f"Image folder {str(root)!r} does not exist; pass a folder of "
                               f"{'/'.join(IMAGE_EXTENSIONS)} images")
    if not root.is_dir():
        raise ImageFolderError(f"{str(root)!r} is a file, not a folder of images")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not paths:
        raise ImageFolderError(f"Image folder {str(root)!r} holds no {'/'.join(IMAGE_EXTENSIONS)} "
                               "file (searched all sub-folders)")
    return paths


def build_eval_transform(image_size: int = 224, resize_size: int | None = None
                         ) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the shorter side to ``resize_size`` (default ``image_size * 256 / 224``, the usual
    ImageNet evaluation ratio), center-crop ``image_size``, convert to a normalized tensor."""
    if resize_size is None:
        resize_size = round(image_size * 256 / 224)
    if resize_size < image_size:
        raise ValueError(f"resize_size ({resize_size}) must be >= image_size ({image_size})")
    return transforms.Compose([
        transforms.Resize(resize_size, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def load_image_folder(root: str | Path, num_images: int | None = None, *, image_size: int = 224,
                      resize_size: int | None = None, seed: int | None = None,
                      progress: bool = True) -> LoadedImages:
    """Load up to ``num_images`` images from ``root`` as one normalized batch.

    Args:
        root: folder of images, any nesting; top-level sub-folders are classes.
        num_images: how many readable images to load (None: all). Unreadable files are skipped
            and the next file is taken instead, so the count is met whenever the folder allows.
        image_size: side of the square center crop.
        resize_size: shorter side before cropping (default ``image_size * 256 / 224``).
        seed: None keeps sorted file order; an int shuffles the files reproducibly first, so a
            subset samples all classes.
        progress: show a tqdm progress bar.

    Raises:
        ImageFolderError: missing folder, no image file, or no readable image.
    """
    root = Path(root)
    paths = find_images(root)
    rel_parts = [p.relative_to(root).parts for p in paths]
    has_classes = all(len(parts) > 1 for parts in rel_parts)
    classes = sorted({parts[0] for parts in rel_parts}) if has_classes else []
    class_index = {name: i for i, name in enumerate(classes)}
    order = list(range(len(paths)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    wanted = len(paths) if num_images is None else num_images
    if wanted <= 0:
        raise ValueError(f"num_images must be positive, got {num_images}")
    transform = build_eval_transform(image_size, resize_size)
    images, labels, loaded, skipped = [], [], [], []
    with progress_bar(total=min(wanted, len(paths)), desc=f"loading {root.name or root}",
              disable=not progress, leave=False) as bar:
        for i in order:
            if len(loaded) == wanted:
                break
            try:
                img = read_image_pil(paths[i])
            except ImageReadError as exc:
                skipped.append((paths[i], exc))
                continue
            images.append(transform(img))
            loaded.append(paths[i])
            if has_classes:
                labels.append(class_index[rel_parts[i][0]])
            bar.update(1)
    if skipped:
        examples = ", ".join(f"{p} ({e.reason})" for p, e in skipped[:3])
        warnings.warn(f"Skipped {len(skipped)} unreadable image file(s) in {str(root)!r}, e.g. {examples}",
                      stacklevel=2)
    if not images:
        raise ImageFolderError(f"None of the {len(paths)} image files in {str(root)!r} could be read")
    if len(images) < wanted and num_images is not None:
        warnings.warn(f"Asked for {num_images} images but {str(root)!r} has only {len(images)} "
                      "readable ones; using those", stacklevel=2)
    return LoadedImages(images=torch.stack(images),
                        labels=torch.tensor(labels) if has_classes else None,
                        classes=classes, paths=loaded, num_skipped=len(skipped))
