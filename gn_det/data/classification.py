"""Image-classification data for ``TASK classification``: ImageNet-layout folders by name,
seeded train augmentation, test resize + centre crop, and the loaders.

Layout (torchvision's ImageFolder, ImageNet's): ``<root>/<class>/.../<image>`` with
``.jpg``/``.jpeg``/``.png`` files in any letter case (``.JPEG`` for ImageNet). Classes are the
sorted names of the root's sub-folders (hidden ones excepted); class ``i`` of a set is its
``i``-th folder name, so train and test sets must hold the same folder names.

Dataset names (DATASETS.TRAIN / DATASETS.TEST):

- ``imagenet_train`` / ``imagenet_val``: ``$GN_DET_DATASETS/imagenet/{train,val}/`` (default root
  ``./datasets``); the val split must be sorted into synset folders like train.
- ``DATASETS.REGISTER``: ``[[name, folder], ...]``, any folder in this layout.
- ``DATASETS.SYNTHETIC``: ``[[name, images_per_class, image_size, seed], ...]``: the 10-class
  shapes/textures set of :mod:`gn_det.data.synthetic_classification`, written as PNG files on first
  use into ``$GN_DET_CACHE/synthetic_cls/`` (made in a temporary folder, then renamed into place;
  reused afterwards: equal numbers give the same images).

Samples: ``{"image": uint8 Tensor[3, S, S] (RGB, 0-255), "label": int, "file_name": str,
"index": int}``. Training samples are indexed by ``(index, seed)`` keys: the random-resized crop
and the flip are drawn from a generator seeded with the key, so the stream is a pure function of
SEED and a resumed run continues exactly. A missing or corrupt image raises :class:`DatasetError`
naming the file, or, with DATALOADER.SKIP_BAD_SAMPLES, becomes a :class:`SkippedSample` the loader
drops and counts.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from gn_det.config import ConfigError
from gn_det.data.catalog import datasets_root
from gn_det.utils.cache import cache_root
from gn_det.data.coco_dataset import DatasetError
from gn_det.data.common import ConcatDatasets, SkipBadSamples, SkippedSample, build_test_loader, build_train_loader
from gn_det.data.generated import build_folder_once
from gn_det.data.image_folder import IMAGE_EXTENSIONS, ImageFolderError, find_images
from gn_det.data.synthetic_classification import SYNTHETIC_CLASSES, make_synthetic_classification, write_image_folder
from gn_det.utils.image_io import ImageReadError, read_image_pil

__all__ = ["IMAGENET_SPLITS", "DatasetError", "ImageFolderDataset", "RandomResizedCropFlip", "ResizeCenterCrop",
           "random_resized_crop_box", "class_folders", "dataset_root", "dataset_classes",
           "write_synthetic_image_folder", "build_classification_dataset", "build_classification_train_loader",
           "build_classification_test_loader", "check_num_classes"]

logger = logging.getLogger(__name__)

IMAGENET_SPLITS = {"imagenet_train": "train", "imagenet_val": "val"}
# Part of the synthetic sets' cache folder name: bump when the generator's images change.
SYNTHETIC_LAYOUT_VERSION = 1
_SKIP_HINT = "set DATALOADER.SKIP_BAD_SAMPLES True to skip such images (counted and reported)"


# ------------------------------------------------------------------------------------ names
def _registered(cfg) -> dict[str, str]:
    out = {}
    for entry in cfg.DATASETS.REGISTER:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and all(isinstance(v, str) for v in entry)):
            raise ConfigError(f"DATASETS.REGISTER entry {entry!r} must be [name, folder] (2 strings): a folder "
                             f"holding one sub-folder of images per class")
        out[entry[0]] = entry[1]
    return out


def _synthetic(cfg) -> dict[str, tuple[int, int, int]]:
    out = {}
    for entry in cfg.DATASETS.SYNTHETIC:
        ok = isinstance(entry, (list, tuple)) and len(entry) == 4 and isinstance(entry[0], str)
        if ok:
            try:
                per_class, size, seed = (int(v) for v in entry[1:])
            except (TypeError, ValueError):
                ok = False
        if not ok or per_class < 1 or size < 8:
            raise ConfigError(f"DATASETS.SYNTHETIC entry {entry!r} must be [name, images_per_class >= 1, "
                             f"image_size >= 8, seed]")
        out[entry[0]] = (per_class, size, seed)
    return out


def _unknown(cfg, name: str) -> ConfigError:
    known = sorted(set(IMAGENET_SPLITS) | set(_registered(cfg)) | set(_synthetic(cfg)))
    return ConfigError(f"unknown classification dataset {name!r}; known: {known}. Add a folder with "
                    f"DATASETS.REGISTER [[name, folder]] or a synthetic set with DATASETS.SYNTHETIC "
                    f"[[name, images_per_class, image_size, seed]]")


def write_synthetic_image_folder(folder: str | os.PathLike, images_per_class: int, image_size: int,
                                 seed: int) -> Path:
    """Make the synthetic set in ImageFolder layout at ``folder`` unless it exists (temporary folder,
    then rename); returns ``folder``. Image ``i`` depends only on ``(seed, i)``."""
    def fill(tmp: Path) -> None:
        images, labels = make_synthetic_classification(images_per_class, image_size=image_size, seed=seed)
        write_image_folder(images, labels, tmp)

    return build_folder_once(folder, fill, what=f"synthetic classification set ({images_per_class} images per "
                                                f"class, {image_size} px, seed {seed})")


def dataset_root(cfg, name: str) -> Path:
    """The folder of dataset ``name`` (a synthetic set is generated on first use).

    Raises:
        gn_det.config.ConfigError: ``name`` is not ImageNet's, registered or synthetic (the message lists the
            known ones).
        FileNotFoundError: the folder does not exist (the message says where it was looked for).
    """
    synthetic = _synthetic(cfg)
    if name in synthetic:
        per_class, size, seed = synthetic[name]
        folder = (cache_root() / "synthetic_cls" /
                  f"shapes-v{SYNTHETIC_LAYOUT_VERSION}-n{per_class}-s{size}-seed{seed}")
        return write_synthetic_image_folder(folder, per_class, size, seed)
    registered = _registered(cfg)
    if name in registered:
        root = Path(registered[name]).expanduser()
        how = f"registered through DATASETS.REGISTER as [{name!r}, {registered[name]!r}]"
    elif name in IMAGENET_SPLITS:
        root = datasets_root() / "imagenet" / IMAGENET_SPLITS[name]
        how = (f"set GN_DET_DATASETS to the folder holding imagenet/{IMAGENET_SPLITS[name]}/ "
               f"(now {os.environ.get('GN_DET_DATASETS', 'unset, so ./datasets')})")
    else:
        raise _unknown(cfg, name)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset {name!r}: folder {root.resolve()} not found; {how}")
    return root


def class_folders(root: str | os.PathLike) -> list[str]:
    """Sorted names of the class sub-folders of ``root`` (hidden folders excepted)."""
    return sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))


def dataset_classes(cfg, name: str) -> list[str] | None:
    """The class names of dataset ``name`` without reading its images or generating it; None when
    its folder is not there (yet)."""
    if name in _synthetic(cfg):
        return sorted(SYNTHETIC_CLASSES)
    try:
        return class_folders(dataset_root(cfg, name))
    except FileNotFoundError:
        return None


# ------------------------------------------------------------------------------- transforms
def random_resized_crop_box(height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
                            generator: torch.Generator) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random crop covering ``scale`` of the area with aspect ``ratio``.

    torchvision's ``RandomResizedCrop.get_params`` draw for draw (10 tries, then the centre crop of
    the nearest allowed aspect), but from ``generator`` instead of the global RNG.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class RandomResizedCropFlip:
    """Training transform: random-resized crop to ``size`` x ``size`` (bilinear, antialiased), then a
    horizontal flip with probability ``flip_prob``; every draw comes from the given generator."""

    def __init__(self, size: int, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                 flip_prob: float = 0.5):
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ConfigError(f"INPUT.RRC_SCALE must be (min, max) with 0 < min <= max <= 1, got {tuple(scale)}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ConfigError(f"INPUT.RRC_RATIO must be (min, max) with 0 < min <= max, got {tuple(ratio)}")
        self.size, self.scale, self.ratio, self.flip_prob = int(size), tuple(scale), tuple(ratio), float(flip_prob)

    def __call__(self, image: Image.Image, generator: torch.Generator) -> torch.Tensor:
        top, left, h, w = random_resized_crop_box(image.height, image.width, self.scale, self.ratio, generator)
        image = F.resized_crop(image, top, left, h, w, [self.size, self.size], antialias=True)
        if self.flip_prob > 0 and float(torch.rand(1, generator=generator)) < self.flip_prob:
            image = F.horizontal_flip(image)
        return F.pil_to_tensor(image)


class ResizeCenterCrop:
    """Test transform: shorter side to ``resize`` (bilinear, antialiased), centre crop ``crop``."""

    def __init__(self, resize: int, crop: int):
        if crop > resize:
            raise ConfigError(f"INPUT.TEST_CROP_SIZE ({crop}) must be <= INPUT.TEST_RESIZE ({resize})")
        self.resize, self.crop = int(resize), int(crop)

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        image = F.center_crop(F.resize(image, [self.resize], antialias=True), [self.crop, self.crop])
        return F.pil_to_tensor(image)


def build_classification_transform(cfg, is_train: bool):
    """The train (random-resized crop + flip) or test (resize + centre crop) transform of cfg.INPUT."""
    i = cfg.INPUT
    if is_train:
        if i.RANDOM_FLIP not in ("horizontal", "none"):
            raise ConfigError(f"INPUT.RANDOM_FLIP must be 'horizontal' or 'none', got {i.RANDOM_FLIP!r}")
        return RandomResizedCropFlip(i.CROP_SIZE, i.RRC_SCALE, i.RRC_RATIO, 0.5 if i.RANDOM_FLIP == "horizontal" else 0)
    return ResizeCenterCrop(i.TEST_RESIZE, i.TEST_CROP_SIZE)


# ---------------------------------------------------------------------------------- dataset
class ImageFolderDataset(Dataset):
    """The images of an ImageNet-layout folder with their class index (see the module docstring).

    Args:
        root: the folder; class ``i`` is its ``i``-th sub-folder in sorted order.
        transform: ``transform(pil_image, generator) -> uint8 Tensor[3, S, S]``.
        skip_bad: return a :class:`SkippedSample` for an unreadable image instead of raising.
        name: the dataset's name, for messages.

    Attributes:
        classes: the class names, in label order.

    Raises:
        DatasetError: ``root`` has no class sub-folder, or a class folder holds no image.
    """

    def __init__(self, root: str | os.PathLike, transform, *, skip_bad: bool = False, name: str = ""):
        self.root, self.transform, self.skip_bad = str(root), transform, bool(skip_bad)
        self.name = name or self.root
        self.classes = class_folders(self.root)
        if not self.classes:
            raise DatasetError(f"dataset {self.name!r}: {self.root} has no class sub-folder; put the images "
                               f"of each class into <root>/<class name>/ (ImageNet layout)")
        files, labels = [], []
        for label, cls in enumerate(self.classes):
            try:
                paths = find_images(os.path.join(self.root, cls))
            except ImageFolderError:
                raise DatasetError(f"dataset {self.name!r}: class folder {os.path.join(self.root, cls)} holds no "
                                   f"{'/'.join(IMAGE_EXTENSIONS)} image; remove it or add its images") from None
            files += [p.relative_to(self.root).as_posix() for p in paths]
            labels += [label] * len(paths)
        # One bytes array, not a list of str: no per-item objects to copy into every loader worker.
        self._files = np.array([f.encode("utf-8") for f in files], dtype=np.bytes_)
        self._labels = np.array(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._files)

    @property
    def labels(self) -> np.ndarray:
        """The class index of every image, in dataset order."""
        return self._labels

    def image_path(self, index: int) -> str:
        return os.path.join(self.root, self._files[index].decode("utf-8"))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | SkippedSample:
        index, seed = key if isinstance(key, tuple) else (key, None)
        path = self.image_path(index)
        try:
            image = read_image_pil(path)
        except ImageReadError as e:
            if self.skip_bad:
                return SkippedSample(path, str(e))
            raise DatasetError(f"{e} (dataset {self.name!r}); {_SKIP_HINT}") from None
        generator = torch.Generator().manual_seed(seed if seed is not None else index)
        try:
            tensor = self.transform(image, generator)
        except Exception as e:  # name the file, keep the cause
            message = f"{path}: failed to prepare the sample ({type(e).__name__}: {e})"
            if self.skip_bad:
                return SkippedSample(path, message)
            raise DatasetError(message) from e
        return {"image": tensor, "label": int(self._labels[index]), "file_name": path, "index": int(index)}


def build_classification_dataset(cfg, name: str, is_train: bool) -> ImageFolderDataset:
    """Dataset ``name`` with the train or test transform of ``cfg``."""
    return ImageFolderDataset(dataset_root(cfg, name), build_classification_transform(cfg, is_train),
                              skip_bad=cfg.DATALOADER.SKIP_BAD_SAMPLES, name=name)


# ----------------------------------------------------------------------------------- checks
def check_num_classes(cfg, name: str, classes: Sequence[str]) -> None:
    """Refuse a dataset with more classes than MODEL.CLASSIFIER.NUM_CLASSES outputs."""
    configured = cfg.MODEL.CLASSIFIER.NUM_CLASSES
    if configured < len(classes):
        raise ConfigError(f"dataset {name!r} has {len(classes)} classes but MODEL.CLASSIFIER.NUM_CLASSES is "
                         f"{configured}; set MODEL.CLASSIFIER.NUM_CLASSES {len(classes)}")
    if configured > len(classes):
        logger.warning("MODEL.CLASSIFIER.NUM_CLASSES is %d but dataset %r has %d classes: the extra outputs are "
                       "never a right answer", configured, name, len(classes))


def _check_same_classes(cfg, names: Sequence[str], classes: Sequence[str], where: str) -> None:
    """Refuse sets (of DATASETS.TRAIN and DATASETS.TEST) whose class lists differ from ``classes``;
    sets whose folder is not there are not checked here."""
    for other in names:
        other_classes = dataset_classes(cfg, other)
        if other_classes is not None and list(other_classes) != list(classes):
            diff = sorted(set(classes) ^ set(other_classes))
            raise ConfigError(f"{where} has {len(classes)} classes but {other!r} has {len(other_classes)}, and they "
                             f"differ (e.g. {diff[:5]}): label i must mean the same class in every training and "
                             f"test set; give them the same class folder names")


# ---------------------------------------------------------------------------------- loaders
def build_classification_train_loader(cfg, micro_batch_size: int, *, skip_batches: int = 0) -> SkipBadSamples:
    """Endless loader of this rank's training micro-batches (lists of ``micro_batch_size`` samples).

    DATASETS.TRAIN (concatenated) must share one class list with each other and with DATASETS.TEST
    (those whose folder exists); shuffled with SEED, sharded over ranks, ``skip_batches``
    micro-batches skipped first (exact resume), DATALOADER.NUM_WORKERS workers.
    """
    names = list(cfg.DATASETS.TRAIN)
    if not names:
        raise ConfigError("DATASETS.TRAIN is empty: name at least one dataset to train on")
    datasets = [build_classification_dataset(cfg, n, is_train=True) for n in names]
    classes = datasets[0].classes
    _check_same_classes(cfg, names[1:] + list(cfg.DATASETS.TEST), classes, f"training set {names[0]!r}")
    check_num_classes(cfg, names[0], classes)
    dataset = datasets[0] if len(datasets) == 1 else ConcatDatasets(datasets)
    logger.info("training on %s: %d images, %d classes", " + ".join(names), len(dataset), len(classes))
    return build_train_loader(dataset, micro_batch_size, seed=cfg.SEED, num_workers=cfg.DATALOADER.NUM_WORKERS,
                              skip_batches=skip_batches)


def build_classification_test_loader(cfg, dataset_name: str) -> SkipBadSamples:
    """This rank's shard of ``dataset_name`` in order, TEST.IMS_PER_BATCH images per batch, test
    transform; every image on exactly one rank (the evaluator gathers the shards)."""
    dataset = build_classification_dataset(cfg, dataset_name, is_train=False)
    _check_same_classes(cfg, list(cfg.DATASETS.TRAIN), dataset.classes, f"test set {dataset_name!r}")
    check_num_classes(cfg, dataset_name, dataset.classes)
    return build_test_loader(dataset, seed=cfg.SEED, num_workers=cfg.DATALOADER.NUM_WORKERS,
                             batch_size=cfg.TEST.IMS_PER_BATCH)
