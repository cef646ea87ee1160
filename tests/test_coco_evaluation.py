"""COCOEvaluator on a tiny hand-made COCO set with non-contiguous category ids."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from gn_det.config import get_cfg
from gn_det.data import DatasetError, generate_synthetic_coco, get_dataset_metadata, register_coco_instances
from gn_det.engine.task import get_task
from gn_det.evaluation import COCOEvaluator
from gn_det.evaluation.coco_evaluation import RESULTS_FILE, COCODatasetInfo

# pycocotools' own mask decoding warns under numpy 2; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# Category ids deliberately not 1..K and not in name order: labels follow sorted ids,
# so label 1 -> id 2 ("circle"), 2 -> id 5 ("square"), 3 -> id 9 ("triangle").
CATEGORIES = [{"id": 5, "name": "square"}, {"id": 2, "name": "circle"}, {"id": 9, "name": "triangle"}]
CATEGORY_TO_LABEL = {2: 1, 5: 2, 9: 3}
H, W = 96, 128


def _polygon_box(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


@pytest.fixture
def coco_json(tmp_path):
    """3 images (ids 10, 20, 30), 6 objects (small and medium), polygon and RLE masks."""
    objects = {  # image id -> [(category id, x, y, w, h)]
        10: [(5, 4, 6, 40, 36), (2, 70, 50, 12, 10)],
        20: [(9, 10, 10, 50, 60), (5, 80, 8, 30, 40)],
        30: [(2, 20, 30, 8, 9), (9, 60, 20, 44, 44)],
    }
    images, annotations = [], []
    for image_id, objs in objects.items():
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": H, "width": W})
        for cat, x, y, w, h in objs:
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                   "bbox": [x, y, w, h], "area": float(w * h), "iscrowd": 0}
            if cat == 9:  # an uncompressed RLE mask, as COCO stores some objects
                m = np.zeros((H, W), np.uint8, order="F")
                m[y:y + h, x:x + w] = 1
                rle = mask_util.encode(m)
                ann["segmentation"] = {"size": [H, W], "counts": rle["counts"].decode("ascii")}
            else:
                ann["segmentation"] = _polygon_box(x, y, w, h)
            annotations.append(ann)
    path = tmp_path / "instances_tiny.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return str(path)


def _load_gt(json_path):
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        return COCO(json_path)


def _ground_truth_as_predictions(json_path, shift_fraction=0.0, soft_masks=False):
    """(inputs, outputs) for every image: the ground truth, boxes shifted right by a fraction of w."""
    data = json.loads(open(json_path).read())
    coco = _load_gt(json_path)
    inputs, outputs = [], []
    for img in data["images"]:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        boxes = torch.tensor([[a["bbox"][0] + shift_fraction * a["bbox"][2], a["bbox"][1],
                               a["bbox"][0] + (1 + shift_fraction) * a["bbox"][2],
                               a["bbox"][1] + a["bbox"][3]] for a in anns], dtype=torch.float32)
        masks = torch.from_numpy(np.stack([coco.annToMask(a) for a in anns]))
        if soft_masks:  # torchvision's raw output: (N, 1, H, W) probabilities
            masks = masks[:, None].float() * 0.9 + 0.05
        inputs.append({"image_id": img["id"], "height": H, "width": W})
        outputs.append({"boxes": boxes, "scores": torch.linspace(0.9, 0.8, len(anns)),
                        "labels": torch.tensor([CATEGORY_TO_LABEL[a["category_id"]] for a in anns]),
                        "masks": masks})
    return inputs, outputs


def _evaluate(json_path, inputs, outputs, output_dir=None, batch_size=2):
    evaluator = COCOEvaluator(json_path, output_dir, distributed=False)
    evaluator.reset()
    for i in range(0, len(inputs), batch_size):
        evaluator.process(inputs[i:i + batch_size], outputs[i:i + batch_size])
    return evaluator.evaluate()


def test_dataset_info_maps_labels_to_sorted_category_ids(coco_json):
    info = COCODatasetInfo.from_json(coco_json)
    assert info.class_names == ["circle", "square", "triangle"]
    assert info.label_to_category_id == {1: 2, 2: 5, 3: 9}


@pytest.mark.parametrize("soft_masks", [False, True])
def test_perfect_predictions_give_ap_100(coco_json, soft_masks):
    metrics = _evaluate(coco_json, *_ground_truth_as_predictions(coco_json, soft_masks=soft_masks))
    assert set(metrics) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        m = metrics[task]
        for key in ("AP", "AP50", "AP75", "APs", "APm", "AP-circle", "AP-square", "AP-triangle"):
            assert m[key] == pytest.approx(100.0), (task, key, m[key])
        assert math.isnan(m["APl"])  # no object above 96^2 pixels: COCO cannot compute it


def test_shifted_boxes_lower_box_ap_to_the_iou_thresholds_they_pass(coco_json):
    # Shifting a box right by d = 0.2346 w gives IoU (w - d) / (w + d) = 0.62 with its ground
    # truth: a hit at IoU thresholds 0.50, 0.55, 0.60, a miss at 0.65 ... 0.95, so AP = 3/10.
    d = 0.38 / 1.62
    metrics = _evaluate(coco_json, *_ground_truth_as_predictions(coco_json, shift_fraction=d))
    box = metrics["bbox"]
    assert box["AP"] == pytest.approx(30.0, abs=0.01)
    assert box["AP50"] == pytest.approx(100.0)
    assert box["AP75"] == pytest.approx(0.0)
    # The masks were not shifted: mask AP stays perfect.
    assert metrics["segm"]["AP"] == pytest.approx(100.0)


def test_empty_predictions_give_zero_ap_with_a_warning(coco_json, caplog):
    inputs = [{"image_id": i} for i in (10, 20, 30)]
    outputs = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64),
                "masks": torch.zeros(0, H, W, dtype=torch.uint8)} for _ in inputs]
    with caplog.at_level(logging.WARNING):
        metrics = _evaluate(coco_json, inputs, outputs)
    for task in ("bbox", "segm"):
        assert metrics[task]["AP"] == 0.0 and metrics[task]["AP-square"] == 0.0
        assert math.isnan(metrics[task]["APl"])  # no large ground truth: undefined, as with predictions
    assert "No bbox predictions" in caplog.text


def test_no_evaluated_image_gives_nan_with_a_warning(coco_json, caplog):
    with caplog.at_level(logging.WARNING):
        metrics = _evaluate(coco_json, [], [])
    assert math.isnan(metrics["bbox"]["AP"])
    assert "No image of" in caplog.text


def test_results_json_is_valid_coco_with_mapped_category_ids(coco_json, tmp_path):
    out_dir = tmp_path / "inference"
    inputs, outputs = _ground_truth_as_predictions(coco_json)
    _evaluate(coco_json, inputs, outputs, output_dir=str(out_dir))
    results = json.loads((out_dir / RESULTS_FILE).read_text())
    gt = json.loads(open(coco_json).read())["annotations"]
    assert len(results) == len(gt) == 6
    assert not [f for f in os.listdir(out_dir) if f != RESULTS_FILE]  # no temp file left behind
    # Results come out in ground-truth order here: compare each one with its ground truth.
    for r, g in zip(results, gt):
        assert r["image_id"] == g["image_id"]
        assert r["category_id"] == g["category_id"]
        assert r["bbox"] == pytest.approx(g["bbox"], abs=1e-3)  # xyxy -> xywh
        assert mask_util.area(r["segmentation"]) == g["area"]
        assert isinstance(r["segmentation"]["counts"], str)


def test_only_processed_images_are_scored(coco_json):
    inputs, outputs = _ground_truth_as_predictions(coco_json)
    metrics = _evaluate(coco_json, inputs[:1], outputs[:1])  # image 10 only: no triangle there
    assert metrics["bbox"]["AP"] == pytest.approx(100.0)
    assert math.isnan(metrics["bbox"]["AP-triangle"])


def test_boxes_only_model_scores_bbox_only(coco_json):
    inputs, outputs = _ground_truth_as_predictions(coco_json)
    for o in outputs:
        del o["masks"]
    assert set(_evaluate(coco_json, inputs, outputs)) == {"bbox"}


def test_bad_inputs_raise_clear_errors(coco_json, tmp_path):
    inputs, outputs = _ground_truth_as_predictions(coco_json)
    outputs[0]["labels"][0] = 7
    evaluator = COCOEvaluator(coco_json, None, distributed=False)
    with pytest.raises(ValueError, match=r"labels \[7\] have no COCO category"):
        evaluator.process(inputs[:1], outputs[:1])

    evaluator.reset()
    evaluator.process([{"image_id": 999}], [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
                                             "labels": torch.zeros(0, dtype=torch.int64)}])
    with pytest.raises(ValueError, match="not in .*instances_tiny.json"):
        evaluator.evaluate()

    with pytest.raises(FileNotFoundError, match="missing.json"):
        COCOEvaluator(str(tmp_path / "missing.json"), None)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DatasetError, match="broken.json is not valid json"):
        COCOEvaluator(str(broken), None)


def _distributed_worker(rank, world_size, init_file, json_path, queue):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=world_size)
    try:
        inputs, outputs = _ground_truth_as_predictions(json_path)
        evaluator = COCOEvaluator(json_path, None, distributed=True)
        evaluator.reset()
        # Rank 0 gets images 10 and 20, rank 1 gets 30 and, as a padding sampler would, 10 again.
        mine = [0, 1] if rank == 0 else [2, 0]
        evaluator.process([inputs[i] for i in mine], [outputs[i] for i in mine])
        queue.put((rank, evaluator.evaluate()))
    finally:
        torch.distributed.destroy_process_group()


def test_distributed_gather_on_two_processes(coco_json, tmp_path):
    # fork: the children inherit the imports (spawn would re-import torch twice, ~10 s on 2 cores).
    ctx = torch.multiprocessing.get_context("fork")
    queue = ctx.SimpleQueue()
    torch.multiprocessing.start_processes(_distributed_worker, args=(2, str(tmp_path / "init"), coco_json, queue),
                                          nprocs=2, start_method="fork")
    results = dict(queue.get() for _ in range(2))
    assert results[1] == {}
    assert results[0]["bbox"]["AP"] == pytest.approx(100.0)
    assert results[0]["segm"]["AP"] == pytest.approx(100.0)


@pytest.fixture(scope="module")
def synthetic_dataset(tmp_path_factory):
    """A generated synthetic set (occluded objects as RLE, crowd regions) registered by name."""
    json_path, image_root = generate_synthetic_coco(tmp_path_factory.mktemp("synthetic"), num_images=8,
                                                    image_size=64, seed=5, crowd_fraction=0.5,
                                                    show_progress=False)
    register_coco_instances("test_coco_eval_synthetic", json_path, image_root)
    return "test_coco_eval_synthetic", json_path


def test_registered_synthetic_set_with_crowds_scores_ground_truth_100(synthetic_dataset):
    name, json_path = synthetic_dataset
    data = json.loads(open(json_path).read())
    assert any(a["iscrowd"] for a in data["annotations"])  # crowd regions are in play
    meta = get_dataset_metadata(name)
    # The evaluator's label order for a bare json must match the data catalog's.
    assert COCOEvaluator(json_path, None).info.label_to_category_id == meta.label_to_category_id
    evaluator = COCOEvaluator(name, None, distributed=False)
    cat_to_label = {c: lbl for lbl, c in meta.label_to_category_id.items()}
    gt = _load_gt(json_path)
    for img in data["images"]:
        anns = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=img["id"])) if not a["iscrowd"]]
        x, y, w, h = (torch.tensor([a["bbox"][k] for a in anns]).reshape(-1) for k in range(4))
        out = {"boxes": torch.stack([x, y, x + w, y + h], dim=1), "scores": torch.ones(len(anns)),
               "labels": torch.tensor([cat_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
               "masks": torch.from_numpy(np.stack([gt.annToMask(a) for a in anns])) if anns
               else torch.zeros(0, img["height"], img["width"], dtype=torch.uint8)}
        evaluator.process([{"image_id": img["id"]}], [out])
    metrics = evaluator.evaluate()
    assert metrics["bbox"]["AP"] == pytest.approx(100.0)
    assert metrics["segm"]["AP"] == pytest.approx(100.0)


def test_detection_task_builds_the_evaluator_from_the_config(synthetic_dataset, tmp_path):
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = False
    evaluator = get_task("detection").build_evaluator(cfg, synthetic_dataset[0], str(tmp_path))
    evaluator.reset()
    evaluator.process([{"image_id": 1}], [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
                                           "scores": torch.ones(1), "labels": torch.ones(1, dtype=torch.int64),
                                           "masks": torch.ones(1, 64, 64, dtype=torch.uint8)}])
    assert set(evaluator.evaluate()) == {"bbox"}  # MASK_ON False: no mask AP
    assert (tmp_path / "inference" / synthetic_dataset[0] / RESULTS_FILE).is_file()


def test_metric_tables_align_columns_and_print_nan():
    from gn_det.evaluation import format_metrics_table, format_per_class_table, format_table

    lines = format_metrics_table({"AP": 40.1234, "APl": float("nan")}).splitlines()
    assert lines == ["|     AP | APl |", "|-------:|----:|", "| 40.123 | nan |"]
    lines = format_per_class_table({"circle": 1.0, "star": 2.5, "cross": 3.0}, num_pairs=2).splitlines()
    assert lines[2] == "| circle   | 1.000 | star     | 2.500 |"
    assert lines[3] == "| cross    | 3.000 |          |       |"
    with pytest.raises(ValueError, match="Row 0 has 1 cells but there are 2 headers"):
        format_table([[1.0]], ["a", "b"])
