"""The batch-size study (gn-det-batch-size-study): the plan's scaling rules, and the smoke mode end to end
(real gn-det-train subprocesses): files, table numbers against each run's metrics.json, BN trained on batch
statistics, finished runs skipped on a rerun, a folder of other settings refused."""

import json
import os

import pytest
import torch
from PIL import Image

from gn_det.checkpoint.io import safe_torch_load
from gn_det.cli.batch_size_study import DEFAULT_CONFIG, PLOT_FILE, RESULTS_FILE, main, plan_runs
from gn_det.config import load_config
from gn_det.modeling.classifier import build_classifier


def _opt(spec, key):
    return spec.opts[len(spec.opts) - 1 - spec.opts[::-1].index(key) + 1]  # the last value given wins


def test_plan_scales_lr_linearly_and_iterations_inversely(tmp_path):
    user = ["SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR", "SOLVER.STEPS", "(400, 500)", "SOLVER.BASE_LR", "0.08"]
    cfg = load_config(str(DEFAULT_CONFIG), user)  # reference: 32 images/step, 600 steps, warmup 100
    runs = plan_runs(cfg, user, ["BN", "GN"], [32, 8, 2], num_images=3200, output_dir=tmp_path)
    assert [(r.norm, r.batch_size) for r in runs] == [("BN", 32), ("BN", 8), ("BN", 2), ("GN", 32), ("GN", 8),
                                                       ("GN", 2)]
    for r in runs:
        k = 32 // r.batch_size
        assert r.lr == pytest.approx(0.08 / k) and float(_opt(r, "SOLVER.BASE_LR")) == pytest.approx(0.08 / k)
        assert r.max_iter == 600 * k == int(_opt(r, "SOLVER.MAX_ITER"))  # 6 epochs of 3200 images each
        assert int(_opt(r, "SOLVER.WARMUP_ITERS")) == 100 * k and int(_opt(r, "SOLVER.CHECKPOINT_PERIOD")) == 200 * k
        assert int(_opt(r, "LOG_PERIOD")) == 20 * k and _opt(r, "TEST.EVAL_PERIOD") == "0"
        assert _opt(r, "SOLVER.STEPS") == repr((400 * k, 500 * k))  # same fractions of the schedule
        assert _opt(r, "MODEL.RESNETS.NORM") == r.norm and int(_opt(r, "SOLVER.IMS_PER_BATCH")) == r.batch_size
        assert r.opts[:len(user)] == user and r.output_dir == str(tmp_path / f"{r.norm}_b{r.batch_size}")
        run_cfg = load_config(str(DEFAULT_CONFIG), r.opts)  # the run's config as gn-det-train will read it
        assert run_cfg.SOLVER.MAX_ITER * run_cfg.SOLVER.IMS_PER_BATCH == 6 * 3200
    # --epochs: 2.5 epochs of 3000 images; iterations rounded
    runs = plan_runs(cfg, [], ["GN"], [32, 2], num_images=3000, output_dir=tmp_path, epochs=2.5)
    assert [r.max_iter for r in runs] == [round(7500 / 32), 3750]
    # the cosine schedule does not read STEPS: not passed
    runs = plan_runs(load_config(str(DEFAULT_CONFIG)), [], ["GN"], [4], 3200, tmp_path)
    assert "SOLVER.STEPS" not in runs[0].opts


def _metrics_final(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()][-1]


