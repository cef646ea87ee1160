"""gn-det-export: TorchScript (and ONNX) programs equal the eager models, with WS folded; bad inputs exit 2."""

import json
import os

import pytest
import torch

from gn_det.cli.export import main as export_main
from gn_det.config import load_config
from gn_det.data.video.transforms import to_normalized_cthw
from gn_det.engine.task import get_task
from gn_det.export import compare_outputs, onnx_missing
from gn_det.layers.ws_conv import WSConv2d

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
CLS_CFG = os.path.join(CONFIGS, "classification", "synthetic", "R_18_gn_test.yaml")
DET_CFG = os.path.join(CONFIGS, "synthetic", "mask_rcnn_R_18_FPN_test.yaml")
VID_CFG = os.path.join(CONFIGS, "video", "synthetic", "r3d_18_gn_test.yaml")
GN_WS = ["MODEL.RESNETS.NORM", "GN+WS"]
# torch 2.14 marks TorchScript deprecated (torch.export's programs cannot hold Mask R-CNN's data-dependent shapes)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


def _trained_like(config, opts, path, seed=0):
    """A model of ``config`` with every parameter and norm affine random (all tensors differ), saved as a
    training checkpoint; returns (eager model in eval mode, its config)."""
    cfg = load_config(config, opts)
    torch.manual_seed(seed)
    model = get_task(cfg.TASK).build_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:  # norm gammas/betas and biases: zero-init residual gammas would hide blocks
                p.uniform_(0.5, 1.5)
    torch.save({"model": model.state_dict(), "iteration": 7}, path)
    return model.eval(), cfg


def _export(cfg_file, opts, out, *flags):
    return export_main(["--config-file", cfg_file, "--output", str(out), *flags, *opts])


def _pixels(*shape, seed=1):
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed)).float()


def _authors_ws(w):
    """(W - mean) / (unbiased std + 1e-5) per output channel, written out (the WS authors' convention)."""
    flat = w.reshape(w.shape[0], -1)
    return ((flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-5)).reshape_as(w)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    path = tmp_path_factory.mktemp("cls") / "model_final.pth"
    model, cfg = _trained_like(CLS_CFG, GN_WS, path)
    return model, GN_WS + ["MODEL.WEIGHTS", str(path)]


