"""Dataset catalog and the detection loaders, end to end on small synthetic sets."""

import itertools
import os
from pathlib import Path

import pytest
import torch

from gn_det.config import ConfigError, get_cfg
from gn_det.data import build as build_module
from gn_det.data import catalog
from gn_det.data.build import build_detection_test_loader, build_detection_train_loader, get_dataset_metadata
from gn_det.data.coco_dataset import DatasetError
from gn_det.data.synthetic_coco import generate_synthetic_coco
from gn_det.utils import comm

NUM_IMAGES = 16


@pytest.fixture(scope="module")
def varied_set(tmp_path_factory):
    """Landscape and portrait synthetic images, registered from the config."""
    json_file, image_root = generate_synthetic_coco(
        tmp_path_factory.mktemp("varied"), NUM_IMAGES, 48, seed=2, vary_aspect=True, show_progress=False
    )
    return json_file, image_root


def _cfg(varied_set):
    cfg = get_cfg("detection")
    cfg.DATASETS.REGISTER = [["varied", *varied_set]]
    cfg.DATASETS.TRAIN = ("varied",)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 5
    cfg.INPUT.MIN_SIZE_TRAIN = (40, 48, 56)
    cfg.INPUT.MAX_SIZE_TRAIN = 80
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 48, 80
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SEED = 11
    return cfg


def _summary(batches):
    return [[(s["image_id"], tuple(s["image"].shape), float(s["image"].sum()),
              s["instances"]["boxes"].tolist()) for s in b] for b in batches]


def test_train_batches_have_the_documented_format(varied_set):
    batches = list(itertools.islice(build_detection_train_loader(_cfg(varied_set), 3), 6))
    orientations = set()
    for batch in batches:
        assert len(batch) == 3
        shapes = {tuple(s["image"].shape[1:]) for s in batch}
        orientations |= {h > w for h, w in shapes}
        assert len({h > w for h, w in shapes}) == 1  # aspect grouping
        for s in batch:
            img, inst = s["image"], s["instances"]
            assert img.dtype == torch.float32 and img.shape[0] == 3 and 0 <= img.min() and img.max() <= 255
            assert min(img.shape[1:]) in (40, 48, 56) or max(img.shape[1:]) == 80
            assert (s["height"], s["width"]) in ((48, 64), (64, 48))  # original size
            n = len(inst["labels"])
            assert n > 0 and inst["labels"].dtype == torch.int64
            assert 1 <= inst["labels"].min() and inst["labels"].max() <= 5
            assert inst["boxes"].shape == (n, 4) and inst["masks"].shape == (n, *img.shape[1:])
            b = inst["boxes"]
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
            assert (b[:, 2] <= img.shape[2]).all() and (b[:, 3] <= img.shape[1]).all()
            # Each mask lies within its box (1 px slack for nearest-neighbour resizing).
            for m, (x0, y0, x1, y1) in zip(inst["masks"], b.tolist()):
                ys, xs = torch.nonzero(m, as_tuple=True)
                assert xs.min() >= x0 - 1 and xs.max() + 1 <= x1 + 1
                assert ys.min() >= y0 - 1 and ys.max() + 1 <= y1 + 1
    assert orientations == {True, False}


def test_workers_do_not_change_the_data_and_resume_skips_exactly(varied_set):
    cfg = _cfg(varied_set)
    in_process = _summary(itertools.islice(build_detection_train_loader(cfg, 2), 6))
    cfg.DATALOADER.NUM_WORKERS = 2
    in_workers = _summary(itertools.islice(build_detection_train_loader(cfg, 2), 6))
    assert in_process == in_workers
    cfg.DATALOADER.NUM_WORKERS = 0
    resumed = _summary(itertools.islice(build_detection_train_loader(cfg, 2, skip_batches=4), 2))
    assert resumed == in_process[4:6]


def test_test_loader_keeps_every_image_once_across_ranks(varied_set, monkeypatch):
    cfg = _cfg(varied_set)
    seen = []
    for rank in range(2):
        monkeypatch.setattr(comm, "get_rank", lambda r=rank: r)
        monkeypatch.setattr(comm, "get_world_size", lambda: 2)
        for batch in build_detection_test_loader(cfg, "varied"):
            assert len(batch) == 1
            s = batch[0]
            assert min(s["image"].shape[1:]) == 48 and (s["height"], s["width"]) in ((48, 64), (64, 48))
            seen.append(s["image_id"])
    assert sorted(seen) == list(range(1, NUM_IMAGES + 1))  # empty images included