def _table_rows(stdout):
    """{(norm, batch): cells} of the per-run table printed on stdout."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0] in ("BN", "GN"):
            rows[(cells[0], int(cells[1]))] = cells
    return rows


def test_smoke_study_files_numbers_and_rerun(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["--smoke", "--output-dir", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    study = json.loads((out / RESULTS_FILE).read_text())
    with Image.open(out / PLOT_FILE) as png:
        assert png.format == "PNG" and png.size[0] > 300
    assert study["train_images"] == 160 and study["reference_batch"] == 16 and study["reference_lr"] == 0.02
    assert [(r["norm"], r["batch_size"]) for r in study["runs"]] == [("BN", 4), ("BN", 2), ("GN", 4), ("GN", 2)]
    rows = _table_rows(printed)
    for run in study["runs"]:
        b = run["batch_size"]
        assert run["max_iter"] == round(0.1 * 160 / b) and run["lr"] == pytest.approx(0.02 * b / 16)
        final = _metrics_final(run["output_dir"])
        assert final["iteration"] == run["max_iter"] - 1 and final["classification/num_images"] == 40
        assert run["top1"] == final["classification/top1"] and run["val_error"] == 100 - final["classification/top1"]
        assert not run["error"] and not run["skipped"] and run["seconds"] > 0
        cells = rows[(run["norm"], b)]
        assert float(cells[4]) == pytest.approx(100 - final["classification/top1"], abs=0.005)
        assert float(cells[5]) == pytest.approx(final["classification/top1"], abs=0.005)
        assert int(cells[3]) == run["max_iter"] and float(cells[2]) == pytest.approx(run["lr"])
    by = {(r["norm"], r["batch_size"]): r["val_error"] for r in study["runs"]}
    diff = next(line for line in printed.splitlines() if line.startswith("| GN - BN"))
    assert [float(c) for c in diff.strip(" |").split("|")[1:]] == pytest.approx(
        [by[("GN", 4)] - by[("BN", 4)], by[("GN", 2)] - by[("BN", 2)]], abs=0.005)

    # BN trained on each batch's statistics (running stats updated at every one of its 8 steps) and is
    # an ordinary BatchNorm, which evaluates with those running statistics.
    bn_dir = out / "BN_b2"
    state = safe_torch_load(str(bn_dir / "model_final.pth"))["model"]
    tracked = [v for k, v in state.items() if k.endswith("num_batches_tracked")]
    assert tracked and all(int(v) == 8 for v in tracked)
    assert not torch.equal(state["resnet.bn1.running_mean"], torch.zeros_like(state["resnet.bn1.running_mean"]))
    model = build_classifier(load_config(str(bn_dir / "config.yaml")))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)]
    assert norms and all(type(m) is torch.nn.BatchNorm2d and m.track_running_stats for m in norms)
    assert not any(k.endswith("num_batches_tracked") for k in
                   safe_torch_load(str(out / "GN_b2" / "model_final.pth"))["model"])

    # rerun: every run is finished, so none trains again; same numbers
    stamps = {r["norm"] + str(r["batch_size"]): os.path.getmtime(os.path.join(r["output_dir"], "metrics.json"))
              for r in study["runs"]}
    assert main(["--smoke", "--output-dir", str(out), "--no-progress"]) == 0
    again = json.loads((out / RESULTS_FILE).read_text())
    assert all(r["skipped"] for r in again["runs"])
    assert [(r["val_error"], r["seconds"]) for r in again["runs"]] == [(r["val_error"], r["seconds"])
                                                                        for r in study["runs"]]
    assert {r["norm"] + str(r["batch_size"]): os.path.getmtime(os.path.join(r["output_dir"], "metrics.json"))
            for r in again["runs"]} == stamps
    assert _table_rows(capsys.readouterr().out) == rows

    # the same folder with other settings: refused before anything trains
    assert main(["--smoke", "--output-dir", str(out), "--epochs", "0.2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "holds a run with other settings" in err and "BN_b4" in err and "another --output-dir" in err


def test_bad_command_lines_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--smoke", "--batch-sizes", "4", "4"])
    assert e.value.code == 2 and "distinct" in capsys.readouterr().err
    det = os.path.join(os.path.dirname(__file__), "..", "configs", "synthetic", "mask_rcnn_R_18_FPN_gn_demo.yaml")
    assert main(["--config-file", det, "--output-dir", str(tmp_path)]) == 2
    assert "TASK classification" in capsys.readouterr().err
