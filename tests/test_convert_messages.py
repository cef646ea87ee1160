"""gn-det-convert's messages a user acts on: one report per output file, the report file named where
the text shortens a list, a calibration shortfall as one line, group-count and WS refusals that name
flags and commands which then work."""

import json
import re
import shlex
import warnings

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from gn_det.checkpoint import CheckpointError, load_into_model, read_checkpoint, safe_torch_load
from gn_det.checkpoint.loading import check_resnet_compatible
from gn_det.cli.convert_checkpoint import main
from gn_det.convert import build_resnet_for_arch
from test_convert_tool import r18_file as _r18_file  # a BN ResNet-18 .pth (5 classes), all tensors distinct

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def r18_file(_r18_file):
    return _r18_file[0]


def test_reports_are_named_after_the_whole_output_file(r18_file, tmp_path, capsys):
    pth, pkl = tmp_path / "R-18-gn.pth", tmp_path / "R-18-gn.pkl"
    assert main([str(r18_file), "--norm", "gn", "--output", str(pth)]) == 0
    assert main([str(r18_file), "--norm", "gn", "--output", str(pkl), "--output-format", "detectron2"]) == 0
    first = json.loads((tmp_path / "R-18-gn.pth.report.json").read_text())
    second = json.loads((tmp_path / "R-18-gn.pkl.report.json").read_text())
    assert (first["output"], first["output_format"]) == (str(pth), "gn_det")
    assert (second["output"], second["output_format"]) == (str(pkl), "detectron2")
    assert not (tmp_path / "R-18-gn.report.json").exists()
    assert f"wrote {pkl} (detectron2) and {tmp_path / 'R-18-gn.pkl.report.json'}" in capsys.readouterr().out


def test_shortened_lists_name_the_report_file(r18_file, tmp_path, capsys):
    out = tmp_path / "r18_gn.pth"
    assert main([str(r18_file), "--norm", "gn", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    report = tmp_path / "r18_gn.pth.report.json"
    line = next(x for x in printed.splitlines() if x.startswith("dropped keys:"))
    # resnet18 has 20 BN layers: each loses running_mean, running_var, num_batches_tracked
    assert line == (f"dropped keys: 20 x running_mean, 20 x running_var, 20 x num_batches_tracked "
                    f"(full list: \"dropped_keys\" in {report})")
    assert "to_dict()" not in printed
    assert len(json.loads(report.read_text())["conversion"]["dropped_keys"]) == 60


def test_calibration_shortfall_is_one_line(r18_file, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "cal.pth"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a raw Python warning escaping the CLI fails the test
        assert main([str(r18_file), "--norm", "gn", "--calib-data", str(images), "--calib-images", "5",
                     "--calib-size", "32", "--output", str(out)]) == 0
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "calibration" in x]
    assert lines == [f"gn-det-convert: calibration: Asked for 5 images but {str(images)!r} has only 3 readable "
                     f"ones; using those"]
    assert "Warning" not in err and "warnings.warn" not in err
    assert json.loads((tmp_path / "cal.pth.report.json").read_text())["meta"]["calibrated"] is True


def test_group_count_error_names_flags_that_work(r18_file, tmp_path, capsys):
    assert main([str(r18_file), "--norm", "gn", "--num-groups", "48", "--output", str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "48 groups (strict group policy)" in err
    flags = re.findall(r"`([^`]*)`", err)
    assert flags == ["--group-policy divisor", "--group-policy channels_per_group --channels-per-group 16",
                     "--num-groups N"]
    # each suggestion runs as written (N: a count that divides every layer)
    for i, extra in enumerate((flags[0], flags[1], flags[2].replace("N", "16"))):
        out = tmp_path / f"ok{i}.pth"
        argv = [str(r18_file), "--norm", "gn", "--output", str(out)]
        if i < 2:
            argv += ["--num-groups", "48"]
        assert main(argv + shlex.split(extra)) == 0, extra
    groups = json.loads((tmp_path / "ok1.pth.report.json").read_text())["conversion"]["replaced"]
    assert {(r["channels"], r["groups"]) for r in groups} == {(64, 4), (128, 8), (256, 16), (512, 32)}


@pytest.fixture(scope="module")
def gnws(r18_file, tmp_path_factory):
    """(the converter's GN+WS file, that model)."""
    path = tmp_path_factory.mktemp("gnws") / "r18_gnws.pth"
    assert main([str(r18_file), "--norm", "gn+ws", "--output", str(path)]) == 0
    ws_model = build_resnet_for_arch("resnet18", "GN+WS", num_classes=5).eval()
    load_into_model(ws_model, read_checkpoint(path), stride_in_1x1=False)
    return path, ws_model


def test_ws_refusal_names_a_command_that_folds_ws(gnws):
    gnws, ws_model = gnws
    plain = build_resnet_for_arch("resnet18", "GN", num_classes=5).eval()
    with pytest.raises(CheckpointError) as info:
        check_resnet_compatible(read_checkpoint(gnws), plain, stride_in_1x1=False)
    command = re.search(r"and load that file: (gn-det-convert .*)$", str(info.value)).group(1)
    argv = shlex.split(command)
    assert argv[:4] == ["gn-det-convert", str(gnws), "--norm", "gn"] and argv[4] == "--output"
    assert main(argv[1:]) == 0  # the command as the message gives it
    folded = read_checkpoint(argv[5])
    assert folded.meta["ws"] is False
    load_into_model(plain, folded, stride_in_1x1=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), ws_model(x), rtol=1e-4, atol=1e-4)


def test_torchvision_ws_refusal_names_the_folding_step(r18_file, gnws, tmp_path, capsys):
    """The second step the refusal names writes a file torchvision's own GN ResNet loads, exactly."""
    gnws, ws_model = gnws
    x = torch.randn(2, 3, 64, 64)
    assert main([str(r18_file), "--norm", "gn+ws", "--output-format", "torchvision",
                 "--output", str(tmp_path / "tv.pth")]) == 2
    err = capsys.readouterr().err
    step = re.search(r"fold WS in a second step: (gn-det-convert .*)$", err.strip()).group(1)
    tv_out = tmp_path / "tv.pth"
    argv = shlex.split(step.replace("GN_WS_FILE.pth", str(gnws)))[1:] + ["--output", str(tv_out)]
    assert main(argv) == 0
    tv_model = torchvision.models.resnet18(num_classes=5, norm_layer=lambda c: nn.GroupNorm(32, c)).eval()
    tv_model.load_state_dict(safe_torch_load(tv_out))
    with torch.no_grad():
        torch.testing.assert_close(tv_model(x), ws_model(x), rtol=1e-4, atol=1e-4)