def test_bad_image_in_a_worker_names_the_file_or_is_skipped_and_counted(varied_set, tmp_path, caplog):
    # A copy of the set with one truncated JPEG.
    json_file, image_root = varied_set
    bad_root = tmp_path / "images"
    bad_root.mkdir()
    for f in Path(image_root).iterdir():
        (bad_root / f.name).write_bytes(f.read_bytes())
    broken = bad_root / "000003.jpg"
    broken.write_bytes(broken.read_bytes()[:100])
    cfg = _cfg(varied_set)
    cfg.DATASETS.REGISTER = [["varied", json_file, str(bad_root)]]
    cfg.DATALOADER.NUM_WORKERS = 1
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = False
    with pytest.raises(DatasetError, match=str(broken)):
        for _ in itertools.islice(build_detection_train_loader(cfg, 4), 20):
            pass
    cfg.DATALOADER.SKIP_BAD_SAMPLES = True
    loader = build_detection_train_loader(cfg, 4)
    ids = [s["image_id"] for b in itertools.islice(loader, 20) for s in b]
    assert 4 not in ids and loader.num_skipped >= 1
    assert len(ids) == 20 * 4 - loader.num_skipped
    assert "skipped bad sample" in caplog.text and str(broken) in caplog.text


def test_synthetic_set_generated_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GN_DET_CACHE", str(tmp_path))
    cfg = get_cfg("detection")
    cfg.DATASETS.SYNTHETIC = [["shapes_tiny", 6, 48, 0]]
    meta = get_dataset_metadata("shapes_tiny", cfg)
    assert meta.class_names == ["circle", "square", "triangle", "star", "cross"]
    assert meta.label_to_category_id == {1: 2, 2: 4, 3: 6, 4: 8, 5: 10}
    assert Path(meta.json_file).is_file() and str(tmp_path) in meta.json_file
    assert len(os.listdir(meta.image_root)) == 6
    mtime = os.path.getmtime(meta.json_file)
    assert get_dataset_metadata("shapes_tiny").json_file == meta.json_file
    assert os.path.getmtime(meta.json_file) == mtime  # reused, not regenerated
    assert os.listdir(Path(meta.json_file).parent.parent) == [Path(meta.json_file).parent.name]


def test_crash_during_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("GN_DET_CACHE", str(tmp_path))

    def crash(out_dir, *args, **kwargs):
        (Path(out_dir) / "images").mkdir()
        (Path(out_dir) / "images" / "000000.jpg").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(catalog, "generate_synthetic_coco", crash)
    catalog.register_synthetic_coco("crashy", 4, 48, 0)
    with pytest.raises(KeyboardInterrupt):
        catalog.get_dataset_files("crashy")
    assert os.listdir(tmp_path / "synthetic") == []


def test_unknown_and_missing_datasets_are_clear_errors(tmp_path, monkeypatch, varied_set):
    cfg = _cfg(varied_set)
    cfg.DATASETS.TRAIN = ("no_such_set",)
    with pytest.raises(ConfigError,
                       match=r"unknown dataset 'no_such_set'; known datasets: \[.*'coco_2017_val'.*'varied'"):
        build_detection_train_loader(cfg, 2)
    monkeypatch.setenv("GN_DET_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"dataset .coco_2017_val.: .*instances_val2017.json.*Set GN_DET_DATASETS") as e:
        build_detection_test_loader(cfg, "coco_2017_val")
    assert str(tmp_path / "coco" / "annotations") in str(e.value)
    cfg.DATASETS.REGISTER = [["mine", str(tmp_path / "a.json"), str(tmp_path)]]
    with pytest.raises(FileNotFoundError, match=r"dataset 'mine': annotation json not found .*a\.json"):
        build_detection_test_loader(cfg, "mine")
    cfg.DATASETS.REGISTER = [["only_two", "a.json"]]
    with pytest.raises(ValueError, match="must be \\[name, json_file, image_root\\]"):
        build_detection_test_loader(cfg, "only_two")


def test_too_few_classes_in_the_config_is_an_error(varied_set):
    cfg = _cfg(varied_set)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    with pytest.raises(ValueError, match="set MODEL.ROI_HEADS.NUM_CLASSES 5"):
        build_detection_train_loader(cfg, 2)


def test_box_only_models_get_no_masks(varied_set):
    cfg = _cfg(varied_set)
    cfg.MODEL.MASK_ON = False
    batch = next(iter(build_detection_train_loader(cfg, 2)))
    assert all("masks" not in s["instances"] for s in batch)
    assert build_module.build_detection_dataset(cfg, "varied", is_train=True).with_masks is False


def test_two_training_sets_are_concatenated(varied_set, tmp_path):
    json_b, root_b = generate_synthetic_coco(tmp_path, 4, 48, seed=5, show_progress=False)
    cfg = _cfg(varied_set)
    cfg.DATASETS.REGISTER = [["varied", *varied_set], ["small", json_b, root_b]]
    cfg.DATASETS.TRAIN = ("varied", "small")
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = False
    files = {s["file_name"] for b in itertools.islice(build_detection_train_loader(cfg, 4), 12) for s in b}
    assert any(f.startswith(root_b) for f in files) and any(f.startswith(varied_set[1]) for f in files)
    assert len(files) == len(catalog_kept("varied", cfg)) + len(catalog_kept("small", cfg))


def catalog_kept(name, cfg):
    ds = build_module.build_detection_dataset(cfg, name, is_train=True)
    return [ds.image_path(i) for i in range(len(ds))]
