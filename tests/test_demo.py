"""gn-det-demo: a checkpoint run on a folder of images (PNGs + predictions.json equal to the model's own
outputs) and on a generated video (top-5 per clip and per video), bad inputs and bad arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util
from torchvision.transforms.v2 import functional as F

from gn_det.cli.demo import PREDICTIONS_FILE, find_inputs, main
from gn_det.config import load_config
from gn_det.data.synthetic_coco import SHAPE_CLASSES
from gn_det.data.video.dataset import VideoClipDataset
from gn_det.data.video.annotations import VideoRecord
from gn_det.data.video.synthetic import MOTION_CLASSES, render_clip, write_video

ROOT = Path(__file__).resolve().parents[1]
DET_CONFIG = str(ROOT / "configs/synthetic/mask_rcnn_R_18_FPN_test.yaml")
VIDEO_CONFIG = str(ROOT / "configs/video/synthetic/r3d_18_gn_test.yaml")


def _checkpoint(model, cfg, path: Path) -> str:
    """As the trainer writes model_final.pth: the model, the iteration, the config, RNG states."""
    torch.save({"model": model.state_dict(), "iteration": 49, "config": cfg.dump(), "rng_states": []}, path)
    return str(path)


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour blobs (not noise): a random-init detector still finds boxes on them."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    from gn_det.modeling.mask_rcnn import build_mask_rcnn

    tmp = tmp_path_factory.mktemp("demo_det")
    cfg = load_config(DET_CONFIG)
    torch.manual_seed(0)
    model = build_mask_rcnn(cfg).eval()
    images = tmp / "my images"
    images.mkdir()
    sizes = {"a b.png": (90, 120), "c.jpg": (100, 80)}  # (h, w): neither is the test size (96 short side)
    for i, (name, (h, w)) in enumerate(sizes.items()):
        Image.fromarray(_image(h, w, i)).save(images / name, quality=95)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (images / "notes.txt").write_text("not an input")
    return cfg, model, _checkpoint(model, cfg, tmp / "model_final.pth"), images, sizes


def _model_outputs(cfg, model, path: Path) -> dict:
    """The model's own outputs on the image resized as the test set is (short side 96, long side <= 160)."""
    image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
    h, w = image.shape[-2:]
    scale = min(cfg.INPUT.MIN_SIZE_TEST / min(h, w), cfg.INPUT.MAX_SIZE_TEST / max(h, w))
    resized = F.resize(image, [int(h * scale + 0.5), int(w * scale + 0.5)], antialias=True)
    with torch.no_grad():
        (out,) = model([{"image": resized.float(), "height": h, "width": w}])
    return out


def test_detection_on_a_folder_writes_pngs_and_the_models_predictions(detector, tmp_path, capsys):
    cfg, model, weights, images, sizes = detector
    expected = {name: _model_outputs(cfg, model, images / name) for name in sizes}
    scores = torch.cat([o["scores"] for o in expected.values()])
    assert len(scores) > 4  # enough detections for a threshold that keeps some and drops some
    threshold = float(scores.median())
    out_dir = tmp_path / "out"
    assert main(["--config-file", DET_CONFIG, "--input", str(images), "--output", str(out_dir),
                 "--confidence-threshold", str(threshold), "MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"]) == 0

    record = json.loads((out_dir / PREDICTIONS_FILE).read_text())
    assert record["class_names"] == list(SHAPE_CLASSES)  # labels 1..5 = categories sorted by id
    assert record["num_inputs"] == 3 and record["num_skipped"] == 1  # the .txt is not an input
    assert record["skipped"][0]["file"].endswith("broken.png")
    skip_lines = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line and "broken" in line]
    assert len(skip_lines) == 1
    entries = {Path(e["file"]).name: e for e in record["images"]}
    assert sorted(entries) == sorted(sizes)
    kept_total = 0
    for name, (h, w) in sizes.items():
        entry, out = entries[name], expected[name]
        keep = out["scores"] >= threshold
        kept_total += int(keep.sum())
        assert (entry["height"], entry["width"]) == (h, w)
        inst = entry["instances"]
        assert len(inst) == int(keep.sum())
        got_boxes = torch.tensor([i["box_xyxy"] for i in inst]).reshape(-1, 4)
        torch.testing.assert_close(got_boxes, out["boxes"][keep], atol=1e-4, rtol=0)
        torch.testing.assert_close(torch.tensor([i["score"] for i in inst]), out["scores"][keep], atol=1e-6, rtol=0)
        assert [i["label"] for i in inst] == out["labels"][keep].tolist()
        assert [i["class"] for i in inst] == [SHAPE_CLASSES[v - 1] for v in out["labels"][keep].tolist()]
        masks = out["masks"][keep].reshape(-1, h, w).numpy()
        for i, m in zip(inst, masks):
            assert i["segmentation"]["size"] == [h, w]
            np.testing.assert_array_equal(mask_util.decode(i["segmentation"]), m)
        # The drawing: the input's size, changed where the kept instances are.
        png = np.asarray(Image.open(out_dir / entry["output"]).convert("RGB")).astype(int)
        source = np.asarray(Image.open(images / name).convert("RGB")).astype(int)
        assert png.shape == source.shape == (h, w, 3)
        assert ((png != source).any(axis=2).sum() > 0) == bool(keep.any())
    assert sorted(os.listdir(out_dir)) == sorted(["a b.png", "c.png", PREDICTIONS_FILE])
    assert 0 < kept_total < len(scores)


