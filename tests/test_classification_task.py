"""TASK classification: config keys, ImageNet-layout data, exact augmentation, top-1/top-5, MODEL.WEIGHTS
from torchvision, and train -> eval-only through train_net."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as F

from gn_det.checkpoint.formats import read_checkpoint, write_checkpoint
from gn_det.checkpoint.io import CheckpointError
from gn_det.cli.convert_checkpoint import main as convert_main
from gn_det.cli.train_net import main as train_net
from gn_det.config import ConfigError, get_cfg, load_config
from gn_det.data.classification import (DatasetError, ImageFolderDataset, RandomResizedCropFlip,
                                        build_classification_dataset, build_classification_test_loader,
                                        build_classification_train_loader, random_resized_crop_box)
from gn_det.data.common import SkippedSample
from gn_det.engine.task import get_task
from gn_det.engine.trainer import load_model_weights
from gn_det.evaluation.classification_evaluation import RESULTS_FILE, ClassificationEvaluator
from gn_det.modeling.classifier import build_classifier

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "classification", "synthetic", "R_18_gn_test.yaml")


def _write(path, size=(24, 20), fmt=None, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


@pytest.fixture()
def folder(tmp_path):
    """3 classes whose sorted order differs from creation order; mixed extensions and letter case."""
    root = tmp_path / "set"
    _write(root / "zebra" / "a.JPEG", fmt="JPEG", seed=1)
    _write(root / "zebra" / "deeper" / "b.png", fmt="PNG", seed=2)
    _write(root / "apple" / "c.jpg", fmt="JPEG", seed=3)
    _write(root / "Mango" / "d.PNG", fmt="PNG", seed=4)
    _write(root / "Mango" / "e.jpeg", fmt="JPEG", seed=5)
    (root / "Mango" / "notes.txt").write_text("not an image")
    _write(root / ".hidden" / "f.png", fmt="PNG", seed=6)  # hidden folders are not classes
    return root


def _cfg(*opts):
    return load_config(CONFIG, list(opts))


def test_config_keys_and_their_task():
    cfg = get_cfg("classification")
    assert cfg.MODEL.META_ARCHITECTURE == "ResNetClassifier" and cfg.MODEL.CLASSIFIER.NUM_CLASSES == 1000
    assert (cfg.INPUT.CROP_SIZE, cfg.INPUT.TEST_RESIZE, cfg.INPUT.TEST_CROP_SIZE) == (224, 256, 224)
    assert tuple(cfg.INPUT.RRC_SCALE) == (0.08, 1.0) and tuple(cfg.INPUT.RRC_RATIO) == pytest.approx((0.75, 4 / 3))
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0 and tuple(cfg.DATASETS.TRAIN) == ("imagenet_train",)
    assert tuple(cfg.DATASETS.TEST) == ("imagenet_val",) and cfg.DATALOADER.SKIP_BAD_SAMPLES is False
    assert _cfg().TASK == "classification"
    with pytest.raises(ConfigError, match="key of TASK 'detection'.*TASK is 'classification'"):
        _cfg("MODEL.ROI_HEADS.NUM_CLASSES", "5")
    with pytest.raises(ConfigError, match="key of TASK 'classification'"):
        load_config(None, ["INPUT.CROP_SIZE", "32"])  # a detection config
    with pytest.raises(ConfigError, match="builds 'ResNetClassifier' only"):
        build_classifier(_cfg("MODEL.META_ARCHITECTURE", "GeneralizedRCNN"))


def test_classes_are_sorted_folder_names(folder):
    ds = ImageFolderDataset(folder, RandomResizedCropFlip(16), name="t")
    assert ds.classes == ["Mango", "apple", "zebra"]
    files = [os.path.relpath(ds.image_path(i), folder) for i in range(len(ds))]
    assert files == ["Mango/d.PNG", "Mango/e.jpeg", "apple/c.jpg", "zebra/a.JPEG", "zebra/deeper/b.png"]
    assert ds.labels.tolist() == [0, 0, 1, 2, 2]
    sample = ds[(4, 7)]
    assert sample["label"] == 2 and sample["index"] == 4 and sample["file_name"].endswith("b.png")
    assert sample["image"].shape == (3, 16, 16) and sample["image"].dtype == torch.uint8

    (folder / "empty_class").mkdir()
    with pytest.raises(DatasetError, match="empty_class holds no"):
        ImageFolderDataset(folder, RandomResizedCropFlip(16))


def test_bad_image_is_a_clear_error_or_a_counted_skip(folder):
    bad = folder / "apple" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    opts = ["DATASETS.REGISTER", json.dumps([["tiny", str(folder)]]), "DATASETS.TRAIN", '("tiny",)',
            "DATASETS.TEST", '("tiny",)', "MODEL.CLASSIFIER.NUM_CLASSES", "3"]
    ds = build_classification_dataset(_cfg(*opts), "tiny", is_train=False)
    i = [os.path.basename(ds.image_path(k)) for k in range(len(ds))].index("broken.jpg")
    with pytest.raises(DatasetError, match=r"broken\.jpg.*corrupt.*SKIP_BAD_SAMPLES"):
        ds[i]
    os.remove(folder / "zebra" / "a.JPEG")  # vanished after the scan
    with pytest.raises(DatasetError, match=r"a\.JPEG: file not found"):
        ds[len(ds) - 2]

    ds.skip_bad = True
    assert isinstance(ds[len(ds) - 2], SkippedSample) and isinstance(ds[i], SkippedSample)

    loader = build_classification_test_loader(_cfg(*opts, "DATALOADER.SKIP_BAD_SAMPLES", "True"), "tiny")
    seen = [os.path.basename(s["file_name"]) for batch in loader for s in batch]
    assert seen == ["d.PNG", "e.jpeg", "c.jpg", "b.png"]  # 5 files on disk now, the broken one skipped
    assert loader.num_skipped == 1 and os.path.basename(loader.skipped[0][0]) == "broken.jpg"


def test_class_lists_and_num_classes_are_checked(folder, tmp_path):
    other = tmp_path / "other"
    _write(other / "apple" / "x.png", fmt="PNG")
    _write(other / "pear" / "y.png", fmt="PNG")
    opts = ["DATASETS.REGISTER", json.dumps([["a", str(folder)], ["b", str(other)]]),
            "DATASETS.TRAIN", '("a",)', "DATASETS.TEST", '("b",)', "MODEL.CLASSIFIER.NUM_CLASSES", "3"]
    with pytest.raises(ValueError, match="label i must mean the same class"):
        build_classification_train_loader(_cfg(*opts), 2)
    with pytest.raises(ValueError, match="same class"):
        build_classification_test_loader(_cfg(*opts), "b")
    with pytest.raises(ValueError, match="has 3 classes but MODEL.CLASSIFIER.NUM_CLASSES is 2; set "
                                         "MODEL.CLASSIFIER.NUM_CLASSES 3"):
        build_classification_train_loader(_cfg(*opts, "DATASETS.TEST", "()", "MODEL.CLASSIFIER.NUM_CLASSES", "2"), 2)
    with pytest.raises(ConfigError, match="unknown classification dataset 'nope'.*DATASETS.REGISTER"):
        build_classification_train_loader(_cfg("DATASETS.TRAIN", '("nope",)'), 2)


@pytest.mark.parametrize("h, w, scale, ratio", [(20, 24, (0.08, 1.0), (3 / 4, 4 / 3)),
                                                (7, 300, (0.9, 1.0), (1.0, 1.0))])  # second: the fallback
def test_crop_box_draws_like_torchvision(h, w, scale, ratio):
    for seed in range(20):
        torch.manual_seed(seed)
        want = RandomResizedCrop.get_params(torch.zeros(3, h, w), list(scale), list(ratio))
        assert random_resized_crop_box(h, w, scale, ratio, torch.Generator().manual_seed(seed)) == tuple(want)


def test_train_augmentation_is_a_function_of_the_key(folder):
    cfg = _cfg("DATASETS.REGISTER", json.dumps([["tiny", str(folder)]]), "DATASETS.TRAIN", '("tiny",)',
               "DATASETS.TEST", "()", "MODEL.CLASSIFIER.NUM_CLASSES", "3", "INPUT.CROP_SIZE", "12",
               "INPUT.RRC_SCALE", "(0.2, 1.0)")
    ds = build_classification_dataset(cfg, "tiny", is_train=True)
    first = ds[(1, 123)]["image"]
    assert torch.equal(first, ds[(1, 123)]["image"])
    assert sum(not torch.equal(first, ds[(1, s)]["image"]) for s in range(124, 130)) >= 5
    # the same draws, spelled out: crop box, resize, then the flip coin
    g = torch.Generator().manual_seed(123)
    image = Image.open(ds.image_path(1)).convert("RGB")
    top, left, h, w = random_resized_crop_box(image.height, image.width, (0.2, 1.0), (3 / 4, 4 / 3), g)
    want = F.resized_crop(image, top, left, h, w, [12, 12], antialias=True)
    if float(torch.rand(1, generator=g)) < 0.5:
        want = F.horizontal_flip(want)
    assert torch.equal(first, F.pil_to_tensor(want))

    # resuming after 2 micro-batches continues the very same stream
    stream = iter(build_classification_train_loader(cfg, 2))
    batches = [next(stream) for _ in range(4)]
    resumed = iter(build_classification_train_loader(cfg, 2, skip_batches=2))
    for want_batch in batches[2:]:
        got = next(resumed)
        assert [s["index"] for s in got] == [s["index"] for s in want_batch]
        assert all(torch.equal(a["image"], b["image"]) for a, b in zip(got, want_batch))


def _reference(logits, labels, k):
    order = np.argsort(-logits, axis=1, kind="stable")
    return (100 * np.mean(order[:, 0] == labels), 100 * np.mean([lab in row[:k] for lab, row in zip(labels, order)]))


@pytest.mark.parametrize("num_classes", [7, 3])
def test_evaluator_matches_a_numpy_reference(tmp_path, num_classes):
    rng = np.random.default_rng(num_classes)
    n = 23
    logits = rng.normal(size=(n, num_classes)).astype(np.float32)
    labels = rng.integers(0, num_classes, n)
    labels[:4] = logits[:4].argmax(1)  # some right answers
    names = [f"c{i}" for i in range(num_classes)]
    ev = ClassificationEvaluator(names, str(tmp_path), dataset_name="made_up")
    ev.reset()
    for part in np.array_split(np.arange(n), 3):
        ev.process([{"index": int(i), "label": int(labels[i])} for i in part], torch.from_numpy(logits[part]))
    ev.process([{"index": 0, "label": int(labels[0])}], torch.from_numpy(logits[:1]))  # a repeat counts once
    result = ev.evaluate()["classification"]
    top1, top5 = _reference(logits, labels, min(5, num_classes))
    assert result == {"top1": pytest.approx(top1), "top5": pytest.approx(top5), "num_images": 23.0}
    if num_classes == 3:
        assert result["top5"] == 100.0  # top-K with K = 3 classes
    saved = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert saved["classes"] == names and saved["top5_k"] == min(5, num_classes)
    for i, name in enumerate(names):
        mine = labels == i
        assert saved["per_class"][name]["num_images"] == int(mine.sum())
        if mine.any():
            assert saved["per_class"][name]["top1"] == pytest.approx(100 * np.mean(logits[mine].argmax(1) == i))


def test_torchvision_weights_fill_the_trunk_and_report_the_fc(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "r18.pth"
    tv = torchvision.models.resnet18(num_classes=1000)
    torch.save(tv.state_dict(), path)
    task = get_task("classification")
    cfg = _cfg("MODEL.RESNETS.NORM", "BN")  # 10 classes
    model = build_classifier(cfg)
    report = load_model_weights(cfg, model, str(path), task)
    trunk = [k for k in model.state_dict() if not k.startswith("resnet.fc.")]
    assert sorted(report.loaded) == sorted(trunk) and not report.missing and not report.unexpected
    assert sorted(report.shape_mismatched) == [("resnet.fc.bias", (1000,), (10,)),
                                               ("resnet.fc.weight", (1000, 512), (10, 512))]
    assert torch.equal(model.resnet.layer3[1].conv2.weight, tv.layer3[1].conv2.weight)
    assert not torch.equal(model.resnet.fc.weight[:, :5], tv.fc.weight[:10, :5])  # left at its init

    # torchvision's own class count: everything loads and it computes what torchvision computes,
    # the classifier's normalization included
    tv10 = torchvision.models.resnet18(num_classes=10).eval()
    state = tv10.state_dict()
    torch.save(state, path)
    model = build_classifier(cfg).eval()
    report = load_model_weights(cfg, model, str(path), task)
    assert not report.missing and not report.shape_mismatched and not report.unexpected
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    mean, std = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1), torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1)
    with torch.no_grad():
        want = tv10((images.float() - mean) / std)
        got = model([{"image": im, "label": 0} for im in images])
    torch.testing.assert_close(got, want)

    # without fc: the fc stays at init; a deeper ResNet is refused
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, path)
    report = load_model_weights(cfg, build_classifier(cfg), str(path), task)
    assert sorted(report.missing) == ["resnet.fc.bias", "resnet.fc.weight"]
    torch.save(torchvision.models.resnet34(num_classes=10).state_dict(), path)
    with pytest.raises(CheckpointError, match="deeper or wider ResNet"):
        load_model_weights(cfg, build_classifier(cfg), str(path), task)


def test_bn_weights_into_a_gn_classifier_load_with_a_warning(tmp_path, caplog):
    """Legal (the norm layers' gamma/beta load; BN statistics have no place): fine-tuning recovers."""
    path = tmp_path / "r18.pth"
    tv = torchvision.models.resnet18(num_classes=10)
    torch.save(tv.state_dict(), path)
    cfg = _cfg()  # GN
    model = build_classifier(cfg)
    with caplog.at_level("WARNING"):
        report = load_model_weights(cfg, model, str(path), get_task("classification"))
    assert sorted(report.loaded) == sorted(model.state_dict()) and not report.shape_mismatched
    assert len([k for k in report.unexpected if k.endswith(("running_mean", "running_var"))]) == 2 * 20
    assert torch.equal(model.resnet.layer2[0].bn1.weight, tv.layer2[0].bn1.weight)
    assert "holds BN weights but the backbone uses GN" in caplog.text


def test_detectron2_pkl_and_converter_output_load(tmp_path):
    task = get_task("classification")
    tv_path = tmp_path / "r18.pth"
    tv = torchvision.models.resnet18(num_classes=10)
    torch.save(tv.state_dict(), tv_path)
    pkl = tmp_path / "r18.pkl"
    write_checkpoint(read_checkpoint(tv_path), pkl, "detectron2")  # detectron2 names: stem.conv1, res2, ...
    cfg = _cfg("MODEL.RESNETS.NORM", "BN")
    model = build_classifier(cfg)
    report = load_model_weights(cfg, model, str(pkl), task)
    assert not report.missing and not report.shape_mismatched
    assert torch.equal(model.resnet.layer4[1].bn2.running_var, tv.layer4[1].bn2.running_var)

    converted = tmp_path / "r18_gn_ws.pth"
    assert convert_main([str(tv_path), "--norm", "gn+ws", "--output", str(converted)]) == 0  # gn-det-convert
    cfg = _cfg("MODEL.RESNETS.NORM", "GN+WS")
    model = build_classifier(cfg)
    report = load_model_weights(cfg, model, str(converted), task)
    assert sorted(report.loaded) == sorted(model.state_dict())  # fc included: 10 classes both
    with pytest.raises(CheckpointError, match="Weight-Standardized conv weights but the model has no WS"):
        load_model_weights(_cfg(), build_classifier(_cfg()), str(converted), task)


def _metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_train_then_eval_only_reproduces_top1(tmp_path):
    out = str(tmp_path / "train")
    assert train_net(["--config-file", CONFIG, "OUTPUT_DIR", out, "LOG_PERIOD", "1"]) == 0
    metrics = _metrics(out)
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert len(losses) == 80
    # it learns: from chance (ln 10 = 2.30) the training loss falls clearly below it (1.82 when measured)
    assert np.mean(losses[:10]) > 2.3 and np.mean(losses[-10:]) < 2.0
    final = metrics[-1]
    assert final["classification/num_images"] == 40 and 0 <= final["classification/top1"] <= 100
    assert final["classification/top5"] >= final["classification/top1"]

    again = str(tmp_path / "eval")
    assert train_net(["--config-file", CONFIG, "--eval-only", "OUTPUT_DIR", again,
                      "MODEL.WEIGHTS", os.path.join(out, "model_final.pth")]) == 0
    result = json.loads(open(os.path.join(again, "inference", "synthetic_cls_test_val", RESULTS_FILE)).read())
    assert result["top1"] == final["classification/top1"] and result["top5"] == final["classification/top5"]
    assert result["classes"] == sorted(result["classes"]) and len(result["classes"]) == 10
    assert math.isclose(sum(v["num_images"] for v in result["per_class"].values()), 40)
