"""A map-style dataset over a COCO-format instances json (read through pycocotools).

What it does, as COCO training code does it:

- Category ids (sparse in COCO) map to contiguous labels 1..K by sorted id; 0 is background
  (torchvision's convention). The reverse map is kept for evaluation.
- Masks come from polygons, compressed RLE or uncompressed RLE alike.
- Crowd regions (``iscrowd=1``) never become training targets.
- With ``filter_empty`` (training), images with no annotation or only crowd annotations are
  dropped, and the counts are logged: ``kept N of M images: X without annotations,
  Y with only crowd, Z bad``.
- Annotations that cannot become a target are dropped and counted in the same summary, never
  silently: zero-size boxes, boxes entirely outside their image (they would clamp to zero size),
  and annotations whose ``image_id`` is not in the json's ``images`` (also named in a warning).
- Bad input never crashes deep inside a worker: a bad annotation (checked up front), a
  missing or corrupt image (found on load) raises :class:`DatasetError` naming the json,
  the annotation id or the image file; with ``skip_bad`` the image is dropped and counted
  instead (bad annotations at construction, bad images on load as a :class:`SkippedSample`
  that the loader drops, counts and reports).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import pickle
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from pycocotools.coco import COCO
from torch.utils.data import Dataset

from gn_det.data.common import SkippedSample  # re-exported: detection code names it here
from gn_det.utils.coco_mask import decode_segmentation  # re-exported
from gn_det.utils.image_io import ImageReadError, read_image_pil

__all__ = [
    "DatasetError",
    "SkippedSample",
    "FilterStats",
    "CocoDetectionDataset",
    "load_coco_json",
    "contiguous_category_maps",
    "decode_segmentation",
]

logger = logging.getLogger(__name__)

_SKIP_HINT = "set DATALOADER.SKIP_BAD_SAMPLES True to skip such images (counted and reported)"


class DatasetError(RuntimeError):
    """A dataset file or annotation is missing or invalid. The message names it.

    A plain single-message exception, so the DataLoader can re-raise it in the main process.
    """


@dataclass
class FilterStats:
    """How many images a dataset kept, and why it dropped the others."""

    total: int = 0
    kept: int = 0
    without_annotations: int = 0
    only_crowd: int = 0
    bad: int = 0
    # annotations dropped, not images
    degenerate_boxes: int = 0
    outside_boxes: int = 0
    orphan_annotations: int = 0

    def summary(self, filter_empty: bool = True) -> str:
        """``kept N of M images: ...; dropped ... annotations ...`` (one line)."""
        images = (f"{self.without_annotations} without annotations, {self.only_crowd} with only crowd, "
                  f"{self.bad} bad" if filter_empty else f"empty images kept, {self.bad} bad")
        return (
            f"kept {self.kept} of {self.total} images: {images}; dropped "
            f"{self.degenerate_boxes} annotations with a zero-width or zero-height box, "
            f"{self.outside_boxes} with a box entirely outside its image, "
            f"{self.orphan_annotations} whose image_id is not in the json's images"
        )


def load_coco_json(json_file: str) -> COCO:
    """A pycocotools ``COCO`` index of ``json_file``; clear errors for a missing or broken file."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"COCO annotation file not found: {json_file}")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        try:
            coco = COCO(json_file)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{json_file} is not valid json: {e}") from e
        except (KeyError, TypeError, AttributeError) as e:
            raise DatasetError(f"{json_file} is not a COCO instances file ({type(e).__name__}: {e})") from e
    for key in ("images", "annotations", "categories"):
        if key not in coco.dataset:
            raise DatasetError(f"{json_file} is not a COCO instances file: no {key!r} list")
    return coco


def contiguous_category_maps(categories: list[dict]) -> tuple[list[str], dict[int, int]]:
    """Class names and the label -> category id map: labels 1..K follow the sorted ids."""
    cats = sorted(categories, key=lambda c: c["id"])
    return [c["name"] for c in cats], {i + 1: int(c["id"]) for i, c in enumerate(cats)}


def _is_finite_box(bbox) -> bool:
    """A well-formed [x, y, w, h] of finite numbers."""
    return (isinstance(bbox, (list, tuple)) and len(bbox) == 4
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox))


def _is_degenerate_box(bbox) -> bool:
    """A well-formed, finite [x, y, w, h] box with zero (or negative) width or height."""
    return _is_finite_box(bbox) and (bbox[2] <= 0 or bbox[3] <= 0)


def _is_outside_image(bbox, width, height) -> bool:
    """A well-formed box with no area inside a ``width`` x ``height`` image: clamped to the
    image (as samples are), it has zero width or height."""
    if not _is_finite_box(bbox) or not all(isinstance(v, (int, float)) for v in (width, height)):
        return False
    x, y, w, h = bbox
    return min(x + w, width) <= max(x, 0) or min(y + h, height) <= max(y, 0)


