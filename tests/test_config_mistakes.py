"""Configuration mistakes end ``gn-det-train`` with exit code 2 and one line naming the key or file.

Each case is a mistake a user makes (issue 9): a ``_BASE_`` cycle, GroupNorm groups that do not
divide a width, a SOLVER value no schedule can run, an unknown depth or dataset, NUM_CLASSES below
the dataset's, a bad image without DATALOADER.SKIP_BAD_SAMPLES. Before these checks each ended in a
traceback with exit code 1. Most run ``main`` in this process; two run the real command (a cycle,
and a bad image read by a DataLoader worker process), started together to share their start-up.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gn_det.cli.train_net import main
from gn_det.data.synthetic_coco import generate_synthetic_coco

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DET = str(CONFIGS / "synthetic" / "mask_rcnn_R_18_FPN_test.yaml")  # GN, 8 groups, 32-channel FPN and heads
CLS = str(CONFIGS / "classification" / "synthetic" / "R_18_gn_test.yaml")
VIDEO = str(CONFIGS / "video" / "synthetic" / "r3d_18_gn_test.yaml")
_SCRIPT = Path(sys.executable).with_name("gn-det-train")
GN_DET_TRAIN = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "gn_det.cli.train_net"]


def _one_error_line(stderr: str) -> str:
    """The run's only error line (the last on stderr; no traceback on the console)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [s for s in stderr.splitlines() if s.strip()]
    assert lines and [s for s in lines if "error:" in s] == [lines[-1]], stderr[-3000:]
    assert lines[-1].startswith("gn-det-train: error: "), lines[-1]
    return lines[-1]


def _exit_2(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err[-3000:]
    return _one_error_line(err)


def _bad_coco_set(folder: Path) -> list[str]:
    """A 4-image COCO set whose every image is a truncated JPEG, as DATASETS.REGISTER/TRAIN overrides."""
    json_file, image_root = generate_synthetic_coco(folder, 4, 64, 0, empty_fraction=0.0, show_progress=False)
    for f in Path(image_root).iterdir():
        f.write_bytes(f.read_bytes()[:100])
    return ["DATASETS.REGISTER", repr([["bad", json_file, image_root]]), "DATASETS.TRAIN", "('bad',)"]


def test_base_cycle_and_bad_image_in_a_worker_real_command(tmp_path):
    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\nSOLVER:\n  MAX_ITER: 3\n")
    (tmp_path / "b.yaml").write_text("_BASE_: a.yaml\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cycle = subprocess.Popen([*GN_DET_TRAIN, "--config-file", str(tmp_path / "a.yaml")], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    bad = subprocess.Popen([*GN_DET_TRAIN, "--config-file", DET, *_bad_coco_set(tmp_path / "set"),
                            "DATALOADER.NUM_WORKERS", "1", "OUTPUT_DIR", str(tmp_path / "out")],
                           env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = cycle.communicate(timeout=120)
    assert cycle.returncode == 2, err[-3000:]
    line = _one_error_line(err)
    a, b = str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")
    assert f"_BASE_ cycle: {a} -> {b} -> {a}" in line
    _, err = bad.communicate(timeout=180)
    assert bad.returncode == 2, err[-3000:]
    line = _one_error_line(err)
    assert "cannot read image " + str(tmp_path / "set" / "images") in line
    assert "DATALOADER.SKIP_BAD_SAMPLES True" in line and "worker process" not in line
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "Traceback" in log and "DataLoader worker process 0" in log  # the full story, in the log only


def test_base_naming_itself_and_a_diamond(tmp_path, capsys):
    (tmp_path / "self.yaml").write_text("_BASE_: ./self.yaml\n")
    line = _exit_2(["--config-file", str(tmp_path / "self.yaml")], capsys)
    assert f"_BASE_ cycle: {tmp_path / 'self.yaml'} -> {tmp_path / 'self.yaml'}" in line
    # Two branches reaching one file are not a cycle: that config loads (and fails later, on SOLVER).
    (tmp_path / "base.yaml").write_text(f"_BASE_: {DET}\n")
    (tmp_path / "left.yaml").write_text("_BASE_: base.yaml\n")
    (tmp_path / "right.yaml").write_text("_BASE_: base.yaml\n")
    (tmp_path / "top.yaml").write_text("_BASE_: [left.yaml, right.yaml]\nSOLVER:\n  MAX_ITER: -1\n")
    line = _exit_2(["--config-file", str(tmp_path / "top.yaml")], capsys)
    assert "SOLVER.MAX_ITER = -1" in line


@pytest.mark.parametrize("opts, key, value, norm_key, divisor", [
    (["MODEL.FPN.OUT_CHANNELS", "100"], "MODEL.FPN.OUT_CHANNELS", "100", "MODEL.FPN.NORM", "NUM_GROUPS"),
    (["MODEL.ROI_BOX_HEAD.NUM_CONV", "2", "MODEL.ROI_BOX_HEAD.CONV_DIM", "30"], "MODEL.ROI_BOX_HEAD.CONV_DIM", "30",
     "MODEL.ROI_BOX_HEAD.NORM", "NUM_GROUPS"),
    (["MODEL.ROI_MASK_HEAD.CONV_DIM", "36"], "MODEL.ROI_MASK_HEAD.CONV_DIM", "36", "MODEL.ROI_MASK_HEAD.NORM",
     "NUM_GROUPS"),
    (["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.WIDTH_PER_GROUP", "20"], "MODEL.RESNETS.WIDTH_PER_GROUP", "20",
     "MODEL.RESNETS.NORM", "NUM_GROUPS"),
    (["MODEL.GROUP_NORM.CHANNELS_PER_GROUP", "12"], "MODEL.GROUP_NORM.CHANNELS_PER_GROUP", "12",
     "MODEL.RESNETS.NORM", "CHANNELS_PER_GROUP"),
])
def test_group_norm_widths_name_the_key(opts, key, value, norm_key, divisor, tmp_path, capsys):
    line = _exit_2(["--config-file", DET, *opts, "OUTPUT_DIR", str(tmp_path)], capsys)
    assert line.startswith(f"gn-det-train: error: {key} = {value}: "), line
    assert f"({norm_key} 'GN')" in line and f"MODEL.GROUP_NORM.{divisor}" in line
    assert "group_policy" not in line  # not a config key


def test_group_norm_widths_of_the_classification_and_video_tasks(tmp_path, capsys):
    line = _exit_2(["--config-file", CLS, "MODEL.GROUP_NORM.NUM_GROUPS", "48", "OUTPUT_DIR", str(tmp_path)], capsys)
    assert "MODEL.GROUP_NORM.NUM_GROUPS = 48: the stem's norm layers have 64 channels" in line
    line = _exit_2(["--config-file", VIDEO, "MODEL.VIDEO_HEAD.CONV_DIM", "30", "MODEL.VIDEO_HEAD.NORM", "GN",
                    "OUTPUT_DIR", str(tmp_path)], capsys)
    assert "MODEL.VIDEO_HEAD.CONV_DIM = 30" in line and "MODEL.VIDEO_HEAD.NORM 'GN'" in line
    line = _exit_2(["--config-file", VIDEO, "MODEL.RESNETS.DEPTH", "42", "OUTPUT_DIR", str(tmp_path)], capsys)
    assert "MODEL.RESNETS.DEPTH = 42: Unsupported ResNet depth 42; choose one of [18, 34, 50, 101, 152]" in line


@pytest.mark.parametrize("key, value", [
    ("SOLVER.MAX_ITER", "0"), ("SOLVER.MAX_ITER", "-5"), ("SOLVER.IMS_PER_BATCH", "0"), ("SOLVER.BASE_LR", "0.0"),
    ("SOLVER.STEPS", "(0, 30)"), ("SOLVER.WARMUP_ITERS", "-1"), ("SOLVER.CHECKPOINT_PERIOD", "0"),
    ("SOLVER.MOMENTUM", "-0.9"), ("TEST.EVAL_PERIOD", "-1"), ("DATALOADER.NUM_WORKERS", "-2"),
    ("MODEL.DEVICE", "tpu"), ("INPUT.MIN_SIZE_TRAIN", "(0,)"), ("INPUT.MAX_SIZE_TRAIN", "0"),
    ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "0"), ("MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", "0"),
    ("MODEL.FPN.OUT_CHANNELS", "0"), ("MODEL.RESNETS.WIDTH_PER_GROUP", "32"),
])
def test_values_no_run_can_use_name_the_key(key, value, tmp_path, capsys):
    line = _exit_2(["--config-file", DET, key, value, "OUTPUT_DIR", str(tmp_path)], capsys)
    assert line.startswith(f"gn-det-train: error: {key} = "), line


