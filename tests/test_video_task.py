"""TASK video end to end: config keys, dataset names and list formats, train -> exact resume -> eval-only
through train_net, and bad videos (replaced and listed in training, counted as missing views in testing)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from gn_det.cli.train_net import main as train_net
from gn_det.config import ConfigError, get_cfg, load_config
from gn_det.data.common import SkipBadSamples
from gn_det.data.video.build import (BAD_VIDEOS_FILE, build_video_dataset, build_video_test_loader,
                                     build_video_train_loader, video_list, video_set_info)
from gn_det.data.video.dataset import SkippedView
from gn_det.engine.task import get_task

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "video", "synthetic", "r3d_18_gn_test.yaml")


def _cfg(*opts):
    return load_config(CONFIG, list(opts))


def _metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_config_keys_use_pyslowfast_names():
    cfg = get_cfg("video")
    assert cfg.MODEL.META_ARCHITECTURE == "I3D" and cfg.MODEL.NUM_CLASSES == 400 and cfg.MODEL.DROPOUT_RATE == 0.5
    assert (cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TEST_CROP_SIZE) == (8, 8, 224, 256)
    assert list(cfg.DATA.TRAIN_JITTER_SCALES) == [256, 320] and list(cfg.DATA.MEAN) == [0.45] * 3
    assert (cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS) == (10, 3) and cfg.MODEL.INFLATE == "mean"
    with pytest.raises(ConfigError, match="It is a key of TASK 'video'"):
        load_config(None, ["DATA.NUM_FRAMES", "16"])  # the default TASK is detection
    assert isinstance(get_task("video"), type(get_task("video")))
    with pytest.raises(ConfigError, match="DATA.NUM_FRAME"):
        _cfg("DATA.NUM_FRAME", "16")


def test_dataset_names_and_list_formats(tmp_path, monkeypatch):
    cfg = _cfg()
    train = video_list(cfg, "motion_test_train")
    assert len(train.records) == 12 and train.classes[:2] == ["growing", "moving down"]
    with pytest.raises(ConfigError, match="known: .*kinetics400_val.*motion_test_train"):
        video_list(cfg, "ucf101")
    with pytest.raises(ValueError, match=r"\[prefix, num_classes"):
        video_list(_cfg("DATASETS.SYNTHETIC", "[['m', 6, 2]]"), "m_train")

    # PySlowFast lists (integer labels, a path with a space) under DATA.PATH_TO_DATA_DIR / PATH_PREFIX
    data_dir, prefix = tmp_path / "lists", tmp_path / "videos"
    data_dir.mkdir()
    (prefix / "my clips").mkdir(parents=True)
    for i, r in enumerate(train.records[:4]):
        shutil.copy(r.path, prefix / "my clips" / f"{i}.mp4")
    (data_dir / "train.csv").write_text("".join(f"my clips/{i}.mp4 {i % 2}\n" for i in range(4)))
    (data_dir / "val.csv").write_text("my clips/3.mp4 1\n")
    sf = _cfg("DATA.PATH_TO_DATA_DIR", str(data_dir), "DATA.PATH_PREFIX", str(prefix),
              "DATASETS.TRAIN", "('slowfast_train',)", "DATASETS.TEST", "('slowfast_val',)")
    ds = build_video_dataset(sf, "slowfast_train", train=True)
    assert ds.classes == ["0", "1"] and ds.paths[1] == str(prefix / "my clips" / "1.mp4")
    assert ds[(1, 0)]["video"].shape == (3, 4, 24, 24)
    assert video_set_info(sf, "slowfast_val").labels == [1]

    # Kinetics layout under $GN_DET_DATASETS: a test set is scored in the training set's classes
    root = Path(video_list(cfg, "motion_test_val").source).parents[1]
    monkeypatch.setenv("GN_DET_DATASETS", str(tmp_path / "datasets"))
    shutil.copytree(root, tmp_path / "datasets" / "kinetics400")
    val = _cfg("DATASETS.TRAIN", "('motion_test_train',)")
    info = video_set_info(val, "kinetics400_val")
    assert info.classes == train.classes and info.views_per_video == 2 and len(info.paths) == 6
    with pytest.raises(ValueError, match="MODEL.NUM_CLASSES 6"):
        build_video_dataset(_cfg("MODEL.NUM_CLASSES", "4"), "motion_test_train", train=True)


def test_flip_uses_the_synthetic_sets_flip_map():
    ds = build_video_dataset(_cfg(), "motion_test_train", train=True)
    left, right = ds.classes.index("moving left"), ds.classes.index("moving right")
    assert ds.flip_index_map == {left: right, right: left}
    assert build_video_dataset(_cfg("DATA.RANDOM_FLIP", "False"), "motion_test_train", train=True).transform.flip is False


@pytest.fixture()
def broken_lists(tmp_path):
    """path,label CSVs: the synthetic train videos plus 3 broken files, and the val videos plus one."""
    cfg = _cfg()
    train, val = video_list(cfg, "motion_test_train"), video_list(cfg, "motion_test_val")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(Path(train.records[0].path).read_bytes()[:300])
    bad = {str(tmp_path / "missing.mp4"): "file not found", str(empty): "empty file", str(cut): "moov atom"}
    rows = [(r.path, r.label) for r in train.records] + [(p, train.records[0].label) for p in bad]
    (tmp_path / "train.csv").write_text("path,label\n" + "".join(f'"{p}",{lb}\n' for p, lb in rows))
    rows = [(r.path, r.label) for r in val.records] + [(str(cut), val.records[0].label)]
    (tmp_path / "val.csv").write_text("path,label\n" + "".join(f'"{p}",{lb}\n' for p, lb in rows))
    opts = ["DATASETS.REGISTER", f"[['bad_train', '{tmp_path / 'train.csv'}'], ['bad_val', '{tmp_path / 'val.csv'}']]",
            "DATASETS.TRAIN", "('bad_train',)", "DATASETS.TEST", "('bad_val',)"]
    return opts, bad, str(cut)


def test_bad_training_videos_are_replaced_counted_and_named(tmp_path, broken_lists):
    opts, bad, _ = broken_lists
    cfg = _cfg(*opts, "OUTPUT_DIR", str(tmp_path / "out"), "SEED", "3")
    loader = build_video_train_loader(cfg, 2)
    seen = []
    for _, batch in zip(range(30), loader):  # 60 clips from 15 videos: every bad one is drawn
        assert len(batch) == 2 and all(s["path"] not in bad for s in batch)
        seen += [p for s in batch for p, _ in s["replaced"]]
    assert set(seen) == set(bad) and loader.num_replacements == len(seen)
    record = json.loads((tmp_path / "out" / BAD_VIDEOS_FILE).read_text())
    assert record["num_replacements"] == len(seen)
    assert {v["path"] for v in record["videos"]} == set(bad)
    for v in record["videos"]:
        assert bad[v["path"]] in v["reason"] and v["times_replaced"] == seen.count(v["path"])


def test_bad_test_video_views_are_skipped_by_the_shared_plumbing(broken_lists):
    opts, _, cut = broken_lists
    cfg = _cfg(*opts)
    loader = build_video_test_loader(cfg, "bad_val")
    assert isinstance(loader, SkipBadSamples)
    views = [s for batch in loader for s in batch]
    assert len(views) == 12 and loader.num_skipped == 2  # 6 good videos x 2 views; the cut file's 2 views
    assert all(cut in reason and "moov atom" in reason for _, reason in loader.skipped)
    raw = build_video_dataset(cfg, "bad_val", train=False)
    assert isinstance(raw[12], SkippedView) and (raw[12].video_index, raw[12].view) == (6, 0)


def test_train_resume_eval_only_and_a_broken_video(tmp_path, broken_lists):
    opts, bad, _ = broken_lists
    common = ["SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3", "SEED", "7", "MODEL.DROPOUT_RATE", "0.5"] + opts
    straight = str(tmp_path / "straight")
    assert train_net(["--config-file", CONFIG, "OUTPUT_DIR", straight] + common) == 0
    losses = {m["iteration"]: m["total_loss"] for m in _metrics(straight) if "total_loss" in m}
    assert sorted(losses) == [0, 1, 2, 3, 4, 5] and all(np.isfinite(v) and v > 0 for v in losses.values())
    final = _metrics(straight)[-1]
    assert final["video/num_videos"] == 6 and final["video/missing_views"] == 2 and final["video/missing_videos"] == 1
    record = json.loads((Path(straight) / BAD_VIDEOS_FILE).read_text())  # bad training videos were drawn and listed
    assert record["num_replacements"] >= 1 and {v["path"] for v in record["videos"]} <= set(bad)
    log = (Path(straight) / "log.txt").read_text()
    assert "bad training video (replaced by another" in log and "skipped bad sample" in log
    results = json.loads((Path(straight) / "inference" / "bad_val" / "video_results.json").read_text())
    assert results["classes"][0] == "growing" and len(results["missing_videos"]) == 1
    assert (Path(straight) / "inference" / "bad_val" / "confusion_matrix.png").is_file()

    # Killed after the checkpoint of iteration 3 (model_0000002.pth): the resumed run continues exactly.
    resumed = str(tmp_path / "resumed")
    shutil.copytree(straight, resumed)
    os.remove(os.path.join(resumed, "model_final.pth"))
    (Path(resumed) / "last_checkpoint").write_text("model_0000002.pth")
    assert train_net(["--config-file", CONFIG, "--resume", "OUTPUT_DIR", resumed] + common) == 0
    assert {m["iteration"]: m["total_loss"] for m in _metrics(resumed) if "total_loss" in m} == losses

    evaluated = str(tmp_path / "eval")
    assert train_net(["--config-file", CONFIG, "--eval-only", "OUTPUT_DIR", evaluated,
                      "MODEL.WEIGHTS", os.path.join(straight, "model_final.pth")] + common) == 0
    again = json.loads((Path(evaluated) / "eval_results.json").read_text())["bad_val"]["video"]
    for key in ("top1", "top5", "clip_top1", "clip_top5", "num_views"):
        assert again[key] == final[f"video/{key}"], key
    assert "video checkpoint (3D): loaded by name" in (Path(evaluated) / "log.txt").read_text()