def _annotation_problem(ann: dict, image: dict, category_ids: set[int]) -> str | None:
    """Why ``ann`` cannot be used, or None. Drops (in place) polygon parts with < 3 points.

    Zero-size boxes are not checked here: ``_index`` drops them (counted) before.
    """
    if ann.get("category_id") not in category_ids:
        return f"category_id {ann.get('category_id')!r} is not in the json's categories"
    bbox = ann.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return f"bbox {bbox!r} is not [x, y, width, height]"
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox):
        return f"bbox {bbox!r} has a non-finite value"
    seg = ann.get("segmentation")
    if seg is None:
        return "no segmentation"
    if isinstance(seg, list):
        # As detectron2 does: drop degenerate parts, fail only when none is left.
        valid = [p for p in seg if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
        if not valid:
            return "polygon segmentation has no part with >= 3 points"
        ann["segmentation"] = valid
    elif isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            return "RLE segmentation lacks 'counts' or 'size'"
        if list(seg["size"]) != [image["height"], image["width"]]:
            return f"RLE size {seg['size']} differs from the image size {[image['height'], image['width']]}"
    else:
        return f"segmentation of type {type(seg).__name__} is neither polygons nor RLE"
    return None


class _PackedRecords:
    """A list of dicts stored as one pickled byte buffer.

    DataLoader workers are forked; touching millions of small Python objects (refcounts)
    would copy their pages into every worker, growing memory with the worker count. One
    numpy buffer is shared as is (the reason detectron2 serializes its dataset lists too).
    """

    def __init__(self, records: list[dict]):
        blobs = [pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in records]
        self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._buffer = np.frombuffer(b"".join(blobs), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> dict:
        start = int(self._ends[index - 1]) if index > 0 else 0
        return pickle.loads(self._buffer[start:int(self._ends[index])].tobytes())


class CocoDetectionDataset(Dataset):
    """COCO-format instance segmentation samples.

    ``dataset[i]`` (or ``dataset[(i, seed)]``, the seed driving random augmentation) returns::

        {"image": float32 Tensor[3, H, W], RGB 0-255, after ``transform``,
         "image_id": int, "height": original H, "width": original W, "file_name": str,
         "instances": {"boxes": float32 Tensor[N, 4] xyxy in transformed pixels,
                       "labels": int64 Tensor[N] in 1..K,
                       "masks": uint8 Tensor[N, H, W]}}

    or a :class:`SkippedSample` when the image is bad and ``skip_bad`` is on.

    Args:
        json_file: COCO instances json.
        image_root: folder the json's ``file_name`` entries are relative to.
        filter_empty: drop images without non-crowd annotations (training).
        skip_bad: drop and count bad annotations/images instead of raising.
        transform: ``transform(image, boxes, masks, generator) -> (image, boxes, masks, keep)``
            on a uint8 (3, H, W) image, xyxy boxes and uint8 masks, ``keep`` selecting the
            labels of the boxes kept (see :class:`gn_det.data.transforms.DetectionTransform`);
            None: no transform.
        with_masks: decode masks (False for box-only models: saves time).
        name: dataset name, for messages.
    """

    def __init__(
        self,
        json_file: str,
        image_root: str,
        *,
        filter_empty: bool = True,
        skip_bad: bool = False,
        transform: Callable | None = None,
        with_masks: bool = True,
        name: str | None = None,
    ) -> None:
        self.json_file = str(json_file)
        self.image_root = str(image_root)
        self.name = name or os.path.basename(self.json_file)
        self.skip_bad = skip_bad
        self.transform = transform
        self.with_masks = with_masks

        # a large json takes a while: say so in the log, which shows no bar (the summary below ends it)
        logger.info("%s: reading and indexing %s", self.name, self.json_file)
        coco = load_coco_json(self.json_file)
        self.class_names, self.label_to_category_id = contiguous_category_maps(
            coco.dataset["categories"]
        )
        self.category_id_to_label = {c: lbl for lbl, c in self.label_to_category_id.items()}
        self.stats = FilterStats()
        records = self._index(coco, filter_empty)
        self._records = _PackedRecords(records)
        self._groups = np.array([0 if r["width"] >= r["height"] else 1 for r in records], np.int8)
        del coco, records  # the packed copy is all we keep
        logger.info("%s: %s", self.name, self.stats.summary(filter_empty))

    # ------------------------------------------------------------------ index
    def _index(self, coco: COCO, filter_empty: bool) -> list[dict]:
        """One compact record per usable image; counts the others in ``self.stats``."""
        category_ids = set(self.category_id_to_label)
        self._count_orphans(coco)
        records = []
        for image_id in sorted(coco.imgs):
            image = coco.imgs[image_id]
            self.stats.total += 1
            missing = [k for k in ("file_name", "height", "width") if k not in image]
            if missing:
                self._bad(f"{self.json_file}: image id {image_id} has no {missing} field")
                continue
            anns = [a for a in coco.imgToAnns.get(image_id, []) if not a.get("ignore", 0)]
            # Zero-area boxes mark no object (COCO train2017 has two, e.g. annotation 918): drop
            # and count the annotation, as detectron2 does, rather than the image or the run.
            kept_anns = [a for a in anns if not _is_degenerate_box(a.get("bbox"))]
            self.stats.degenerate_boxes += len(anns) - len(kept_anns)
            # A box entirely outside the image would be clamped to zero size when loaded.
            anns = [a for a in kept_anns if not _is_outside_image(a.get("bbox"), image["width"], image["height"])]
            self.stats.outside_boxes += len(kept_anns) - len(anns)
            problem = next(
                ((a, p) for a in anns if (p := _annotation_problem(a, image, category_ids))), None
            )
            if problem is not None:
                ann, why = problem
                self._bad(
                    f"{self.json_file}: annotation id {ann.get('id')} of image "
                    f"{image['file_name']!r} (id {image_id}): {why}"
                )
                continue
            instances = [a for a in anns if not a.get("iscrowd", 0)]
            if filter_empty and not anns:
                self.stats.without_annotations += 1
                continue
            if filter_empty and not instances:
                self.stats.only_crowd += 1
                continue
            records.append(
                {
                    "image_id": int(image_id),
                    "file_name": image["file_name"],
                    "height": int(image["height"]),
                    "width": int(image["width"]),
                    "annotations": [
                        {
                            "bbox": a["bbox"],
                            "label": self.category_id_to_label[a["category_id"]],
                            "segmentation": a["segmentation"],
                        }
                        for a in instances
                    ],
                }
            )
        self.stats.kept = len(records)
        return records

    def _count_orphans(self, coco: COCO) -> None:
        """Count (and name in a warning) the annotations whose image_id is not in ``images``:
        no image is loaded for them, so they are dropped."""
        orphans = [a for a in coco.dataset["annotations"] if a.get("image_id") not in coco.imgs]
        self.stats.orphan_annotations = len(orphans)
        if orphans:
            shown = ", ".join(f"{a.get('id')} (image_id {a.get('image_id')!r})" for a in orphans[:5])
            more = f", ... ({len(orphans) - 5} more)" if len(orphans) > 5 else ""
            logger.warning("%s: %d annotation(s) name an image_id that is not in the json's images and are "
                           "not used: annotation id %s%s. Check that the json's images list is complete",
                           self.json_file, len(orphans), shown, more)

    def _bad(self, message: str) -> None:
        if not self.skip_bad:
            raise DatasetError(f"{message}. Fix it, or {_SKIP_HINT}")
        logger.warning("skipping: %s", message)
        self.stats.bad += 1

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self._records)

    def aspect_ratio_groups(self) -> list[int]:
        """0 for landscape (or square) images, 1 for portrait ones, from the json's sizes."""
        return self._groups.tolist()

    def image_path(self, index: int) -> str:
        return os.path.join(self.image_root, self._records[index]["file_name"])

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | SkippedSample:
        index, seed = key if isinstance(key, tuple) else (key, None)
        record = self._records[index]  # unpickled once per sample
        path = os.path.join(self.image_root, record["file_name"])
        try:
            return self._load(index, record, path, seed)
        except DatasetError as e:
            if self.skip_bad:
                return SkippedSample(path, str(e))
            raise
        except Exception as e:  # anything else: name the file, keep the cause
            message = f"{path}: failed to prepare the sample ({type(e).__name__}: {e})"
            if self.skip_bad:
                return SkippedSample(path, message)
            raise DatasetError(message) from e

    def _load(self, index: int, record: dict, path: str, seed: int | None) -> dict[str, Any]:
        h, w = record["height"], record["width"]
        image = self._read_image(path, record)

        anns = record["annotations"]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        labels = torch.tensor([a["label"] for a in anns], dtype=torch.int64)
        if self.with_masks and anns:
            masks = torch.from_numpy(np.stack([decode_segmentation(a["segmentation"], h, w) for a in anns]))
        else:
            masks = torch.zeros((len(anns) if self.with_masks else 0, h, w), dtype=torch.uint8)

        if self.transform is not None:
            generator = torch.Generator()
            generator.manual_seed(seed if seed is not None else index)
            image, boxes, masks, keep = self.transform(image, boxes, masks, generator)
            labels = labels[keep]
        instances = {"boxes": boxes.as_subclass(torch.Tensor), "labels": labels}
        if self.with_masks:
            instances["masks"] = masks.as_subclass(torch.Tensor)
        return {
            "image": image.as_subclass(torch.Tensor).float(),
            "image_id": record["image_id"],
            "height": h,
            "width": w,
            "file_name": path,
            "instances": instances,
        }

    def _read_image(self, path: str, record: dict) -> torch.Tensor:
        """uint8 (3, H, W) RGB; DatasetError naming the file if missing, corrupt or mis-sized."""
        where = f"image id {record['image_id']} of {self.json_file}"
        try:
            rgb = read_image_pil(path)
        except ImageReadError as e:
            hint = (f"check that the dataset's image_root ({self.image_root}) holds the json's file_name "
                    f"entries, or {_SKIP_HINT}") if e.reason == "file not found" else _SKIP_HINT
            raise DatasetError(f"{e} ({where}); {hint}") from None
        if (rgb.height, rgb.width) != (record["height"], record["width"]):
            raise DatasetError(
                f"image {path} is {rgb.width}x{rgb.height} but the json ({where}) says "
                f"{record['width']}x{record['height']}"
            )
        return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()