def test_range_sampling_needs_min_and_max(tmp_path, capsys):
    line = _exit_2(["--config-file", DET, "INPUT.MIN_SIZE_TRAIN_SAMPLING", "range", "OUTPUT_DIR", str(tmp_path)],
                   capsys)
    assert "INPUT.MIN_SIZE_TRAIN = (64, 80, 96): with INPUT.MIN_SIZE_TRAIN_SAMPLING 'range', give (min, max)" in line


def test_a_list_where_a_number_belongs(tmp_path, capsys):
    line = _exit_2(["--config-file", DET, "SOLVER.MAX_ITER", "[1, 2]", "OUTPUT_DIR", str(tmp_path)], capsys)
    assert "Bad value for config key 'SOLVER.MAX_ITER'" in line and "expected a int" in line


def test_unknown_dataset_and_too_few_classes(tmp_path, capsys):
    line = _exit_2(["--config-file", DET, "DATASETS.TRAIN", "('nope',)", "OUTPUT_DIR", str(tmp_path / "a")], capsys)
    assert "unknown dataset 'nope'; known datasets: [" in line and "DATASETS.REGISTER" in line
    line = _exit_2(["--config-file", DET, "MODEL.ROI_HEADS.NUM_CLASSES", "3", "OUTPUT_DIR", str(tmp_path / "b")],
                   capsys)
    assert line.endswith("has 5 categories but MODEL.ROI_HEADS.NUM_CLASSES is 3; set MODEL.ROI_HEADS.NUM_CLASSES 5")
    line = _exit_2(["--config-file", CLS, "DATASETS.TRAIN", "('nope',)", "OUTPUT_DIR", str(tmp_path / "c")], capsys)
    assert "unknown classification dataset 'nope'" in line


def test_bad_image_in_this_process(tmp_path, capsys):
    line = _exit_2(["--config-file", DET, *_bad_coco_set(tmp_path / "set"), "DATALOADER.NUM_WORKERS", "0",
                    "OUTPUT_DIR", str(tmp_path / "out")], capsys)
    assert "cannot read image " + str(tmp_path / "set" / "images") in line and "SKIP_BAD_SAMPLES True" in line
    assert "DatasetError" not in line
    assert "Traceback" in (tmp_path / "out" / "log.txt").read_text()
