"""COCO box and mask AP with pycocotools, for any COCO-format dataset.

The evaluator follows the engine's :class:`~gn_det.engine.task.Evaluator` protocol:
``reset()``, ``process(inputs, outputs)`` once per test batch, ``evaluate()`` at the end.
Predictions are turned into COCO results right away (boxes as xywh, masks as RLE), so
memory stays small; at the end they are gathered on the main process, written to
``coco_instances_results.json`` and scored with ``COCOeval``.

Metrics are in percent, keyed as detectron2 keys them: ``{"bbox": {"AP", "AP50", "AP75",
"APs", "APm", "APl", "AP-<class>"...}, "segm": {...}}``. A metric COCO cannot compute (no
ground truth of that size or class) is NaN, as in detectron2.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gn_det.utils.io import atomic_write_text
from gn_det.data.coco_dataset import contiguous_category_maps, load_coco_json
from gn_det.utils import comm

from ..utils.table import format_metrics_table, format_per_class_table

__all__ = ["COCOEvaluator", "COCODatasetInfo", "instances_to_coco_results", "summarize_coco_eval",
           "RESULTS_FILE", "COCO_METRIC_NAMES"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "coco_instances_results.json"
# Order of COCOeval.stats for bbox/segm.
COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_MASK_THRESHOLD = 0.5  # for soft (probability) masks


@dataclass
class COCODatasetInfo:
    """What the evaluator needs to know about a dataset.

    Attributes:
        json_file: path of the COCO-format ground-truth json.
        class_names: name of contiguous label ``i + 1`` at index ``i``.
        label_to_category_id: contiguous label (1..K, as the model predicts) -> COCO category id.
    """

    json_file: str
    class_names: list[str]
    label_to_category_id: dict[int, int]

    @classmethod
    def from_json(cls, json_file: str, coco: COCO | None = None) -> "COCODatasetInfo":
        """Labels 1..K follow the categories sorted by id (torchvision's and detectron2's rule)."""
        coco = coco if coco is not None else load_coco_json(json_file)
        return cls(json_file, *contiguous_category_maps(coco.dataset["categories"]))

    @classmethod
    def from_dataset_name(cls, name: str, cfg=None) -> "COCODatasetInfo":
        """Look a registered dataset up with :func:`gn_det.data.get_dataset_metadata`.

        ``cfg``: its DATASETS.REGISTER / DATASETS.SYNTHETIC entries are registered first.
        """
        from gn_det.data import get_dataset_metadata

        meta = get_dataset_metadata(name, cfg)
        return cls(str(meta.json_file), list(meta.class_names), dict(meta.label_to_category_id))


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def instances_to_coco_results(instances: Mapping[str, Any], image_id: int,
                              label_to_category_id: Mapping[int, int]) -> list[dict]:
    """Convert one image's predictions into COCO result dicts.

    Args:
        instances: ``{"boxes": (N, 4) xyxy in original image pixels, "scores": (N,),
            "labels": (N,) contiguous labels 1..K, optionally "masks": (N, H, W) or
            (N, 1, H, W), binary or probabilities}``; tensors or arrays.
        image_id: the COCO image id.
        label_to_category_id: contiguous label -> COCO category id.

    Returns:
        A list of ``{"image_id", "category_id", "bbox" (xywh), "score"[, "segmentation" (RLE)]}``.
    """
    boxes = _to_numpy(instances["boxes"]).astype(np.float64).reshape(-1, 4)
    scores = _to_numpy(instances["scores"]).astype(np.float64).reshape(-1)
    labels = _to_numpy(instances["labels"]).astype(np.int64).reshape(-1)
    if not (len(boxes) == len(scores) == len(labels)):
        raise ValueError(f"Image {image_id}: {len(boxes)} boxes, {len(scores)} scores and "
                         f"{len(labels)} labels; they must match")
    unknown = sorted(set(labels.tolist()) - set(label_to_category_id))
    if unknown:
        raise ValueError(f"Image {image_id}: predicted labels {unknown} have no COCO category; "
                         f"known labels are {sorted(label_to_category_id)} (is "
                         f"MODEL.ROI_HEADS.NUM_CLASSES right for this dataset?)")
    xywh = boxes.copy()
    xywh[:, 2:] -= xywh[:, :2]

    rles = None
    if instances.get("masks") is not None and len(boxes):
        masks = _to_numpy(instances["masks"])
        if masks.ndim == 4:  # torchvision's (N, 1, H, W)
            masks = masks[:, 0]
        if masks.dtype != np.uint8 and masks.dtype != bool:
            masks = masks >= _MASK_THRESHOLD
        rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
        for rle in rles:
            rle["counts"] = rle["counts"].decode("ascii")  # bytes are not JSON

    results = []
    for i in range(len(boxes)):
        r = {"image_id": int(image_id), "category_id": int(label_to_category_id[int(labels[i])]),
             "bbox": [round(float(v), 3) for v in xywh[i]], "score": round(float(scores[i]), 5)}
        if rles is not None:
            r["segmentation"] = rles[i]
        results.append(r)
    return results


def summarize_coco_eval(coco_eval: COCOeval, class_names: Sequence[str],
                        category_ids: Sequence[int]) -> dict[str, float]:
    """Metrics in percent from an evaluated+accumulated+summarized ``COCOeval``.

    Per-class AP is averaged over IoU 0.5:0.95 at area "all" and the last maxDets, like
    COCO's own AP; ``class_names[i]`` names ``category_ids[i]``.
    """
    metrics = {name: float(coco_eval.stats[i] * 100) if coco_eval.stats[i] >= 0 else float("nan")
               for i, name in enumerate(COCO_METRIC_NAMES)}
    # precision: [T iou thresholds, R recall points, K categories, A areas, M maxDets]
    precision = coco_eval.eval["precision"]
    cat_index = {c: k for k, c in enumerate(coco_eval.params.catIds)}
    for name, cat_id in zip(class_names, category_ids):
        p = precision[:, :, cat_index[cat_id], 0, -1] if cat_id in cat_index else np.array([-1.0])
        p = p[p > -1]
        metrics[f"AP-{name}"] = float(np.mean(p) * 100) if p.size else float("nan")
    return metrics


class COCOEvaluator:
    """Box and mask AP on a COCO-format dataset (the Evaluator of the detection task).

    Args:
        dataset: a registered dataset name (see :func:`gn_det.data.get_dataset_metadata`),
            a path to a COCO json, or a :class:`COCODatasetInfo`.
        output_dir: where ``coco_instances_results.json`` is written; None writes nothing.
        distributed: gather predictions from every rank before scoring (only the main
            process returns metrics).
        tasks: which of "bbox", "segm" to score; None: "bbox", plus "segm" when the
            predictions carry masks.
        max_dets_per_image: COCO's largest maxDets (100, as COCO's AP).
        cfg: with a dataset name, registers the config's DATASETS.REGISTER/SYNTHETIC sets first.

    Example::

        evaluator = COCOEvaluator("synthetic_val", "output/inference")
        evaluator.reset()
        for batch in loader:
            evaluator.process(batch, model(batch))
        metrics = evaluator.evaluate()   # {"bbox": {"AP": ...}, "segm": {...}}
    """

    def __init__(self, dataset: str | COCODatasetInfo, output_dir: str | None = None,
                 distributed: bool = True, tasks: Iterable[str] | None = None,
                 max_dets_per_image: int = 100, cfg=None):
        if isinstance(dataset, COCODatasetInfo):
            self._info = dataset
        elif str(dataset).endswith(".json") or os.path.isfile(str(dataset)):
            self._info = COCODatasetInfo.from_json(str(dataset))
        else:
            self._info = COCODatasetInfo.from_dataset_name(str(dataset), cfg)
        self._dataset_name = dataset.json_file if isinstance(dataset, COCODatasetInfo) else str(dataset)
        self._output_dir = output_dir
        self._distributed = distributed
        self._tasks = tuple(tasks) if tasks is not None else None
        for t in self._tasks or ():
            if t not in ("bbox", "segm"):
                raise ValueError(f"Unknown COCO evaluation task {t!r}; use 'bbox' and/or 'segm'")
        self._max_dets = max_dets_per_image
        self._coco_gt: COCO | None = None  # loaded on first evaluate()
        self._predictions: list[dict] = []

    @property
    def info(self) -> COCODatasetInfo:
        return self._info

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]) -> None:
        """Record one batch: ``inputs[i]["image_id"]`` and the model's ``outputs[i]``.

        ``outputs[i]`` holds "boxes" (xyxy, original image size), "scores", "labels"
        (1..K) and optionally "masks"; a dict nesting them under "instances" also works.
        """
        if len(inputs) != len(outputs):
            raise ValueError(f"process() got {len(inputs)} inputs but {len(outputs)} outputs")
        for inp, out in zip(inputs, outputs):
            out = out.get("instances", out)
            image_id = int(inp["image_id"])
            self._predictions.append({
                "image_id": image_id,
                "has_masks": out.get("masks") is not None,
                "instances": instances_to_coco_results(out, image_id, self._info.label_to_category_id),
            })

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Gather, write the results json, score; ``{}`` on non-main processes."""
        predictions = self._gather(self._predictions)
        if predictions is None:
            return {}
        image_ids = sorted({p["image_id"] for p in predictions})
        results = [r for p in predictions for r in p["instances"]]
        tasks = self._tasks or (("bbox", "segm") if predictions and all(p["has_masks"] for p in predictions)
                                else ("bbox",))
        if self._output_dir:
            path = os.path.join(self._output_dir, RESULTS_FILE)
            atomic_write_text(json.dumps(results), path)
            logger.info("Wrote %d COCO results for %d images to %s", len(results), len(image_ids), path)
        if self._coco_gt is None:
            self._coco_gt = load_coco_json(self._info.json_file)
        _check_image_ids(image_ids, self._coco_gt, self._info.json_file)

        metrics = {}
        for task in tasks:
            metrics[task] = self._evaluate_task(task, results, image_ids)
            self._log_metrics(task, metrics[task])
        return metrics

    def _evaluate_task(self, task: str, results: list[dict], image_ids: list[int]) -> dict[str, float]:
        names = self._info.class_names
        cat_ids = [self._info.label_to_category_id[i + 1] for i in range(len(names))]
        if not image_ids:
            logger.warning("No image of %s was evaluated: %s metrics are NaN", self._dataset_name, task)
            return {**{k: float("nan") for k in COCO_METRIC_NAMES}, **{f"AP-{n}": float("nan") for n in names}}
        if not results:
            # loadRes cannot take an empty list; an empty result set scores 0 wherever there is
            # ground truth (and NaN where there is none), like any other.
            logger.warning("No %s predictions on %s: AP is 0", task, self._dataset_name)
            coco_dt = COCO()
            coco_dt.dataset = {"images": self._coco_gt.dataset["images"], "annotations": [],
                               "categories": self._coco_gt.dataset["categories"]}
            with contextlib.redirect_stdout(io.StringIO()):
                coco_dt.createIndex()
        else:
            if task == "segm" and any("segmentation" not in r for r in results):
                raise ValueError("segm evaluation needs masks in every prediction (MODEL.MASK_ON?)")
            # loadRes picks its branch from the keys present: with "bbox" kept, segm results would
            # get the box area (wrong APs/m/l), so keep one kind only.
            drop = "segmentation" if task == "bbox" else "bbox"
            results = [{k: v for k, v in r.items() if k != drop} for r in results]
            with contextlib.redirect_stdout(io.StringIO()):
                coco_dt = self._coco_gt.loadRes(results)
        coco_eval = COCOeval(self._coco_gt, coco_dt, task)
        coco_eval.params.imgIds = image_ids  # score only the images that were run
        coco_eval.params.maxDets = [1, 10, self._max_dets]
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        logger.debug("COCOeval %s:\n%s", task, summary.getvalue())
        return summarize_coco_eval(coco_eval, names, cat_ids)

    def _log_metrics(self, task: str, metrics: Mapping[str, float]) -> None:
        overall = {k: metrics[k] for k in COCO_METRIC_NAMES}
        per_class = {k[len("AP-"):]: v for k, v in metrics.items() if k.startswith("AP-")}
        logger.info("Evaluation results for %s on %s:\n%s\nPer-category %s AP:\n%s", task,
                    self._dataset_name, format_metrics_table(overall), task,
                    format_per_class_table(per_class))

    def _gather(self, predictions: list[dict]) -> list[dict] | None:
        """All ranks' predictions on the main process, None elsewhere."""
        if not self._distributed or comm.get_world_size() == 1:
            return predictions
        gathered = comm.all_gather(predictions)
        if not comm.is_main_process():
            return None
        # A distributed sampler may pad the last batch by repeating images: keep one copy.
        merged: dict[int, dict] = {}
        for part in gathered:
            for p in part:
                merged.setdefault(p["image_id"], p)
        return list(merged.values())


def _check_image_ids(image_ids: list[int], coco_gt: COCO, json_file: str) -> None:
    missing = [i for i in image_ids if i not in coco_gt.imgs]
    if missing:
        raise ValueError(f"{len(missing)} evaluated image ids (e.g. {missing[:5]}) are not in "
                         f"{json_file}: the test loader and the evaluator use different datasets")
