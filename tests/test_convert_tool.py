"""gn-det-convert end to end, in process, on a random ResNet-18 checkpoint."""

import json
import pickle
import re

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from gn_det.checkpoint import convert_name, load_into_model, load_pickle, read_checkpoint, safe_torch_load
from gn_det.cli.convert_checkpoint import main
from gn_det.convert import build_resnet_for_arch
from gn_det.layers import WSConv2d

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    path = tmp_path_factory.mktemp("ckpt") / "r18.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_convert_to_gn_ws_gn_det_format(r18_file, tmp_path, capsys):
    src, state = r18_file
    out = tmp_path / "r18_gnws.pth"
    assert main([str(src), "--norm", "gn+ws", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "layer4.1.bn2" in printed and "GN+WS" in printed and f"wrote {out}" in printed
    saved = safe_torch_load(out)
    assert saved["meta"]["norm"] == "GN" and saved["meta"]["ws"] is True
    assert saved["meta"]["stride_in_1x1"] is False and saved["meta"]["source_format"] == "torchvision"
    for key, value in state.items():  # convs, fc and gamma/beta carried over; statistics gone
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert key not in saved["model"]
        else:
            assert torch.equal(saved["model"][key], value), key
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    assert len(report["conversion"]["replaced"]) == 20 and len(report["conversion"]["ws_convs"]) == 20
    assert len(report["conversion"]["dropped_keys"]) == 60 and report["load"]["missing"] == []
    model = build_resnet_for_arch("resnet18", "GN+WS", num_classes=5)
    load_into_model(model, read_checkpoint(out), stride_in_1x1=False)
    assert isinstance(model.layer1[0].conv1, WSConv2d)


def test_detectron2_output_then_back_to_gn(r18_file, tmp_path):
    src, state = r18_file
    d2 = tmp_path / "r18_gn.pkl"
    assert main([str(src), "--norm", "gn", "--output", str(d2), "--output-format", "detectron2",
                 "--num-groups", "16"]) == 0
    raw = load_pickle(d2)
    assert raw["matching_heuristics"] is True and raw["gn_det_meta"]["num_groups"] == 16
    assert np.array_equal(raw["model"]["res3.0.shortcut.norm.weight"], state["layer2.0.downsample.1.weight"].numpy())
    assert "res3.0.shortcut.norm.running_mean" not in raw["model"]
    out = tmp_path / "again.pth"
    assert main([str(d2), "--norm", "gn", "--num-groups", "16", "--output", str(out),
                 "--output-format", "torchvision"]) == 0
    again = safe_torch_load(out)
    assert torch.equal(again["layer3.1.bn2.weight"], state["layer3.1.bn2.weight"])


def test_calibration_path(r18_file, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "cal.pth"
    assert main([str(r18_file[0]), "--norm", "gn", "--calib-data", str(images), "--calib-images", "4",
                 "--calib-size", "32", "--output", str(out)]) == 0
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    assert report["calibration"] is not None and report["meta"]["calibrated"] is True


@pytest.mark.parametrize("args,message", [
    (["--norm", "gn", "--num-groups", "7"], r"7 groups \(strict group policy\) does not divide the channels of \d+ layer"),
    (["--norm", "gn+ws", "--output-format", "torchvision"], "torchvision ResNets have no WS convs"),
    (["--arch", "resnet34", "--norm", "gn"], "have no value"),
    (["--source-format", "caffe2", "--norm", "gn"], "not a plain weights pickle|corrupt"),
])
def test_user_errors_exit_2_with_one_line(r18_file, tmp_path, capsys, args, message):
    assert main([str(r18_file[0]), "--output", str(tmp_path / "x.pth"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gn-det-convert: error:") and len(err.splitlines()) == 1 and re.search(message, err)
    assert not (tmp_path / "x.pth").exists()


def test_missing_and_corrupt_input(tmp_path, capsys):
    assert main([str(tmp_path / "nothere.pth")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    assert main([str(bad)]) == 2
    assert "bad.pth is" in capsys.readouterr().err


def test_caffe2_stride_rebuilt_to_match(tmp_path):
    # A stride-on-1x1 checkpoint is loaded into a model rebuilt with that placement, and kept recorded.
    model = build_resnet_for_arch("resnet50", "BN", stride_in_1x1=True, num_classes=None)
    blobs = {convert_name(k, "torchvision", "caffe2"): v.numpy() for k, v in model.state_dict().items()
             if convert_name(k, "torchvision", "caffe2") and not k.endswith(("running_mean", "running_var"))}
    src = tmp_path / "R-50.pkl"
    src.write_bytes(pickle.dumps({"blobs": blobs}, protocol=4))
    out = tmp_path / "r50_gn.pth"
    assert main([str(src), "--norm", "gn", "--output", str(out)]) == 0
    assert safe_torch_load(out)["meta"]["stride_in_1x1"] is True
    assert main([str(src), "--norm", "gn", "--output", str(tmp_path / "tv.pth"), "--output-format", "torchvision"]) == 2
