"""tools/fidelity.py end to end on a tiny setting: synthetic mode (a BN ResNet-18 trained by the engine's
Trainer), then real-weights mode on its images."""

import json

import pytest
import torch
import torchvision

from gn_det.cli.fidelity import main

TINY = ["--num-calib", "32", "--num-heldout", "96", "--image-size", "32", "--batch-size", "32",
        "--no-progress"]


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("fidelity")
    out = work / "fid.json"
    argv = ["--workdir", str(work / "w"), "--output", str(out), "--train-per-class", "40", "--epochs", "10",
            *TINY]  # 130 SGD steps: a barely trained BN network, but with data-driven statistics
    assert main(argv) == 0
    return work, argv, json.loads(out.read_text())


def test_synthetic_mode_writes_all_rows(synthetic_run):
    work, _, result = synthetic_run
    rows = [(r["norm"], r["transfer"]) for r in result["rows"]]
    assert rows == [("BN", "original"), ("GN", "naive"), ("GN", "calibrated"),
                    ("GN+WS", "naive"), ("GN+WS", "calibrated")]
    assert result["num_calib"] == 32 and result["num_heldout"] == 96
    bn = result["rows"][0]
    assert bn["cosine_mean"] == pytest.approx(1.0) and bn["top1_agreement"] == 1.0
    assert bn["accuracy"] > 0.1  # above chance: the engine trained it (0.177 when measured)
    for r in result["rows"][1:]:
        assert -1 <= r["cosine_min"] <= r["cosine_mean"] <= 1 + 1e-9
        assert 0 <= r["top1_agreement"] <= 1 and 0 <= r["accuracy"] <= 1
    for r in result["rows"][2::2]:  # calibrated rows: the calibration matched every layer
        assert r["calibration"]["num_layers"] == 20 and r["calibration"]["after_std_err"] < 1e-6
    assert "| GN+WS | calibrated |" in result["table"]
    # The point of calibration: the GN network is closer to the BN one than after naive transfer
    # (measured: cosine 0.42 -> 0.60, top-1 agreement 0.15 -> 0.24). GN+WS is not asserted here: from a
    # BN network this little trained, naive GN+WS transfer is about as close as calibrated (cosine
    # 0.618 vs 0.607 measured); the default run's longer training shows the gain for both norms.
    rows = {(r["norm"], r["transfer"]): r for r in result["rows"]}
    naive, calibrated = rows[("GN", "naive")], rows[("GN", "calibrated")]
    assert calibrated["cosine_mean"] > naive["cosine_mean"] + 0.1
    assert calibrated["top1_agreement"] > naive["top1_agreement"]


def test_synthetic_mode_reuses_the_trained_model(synthetic_run, capsys):
    work, argv, first = synthetic_run
    assert main(argv + ["--norms", "GN"]) == 0
    assert "reusing trained BN model" in capsys.readouterr().out
    second = json.loads((work / "fid.json").read_text())
    fields = ("norm", "transfer", "cosine_mean", "cosine_min", "top1_agreement", "accuracy")
    for a, b in zip(first["rows"], second["rows"]):  # same model, same images: same figures
        assert [a[k] for k in fields] == [b[k] for k in fields]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "r18.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    return path


def test_weights_mode_runs_the_same_measurement(synthetic_run, weights, tmp_path):
    work, _, _ = synthetic_run
    out = tmp_path / "real.json"
    images = work / "w" / "synthetic_images" / "eval"
    assert main(["--weights", str(weights), "--images", str(images), "--output", str(out), "--norms", "GN+WS",
                 *TINY]) == 0
    result = json.loads(out.read_text())
    assert [r["transfer"] for r in result["rows"]] == ["original", "naive", "calibrated"]
    assert result["rows"][0]["accuracy"] is not None  # 10 class folders for a 10-class classifier


def test_bad_inputs_give_clear_errors(weights, tmp_path, capsys):
    with pytest.raises(SystemExit, match="--weights and --images go together"):
        main(["--weights", "x.pth"])
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert main(["--weights", str(bad), "--images", str(tmp_path), *TINY]) == 2
    assert "bad.pth" in capsys.readouterr().err
    assert main(["--weights", str(weights), "--images", str(tmp_path / "none"), *TINY]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--arch", "resnet34", "--weights", str(weights), "--images", str(tmp_path),
                 *TINY]) == 2
    assert "does not fit gn_det's resnet34" in capsys.readouterr().err
    gn_like = tmp_path / "gn.pth"  # no BN statistics: not a BN network
    torch.save({k: v for k, v in torch.load(weights).items() if "running" not in k and "num_batches" not in k}, gn_like)
    assert main(["--weights", str(gn_like), "--images", str(tmp_path), *TINY]) == 2
    assert "measured from a BN network" in capsys.readouterr().err
