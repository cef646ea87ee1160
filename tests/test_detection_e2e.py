"""The detection task through train_net end to end: train, evaluate, resume exactly, eval-only."""

import json
import os
import shutil

import pytest

from gn_det.cli.train_net import main as train_net

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "synthetic", "mask_rcnn_R_18_FPN_test.yaml")


def _metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _losses(out_dir):
    return {m["iteration"]: m["total_loss"] for m in _metrics(out_dir) if "total_loss" in m}


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GN_DET_CACHE", str(tmp_path / "cache"))


def test_train_eval_resume_and_eval_only(tmp_path, cache):
    common = ["SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3", "SOLVER.WARMUP_ITERS", "2",
              "SOLVER.STEPS", "(4,)", "SEED", "7", "LOG_PERIOD", "1", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    straight = str(tmp_path / "straight")
    assert train_net(["--config-file", CONFIG, "OUTPUT_DIR", straight] + common) == 0
    want = _losses(straight)
    assert sorted(want) == [0, 1, 2, 3, 4, 5]
    assert all(v == v and v > 0 for v in want.values())  # finite and positive
    final = _metrics(straight)[-1]
    assert "bbox/AP" in final and "segm/AP" in final  # evaluated at the end
    results = os.path.join(straight, "inference", "synthetic_test_val", "coco_instances_results.json")
    assert json.load(open(results))  # predictions were written

    # Pretend the run was killed after the checkpoint at iteration 3 (model_0000002.pth).
    resumed = str(tmp_path / "resumed")
    shutil.copytree(straight, resumed)
    os.remove(os.path.join(resumed, "model_final.pth"))
    with open(os.path.join(resumed, "last_checkpoint"), "w") as f:
        f.write("model_0000002.pth")
    assert train_net(["--config-file", CONFIG, "--resume", "OUTPUT_DIR", resumed] + common) == 0
    assert _losses(resumed) == want  # the loss sequence continues as if never stopped

    evaluated = str(tmp_path / "eval")
    assert train_net(["--config-file", CONFIG, "--eval-only", "OUTPUT_DIR", evaluated,
                      "MODEL.WEIGHTS", os.path.join(straight, "model_final.pth")] + common) == 0
    # --eval-only of the final weights reproduces the run's own final evaluation exactly
    again = json.load(open(os.path.join(evaluated, "eval_results.json")))["synthetic_test_val"]
    for kind in ("bbox", "segm"):
        for metric in ("AP", "AP50", "AP75"):
            assert again[kind][metric] == final[f"{kind}/{metric}"], (kind, metric)
    log = open(os.path.join(evaluated, "log.txt")).read()
    n = len(__import__("torch").load(os.path.join(straight, "model_final.pth"), weights_only=True)["model"])
    assert f"Loaded {n} of {n} model tensors from" in log


def test_unknown_override_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_net(["--config-file", CONFIG, "MODEL.RESNET.NORM", "GN"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "MODEL.RESNET.NORM" in err and "MODEL.RESNETS.NORM" in err
    assert "Traceback" not in err
