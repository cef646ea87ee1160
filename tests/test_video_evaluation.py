"""VideoEvaluator: clip- and video-level top-1/top-5 against a plain reference on made-up scores, missing
and duplicated views, the results files, and the DDP gather (2 CPU processes)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gn_det.engine.launch import launch
from gn_det.evaluation.video_evaluation import CONFUSION_FILE, RESULTS_FILE, VideoEvaluator
from gn_det.utils import comm

CLASSES = ["a", "b", "c", "d", "e", "f", "g"]
VIEWS = 4  # 2 temporal clips x 2 spatial crops


def _made_up(seed=0, num_videos=9):
    """Logits per (video, view), labels, and the views actually scored: video 3 lost 3 of its views,
    video 5 lost all of them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), num_videos)
    logits = rng.normal(size=(num_videos, VIEWS, len(CLASSES))) * 2
    logits[np.arange(num_videos), :, labels] += rng.uniform(0, 3, size=(num_videos, 1))  # some signal
    views = [(v, k) for v in range(num_videos) for k in range(VIEWS) if v != 5 and not (v == 3 and k > 0)]
    return labels, logits, views


def _reference(labels, logits, views):
    """Plain loops: the numbers the evaluator must give."""
    def topk(scores, k):
        return list(np.argsort(-scores, kind="stable")[:k])

    clip1 = [topk(logits[v, k], 1)[0] == labels[v] for v, k in views]
    clip5 = [labels[v] in topk(logits[v, k], 5) for v, k in views]
    vid1, vid5, per_class = [], [], {c: [] for c in range(len(CLASSES))}
    for v in sorted({v for v, _ in views}):
        probs = [np.exp(logits[v, k] - logits[v, k].max()) / np.exp(logits[v, k] - logits[v, k].max()).sum()
                 for vv, k in views if vv == v]
        mean = np.mean(probs, axis=0)
        vid1.append(topk(mean, 1)[0] == labels[v])
        vid5.append(labels[v] in topk(mean, 5))
        per_class[labels[v]].append(vid1[-1])
    return {"top1": 100 * np.mean(vid1), "top5": 100 * np.mean(vid5), "clip_top1": 100 * np.mean(clip1),
            "clip_top5": 100 * np.mean(clip5),
            "mean_class_top1": 100 * np.mean([np.mean(x) for x in per_class.values() if x])}


def _batches(labels, logits, views, order, batch=5):
    for i in range(0, len(order), batch):
        chunk = [views[j] for j in order[i:i + batch]]
        inputs = [{"video_index": v, "view": k, "label": int(labels[v])} for v, k in chunk]
        yield inputs, torch.tensor(np.stack([logits[v, k] for v, k in chunk]), dtype=torch.float32)


def test_multi_view_numbers_match_a_plain_reference(tmp_path):
    labels, logits, views = _made_up()
    paths = [f"v{i}.mp4" for i in range(9)]
    ev = VideoEvaluator(CLASSES, VIEWS, paths, str(tmp_path), dataset_name="made_up")
    order = list(np.random.default_rng(1).permutation(len(views))) + [0, 7]  # shuffled, 2 views fed twice
    for inputs, outputs in _batches(labels, logits, views, order):
        ev.process(inputs, outputs)
    metrics = ev.evaluate()["video"]
    want = _reference(labels, logits, views)
    for key, value in want.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key
    assert metrics["num_videos"] == 8 and metrics["num_views"] == len(views) == 29
    assert metrics["missing_views"] == 9 * VIEWS - 29 == 7 and metrics["missing_videos"] == 1
    assert metrics["top1"] != metrics["clip_top1"]  # the made-up scores tell the two levels apart

    record = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert record["classes"] == CLASSES and record["missing_videos"] == ["v5.mp4"]
    cm = np.array(record["confusion_matrix"])
    assert cm.shape == (7, 7) and cm.sum() == 8 and np.trace(cm) == round(metrics["top1"] * 8 / 100)
    png = tmp_path / CONFUSION_FILE
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and min(Image.open(png).size) > 200
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temp files left


def test_batch_dicts_and_few_classes():
    ev = VideoEvaluator(["x", "y"], 1, ["a", "b", "c"], None)
    ev.process({"video_index": torch.tensor([0, 1, 2]), "view": torch.tensor([0, 0, 0]),
                "label": torch.tensor([0, 1, 1])}, torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5]]))
    m = ev.evaluate()["video"]
    assert m["top1"] == pytest.approx(200 / 3) and m["top5"] == 100.0  # top-5 is top-2 with 2 classes
    assert m["mean_class_top1"] == pytest.approx(75.0)
    with pytest.raises(ValueError, match="outside"):
        ev.process([{"video_index": 0, "view": 1, "label": 0}], torch.zeros(1, 2))


def _ddp_worker(result_dir: str) -> None:
    """Rank r scores the views with index % 2 == r, plus the first 3 views of the other rank with other
    logits (a padding sampler's duplicates): those must be dropped in favour of rank 0's."""
    labels, logits, views = _made_up(seed=2)
    rank = comm.get_rank()
    mine = [j for j in range(len(views)) if j % 2 == rank]
    ev = VideoEvaluator(CLASSES, VIEWS, [f"v{i}" for i in range(9)], None)
    for inputs, outputs in _batches(labels, logits, views, mine):
        ev.process(inputs, outputs)
    if rank == 1:
        dup = [j for j in range(len(views)) if j % 2 == 0][:3]
        for inputs, outputs in _batches(labels, -logits, views, dup):
            ev.process(inputs, outputs)
    torch.save(ev.evaluate(), f"{result_dir}/rank{rank}.pt")


def test_ddp_gather_deduplicates_views(tmp_path):
    launch(_ddp_worker, 2, dist_url="auto", args=(str(tmp_path),))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r1 == {}
    want = _reference(*_made_up(seed=2))
    for key, value in want.items():
        assert r0["video"][key] == pytest.approx(value, abs=1e-9), key
    assert r0["video"]["num_views"] == 29