def test_classifier_torchscript_equals_eager_with_ws_folded(classifier, tmp_path):
    model, opts = classifier
    assert _export(CLS_CFG, opts, tmp_path) == 0
    program = torch.jit.load(str(tmp_path / "model.torchscript.pt"))
    images = _pixels(3, 3, 40, 40)  # another batch and size than the traced (2, 3, 32, 32)
    with torch.no_grad():
        expected = model([{"image": im} for im in images])
        got = program(images)
    assert got.shape == expected.shape == (3, 10)
    assert (got - expected).abs().max() < 1e-4 * expected.abs().max()
    # The program holds plain convs with the standardized weights, and no standardization op.
    ws = {n: m for n, m in model.named_modules() if isinstance(m, WSConv2d)}
    params = dict(program.named_parameters())
    assert len(ws) == 20
    for name, conv in ws.items():
        folded = params[f"model.{name}.weight"]
        torch.testing.assert_close(folded, _authors_ws(conv.weight), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(folded, conv.weight, atol=1e-3)
    assert not _standardizes(program)
    report = json.loads((tmp_path / "export.json").read_text())
    assert report["ws_convs_folded"] == 20 and report["kind"] == "classifier" and report["outputs"] == ["logits"]
    assert report["input"]["input"] == "float32, RGB, 0-255" and "123.675" in report["input"]["inside_graph"][0]
    assert report["exports"][0]["max_abs_diff"] <= 1e-4 * expected.abs().max()


def _standardizes(program) -> bool:
    """Whether a traced GN model's graph standardizes weights (a var_mean, or a batch_norm: GN models have no BN)."""
    graph = str(program.inlined_graph)
    return "var_mean" in graph or "batch_norm" in graph


def test_keep_ws_exports_the_standardization(tmp_path):
    opts = GN_WS + ["MODEL.WS_MODE", "paper"]
    model, _ = _trained_like(CLS_CFG, opts, tmp_path / "paper.pth")
    assert _export(CLS_CFG, opts + ["MODEL.WEIGHTS", str(tmp_path / "paper.pth")], tmp_path / "out", "--keep-ws") == 0
    program = torch.jit.load(str(tmp_path / "out" / "model.torchscript.pt"))
    assert _standardizes(program)
    assert json.loads((tmp_path / "out" / "export.json").read_text())["ws_convs_folded"] == 0
    images = _pixels(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(program(images), model([{"image": im} for im in images]), rtol=1e-4, atol=1e-4)


def test_bgr_weights_flip_inside_the_graph(tmp_path):
    opts = ["INPUT.FORMAT", "BGR", "MODEL.PIXEL_MEAN", "[103.53, 116.28, 123.675]", "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"]
    model, _ = _trained_like(CLS_CFG, opts, tmp_path / "bgr.pth")
    assert _export(CLS_CFG, opts + ["MODEL.WEIGHTS", str(tmp_path / "bgr.pth")], tmp_path / "out") == 0
    program = torch.jit.load(str(tmp_path / "out" / "model.torchscript.pt"))
    images = _pixels(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(program(images), model([{"image": im} for im in images]), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(program(images), program(images.flip(1)), atol=1e-3)  # RGB in, not BGR
    steps = json.loads((tmp_path / "out" / "export.json").read_text())["input"]["inside_graph"]
    assert steps[0].startswith("channels flipped to BGR")


def test_detector_torchscript_equals_eager_on_another_size(tmp_path):
    opts = GN_WS + ["MODEL.FPN.NORM", "GN+WS", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96"]
    model, cfg = _trained_like(DET_CFG, opts, tmp_path / "det.pth")
    assert _export(DET_CFG, opts + ["MODEL.WEIGHTS", str(tmp_path / "det.pth")], tmp_path / "out") == 0
    program = torch.jit.load(str(tmp_path / "out" / "model.torchscript.pt"))
    image = _pixels(3, 72, 96, seed=5)  # traced on 64 x 85, checked on 85 x 64 too
    with torch.no_grad():
        expected = model([{"image": image}])[0]
        boxes, scores, labels, masks = program(image)
    assert len(boxes) > 0 and masks.shape == (len(boxes), 72, 96) and masks.dtype == torch.uint8
    assert torch.equal(labels, expected["labels"]) and torch.equal(masks, expected["masks"])
    torch.testing.assert_close(boxes, expected["boxes"], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(scores, expected["scores"], rtol=1e-4, atol=1e-5)
    report = json.loads((tmp_path / "out" / "export.json").read_text())
    assert report["outputs"] == ["boxes", "scores", "labels", "masks"]
    assert report["ws_convs_folded"] == sum(isinstance(m, WSConv2d) for m in model.modules()) > 20
    assert not _standardizes(program)
    # ONNX writes GN as Reshape(0, groups, -1): onnxruntime fails on an image with no detection (0 masks)
    with pytest.raises(SystemExit) as exit_info:
        _export(DET_CFG, opts + ["MODEL.WEIGHTS", str(tmp_path / "det.pth")], tmp_path / "onnx", "--format", "onnx")
    assert exit_info.value.code == 2 and not (tmp_path / "onnx" / "model.onnx").exists()


def test_video_torchscript_equals_eager_on_loader_normalized_clips(tmp_path):
    model, cfg = _trained_like(VID_CFG, GN_WS, tmp_path / "vid.pth")
    assert model.input_modality == "rgb_diff"
    assert _export(VID_CFG, GN_WS + ["MODEL.WEIGHTS", str(tmp_path / "vid.pth")], tmp_path / "out") == 0
    program = torch.jit.load(str(tmp_path / "out" / "model.torchscript.pt"))
    clips = _pixels(3, 3, 4, 24, 24, seed=2)
    with torch.no_grad():
        # the eager model reads clips as the loader normalizes them; the program reads 0-255 frames
        batch = [{"video": to_normalized_cthw(c.to(torch.uint8).permute(1, 0, 2, 3), cfg.DATA.MEAN, cfg.DATA.STD),
                  "label": 0} for c in clips]
        expected = model(batch)
        got = program(clips)
    assert got.shape == (3, 6)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    assert not _standardizes(program)


@pytest.mark.skipif(bool(onnx_missing()), reason=f"ONNX export needs {onnx_missing()} "
                                                  f"(pip install -e '.[export]': onnx, onnxruntime)")
def test_classifier_onnx_equals_eager(classifier, tmp_path):
    import onnxruntime

    model, opts = classifier
    assert _export(CLS_CFG, opts, tmp_path, "--format", "onnx") == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    images = _pixels(3, 3, 40, 40)
    got = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    with torch.no_grad():
        expected = model([{"image": im} for im in images])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    ops = {node.op_type for node in graph.node}
    assert "Conv" in ops and not {"ReduceMean", "Sqrt"} & ops  # unfolded WS exports as both, per conv
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    for name in ("resnet.conv1", "resnet.layer3.1.conv2"):
        raw = model.get_submodule(name).weight
        torch.testing.assert_close(weights[f"model.{name}.weight"], _authors_ws(raw), rtol=1e-5, atol=1e-6)


def test_compare_outputs_labels_exact_masks_by_fraction():
    names = ["boxes", "scores", "labels", "masks"]
    e = (torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0.9]), torch.tensor([1]), torch.zeros(1, 40, 50, dtype=torch.uint8))
    flipped = e[3].clone()
    flipped[0, 0, 0] = 1  # 1 of 2000 pixels: within 0.1%
    assert compare_outputs(names, e, (e[0] + 1e-4, e[1], e[2], flipped), [3, 40, 50], 1e-4, 1e-4).ok
    bad = compare_outputs(names, e, (e[0], e[1], torch.tensor([2]), e[3]), [3, 40, 50], 1e-4, 1e-4)
    assert not bad.ok and bad.problems[0].startswith("labels")
    fewer = compare_outputs(names, e, tuple(t[:0] for t in e), [3, 40, 50], 1e-4, 1e-4)
    assert [p.split(":")[0] for p in fewer.problems] == names


def test_bad_inputs_exit_2_with_one_line(classifier, tmp_path, capsys, monkeypatch):
    _, opts = classifier
    cases = [
        (["--config-file", str(tmp_path / "nope.yaml")], "nope.yaml"),
        (["--config-file", CLS_CFG, "MODEL.WEIGHTS", ""], "MODEL.WEIGHTS is empty"),
        (["--config-file", CLS_CFG, "MODEL.WEIGHTS", str(tmp_path / "missing.pth")], "missing.pth"),
        (["--config-file", CLS_CFG, "--sample-image", str(tmp_path / "none.png"), *opts], "none.png"),
    ]
    for argv, needle in cases:
        with pytest.raises(SystemExit) as exit_info:
            export_main(["--output", str(tmp_path / "out"), *argv])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2, argv
        assert err.startswith("gn-det-export: error:") and needle in err and "\n" not in err, err
    # a format that cannot export (package missing, exporter failure): the reason and the alternative
    monkeypatch.setattr("gn_det.export.exporter.onnx_missing", lambda verify=True: ["onnx"])
    with pytest.raises(SystemExit) as exit_info:
        _export(CLS_CFG, opts, tmp_path / "out", "--format", "onnx")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "needs onnx" in err and "--format torchscript" in err
    monkeypatch.setattr("gn_det.export.exporter.onnx_missing", lambda verify=True: [])

    def unsupported(*args, **kwargs):
        raise RuntimeError("Unsupported: ONNX export of operator roi_align, opset 17\nlong details")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    with pytest.raises(SystemExit) as exit_info:
        _export(CLS_CFG, opts, tmp_path / "out", "--format", "onnx")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "roi_align" in err and "--format torchscript" in err
    assert "long details" not in err and not os.listdir(tmp_path / "out")


def test_export_that_differs_from_eager_is_refused_and_not_written(classifier, tmp_path, capsys, monkeypatch):
    _, opts = classifier
    from gn_det.export import exporter

    real = exporter.load_exported

    def off_by_a_little(fmt, path):
        run = real(fmt, path)
        return lambda x: tuple(t + 0.01 for t in run(x))

    monkeypatch.setattr(exporter, "load_exported", off_by_a_little)
    with pytest.raises(SystemExit) as exit_info:
        _export(CLS_CFG, opts, tmp_path)
    err = capsys.readouterr().err
    assert exit_info.value.code == 3 and "logits: max abs diff 0.01" in err
    assert not (tmp_path / "model.torchscript.pt").exists() and os.listdir(tmp_path) == []

    def fails(x):
        raise RuntimeError("Non-zero status code returned while running Reshape node\n(stack)")

    monkeypatch.setattr(exporter, "load_exported", lambda fmt, path: fails)
    with pytest.raises(SystemExit) as exit_info:
        _export(CLS_CFG, opts, tmp_path)
    err = capsys.readouterr().err
    assert exit_info.value.code == 3 and "fails on an input of shape [2, 3, 32, 32]" in err and "Reshape node" in err
    assert "(stack)" not in err and os.listdir(tmp_path) == []


def test_help_and_config_mistakes_answer_without_importing_torch():
    import subprocess
    import sys

    probe = ("import sys\nfrom gn_det.cli.export import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
             "    print('exit', e.code, [m for m in ('torch', 'torchvision') if m in sys.modules])\n")
    for argv, code in ((["--help"], 0), (["--config-file", CLS_CFG, "SOLVER.BASE_LRR", "1"], 2)):
        out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120)
        assert out.stdout.strip().splitlines()[-1] == f"exit {code} []", out.stdout + out.stderr
        if code == 2:
            assert out.stderr.startswith("gn-det-export: error: Unknown config key 'SOLVER.BASE_LRR'")