def test_inputs_files_globs_and_spaces(detector, tmp_path):
    _, _, _, images, _ = detector
    exts = (".png", ".jpg")
    assert [Path(p).name for p in find_inputs([str(images)], exts)] == ["a b.png", "broken.png", "c.jpg"]
    # A quoted glob (the demo expands it), a file named twice, a name with a space.
    got = find_inputs([str(images / "*.jpg"), str(images / "a b.png"), str(images / "c.jpg")], exts)
    assert [Path(p).name for p in got] == ["c.jpg", "a b.png"]


@pytest.mark.parametrize("args, message", [
    (["--input", "{images}/nothing*.png"], "no file matches this pattern"),
    (["--input", "{tmp}/missing.png"], "no such file or folder"),
    (["--input", "{images}", "MODEL.WEIGHTS", "{tmp}/model_final.pth"], "model_final.pth': no such file"),
    (["--input", "{images}", "MODEL.WEIGHTS", ""], "no weights"),
    (["--input", "{images}", "MODEL.NO_SUCH_KEY", "1"], "MODEL.NO_SUCH_KEY"),
    (["--input", "{images}", "--confidence-threshold", "high"], "--confidence-threshold"),
    (["--input", "{images}", "--output", "{images}/c.jpg/out"], "--output '"),  # below a file: not writable
])
def test_bad_arguments_exit_2_with_one_line(detector, tmp_path, capsys, args, message):
    _, _, weights, images, _ = detector
    args = [a.format(images=images, tmp=tmp_path) for a in args]
    if "MODEL.WEIGHTS" not in args:
        args += ["MODEL.WEIGHTS", weights]
    with pytest.raises(SystemExit) as e:
        main(["--config-file", DET_CONFIG, "--output", str(tmp_path / "out")] + args)
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("gn-det-demo: error:") and message in err[0], err


def test_help_does_not_import_torch():
    code = ("import sys; from gn_det.cli import demo\n"
            "try:\n    demo.main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "heavy = [m for m in ('torch', 'torchvision', 'matplotlib', 'pycocotools') if m in sys.modules]\n"
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "gn-det-demo" in done.stdout and "MODEL.WEIGHTS" in done.stdout


def test_video_top5_per_clip_and_per_video(tmp_path):
    from gn_det.modeling.video_resnet import build_video_model

    cfg = load_config(VIDEO_CONFIG)
    torch.manual_seed(0)
    model = build_video_model(cfg).eval()
    weights = _checkpoint(model, cfg, tmp_path / "model_final.pth")
    clips = tmp_path / "my clips"
    video = write_video(clips / "moving left.mp4", render_clip("moving left", np.random.default_rng(0), 12, 32, 42),
                        fps=25)
    (clips / "cut.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    out_dir = tmp_path / "out"
    assert main(["--config-file", VIDEO_CONFIG, "--input", str(clips / "*.mp4"), "--output", str(out_dir),
                 "MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"]) == 0  # the device of the model compared with
    record = json.loads((out_dir / PREDICTIONS_FILE).read_text())
    names = sorted(MOTION_CLASSES[:6])  # the training list's classes, in the model's index order
    assert record["class_names"] == names
    assert record["num_skipped"] == 1 and record["skipped"][0]["file"].endswith("cut.mp4")
    (entry,) = record["videos"]
    assert entry["file"] == str(video) and entry["missing_views"] == 0

    # The test set's views of this video (2 temporal clips x 1 crop, 4 frames every 2, 24 px), built
    # from the config's numbers here, and the model's own logits on them.
    views = VideoClipDataset([VideoRecord(str(video), names[0])], names, num_frames=4, sampling_rate=2, train=False,
                             test_crop_size=24, num_ensemble_views=2, num_spatial_crops=1, mean=tuple(cfg.DATA.MEAN),
                             std=tuple(cfg.DATA.STD))
    with torch.no_grad():
        logits = model([views[i] for i in range(len(views))]).double()
    probs = torch.softmax(logits, dim=1)
    assert len(entry["clips"]) == 2
    for clip, p in zip(entry["clips"], probs):
        scores, labels = torch.topk(p, 5)
        assert [c["label"] for c in clip["top5"]] == labels.tolist()
        assert [c["class"] for c in clip["top5"]] == [names[i] for i in labels.tolist()]
        np.testing.assert_allclose([c["score"] for c in clip["top5"]], scores.numpy(), rtol=0, atol=1e-9)
    # Video level: the clips' softmax scores averaged (the video evaluator's rule), not their logits.
    mean = probs.mean(dim=0)
    scores, labels = torch.topk(mean, 5)
    assert [c["label"] for c in entry["top5"]] == labels.tolist()
    np.testing.assert_allclose([c["score"] for c in entry["top5"]], scores.numpy(), rtol=0, atol=1e-9)
    from_logits = torch.softmax(logits.mean(dim=0), dim=0)
    assert not torch.allclose(mean, from_logits, atol=1e-6, rtol=0)  # the two rules differ on these clips
    # Each clip's top 5 of 6 classes leaves the sixth's share: the scores sum below 1.
    for clip in entry["clips"]:
        total = sum(c["score"] for c in clip["top5"])
        assert 0.5 < total < 1.0


def test_classification_top5_is_the_models_softmax(tmp_path):
    from gn_det.data.synthetic_classification import SYNTHETIC_CLASSES
    from gn_det.modeling.classifier import build_classifier

    config = str(ROOT / "configs/classification/synthetic/R_18_gn_test.yaml")
    cfg = load_config(config, ["INPUT.TEST_RESIZE", "40"])  # resize 40, centre crop 32
    torch.manual_seed(0)
    model = build_classifier(cfg).eval()
    weights = _checkpoint(model, cfg, tmp_path / "model_final.pth")
    Image.fromarray(_image(50, 70, 3)).save(tmp_path / "photo.png")
    out_dir = tmp_path / "out"
    assert main(["--config-file", config, "--input", str(tmp_path / "photo.png"), "--output", str(out_dir),
                 "MODEL.WEIGHTS", weights, "INPUT.TEST_RESIZE", "40", "MODEL.DEVICE", "cpu"]) == 0
    record = json.loads((out_dir / PREDICTIONS_FILE).read_text())
    assert record["class_names"] == sorted(SYNTHETIC_CLASSES)
    assert os.listdir(out_dir) == [PREDICTIONS_FILE]  # no drawing for classification

    # Resize (short side 40 -> 40x56, PIL's filter, as ImageNet test sets are read), centre crop 32.
    crop = F.pil_to_tensor(F.center_crop(F.resize(Image.open(tmp_path / "photo.png"), [40, 56]), [32, 32]))
    with torch.no_grad():
        probs = torch.softmax(model([{"image": crop}])[0].double(), dim=0)
    scores, labels = torch.topk(probs, 5)
    (entry,) = record["images"]
    assert [c["label"] for c in entry["top5"]] == labels.tolist()
    assert [c["class"] for c in entry["top5"]] == [sorted(SYNTHETIC_CLASSES)[i] for i in labels.tolist()]
    np.testing.assert_allclose([c["score"] for c in entry["top5"]], scores.numpy(), rtol=0, atol=1e-6)


def test_visualize_names_the_quick_starts_files_and_refuses_missing_weights(tmp_path, capsys):
    from gn_det.cli import visualize

    cfg = load_config(str(ROOT / "configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml"))
    run = os.path.normpath(cfg.OUTPUT_DIR)  # what the README's quick start writes
    help_text = visualize.build_parser().format_help()
    assert f"--weights {run}/model_final.pth" in help_text
    assert f"--results {run}/inference/{cfg.DATASETS.TEST[0]}/coco_instances_results.json" in help_text
    with pytest.raises(SystemExit) as e:
        visualize.main(["--config-file", DET_CONFIG, "--weights", str(tmp_path / "model_final.pth"),
                        "--output", str(tmp_path / "vis")])
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "model_final.pth': no such file" in err[0], err
