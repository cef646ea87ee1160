"""Clip transforms, the synthetic motion set, and VideoClipDataset (keys, replacement, views)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from gn_det.utils.cache import cache_root
from gn_det.data.coco_dataset import DatasetError
from gn_det.data.video.annotations import VideoRecord, load_video_list
from gn_det.data.video.dataset import SkippedView, VideoClipDataset, collate_video_samples
from gn_det.data.video.decode import decode_frames, probe
from gn_det.data.video.sampling import train_clip_indices
from gn_det.data.video.synthetic import (FLIP_LABEL_MAP, MARKER, MOTION_CLASSES, flip_label_map,
                                         ensure_synthetic_kinetics, generate_synthetic_kinetics, render_clip,
                                         write_video)
from gn_det.data.video.transforms import (TestClipTransform, TrainClipTransform, make_flip_index_map,
                                          spatial_crop_offset)

SMALL = dict(num_classes=6, train_per_class=2, val_per_class=1, num_frames=8, size=32, seed=3)
CLIP = dict(num_frames=4, sampling_rate=2, jitter_scales=(24, 28), crop_size=20, test_crop_size=24)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return generate_synthetic_kinetics(tmp_path_factory.mktemp("syn") / "kin", show_progress=False, **SMALL)


@pytest.fixture(scope="module")
def train_list(synthetic):
    return load_video_list(synthetic / "annotations" / "train.csv")


# ----------------------------------------------------------------------------- transforms
def test_train_transform_shapes_normalization_and_flip():
    clip = torch.full((4, 30, 40, 3), round(0.45 * 255), dtype=torch.uint8)
    clip[:, :, :20, 0] = 255  # left half red
    t = TrainClipTransform((24, 28), 20)
    flips = []
    for seed in range(12):
        out, flipped = t(clip, np.random.default_rng(seed))
        assert out.shape == (3, 4, 20, 20) and out.dtype == torch.float32
        assert out[1].abs().max() < 0.02  # (0.45 - 0.45) / 0.225 in the untouched green channel
        noflip, was = TrainClipTransform((24, 28), 20, flip=False)(clip, np.random.default_rng(seed))
        assert not was
        assert torch.equal(out, noflip.flip(-1) if flipped else noflip)
        flips.append(flipped)
    assert any(flips) and not all(flips)
    with pytest.raises(ValueError, match="crop_size <= jitter_scales"):
        TrainClipTransform((16, 28), 20)


def test_test_transform_three_crops_landscape_and_portrait():
    assert [spatial_crop_offset(24, 36, 24, k, 3) for k in range(3)] == [(0, 0), (0, 6), (0, 12)]
    assert [spatial_crop_offset(36, 24, 24, k, 3) for k in range(3)] == [(0, 0), (6, 0), (12, 0)]
    assert spatial_crop_offset(30, 40, 24, 0, 1) == (3, 8)
    t = TestClipTransform(24, 3)
    land = torch.zeros((2, 32, 48, 3), dtype=torch.uint8)
    land[:, :, :8] = 255  # white left stripe: only the left crop sees it
    outs = [t(land, k) for k in range(3)]
    assert all(o.shape == (3, 2, 24, 24) for o in outs)
    assert outs[0].max() > 2 and outs[1].max() < 0 and outs[2].max() < 0
    portrait = torch.zeros((2, 48, 32, 3), dtype=torch.uint8)
    portrait[:, -8:] = 255  # bottom stripe: only the bottom crop sees it
    outs = [t(portrait, k) for k in range(3)]
    assert outs[2].max() > 2 and outs[0].max() < 0


def test_flip_index_map():
    classes = ["growing", "moving left", "moving right"]
    assert make_flip_index_map({"moving left": "moving right"}, classes) == {1: 2, 2: 1}
    assert make_flip_index_map(None, classes) == {}
    with pytest.raises(ValueError, match="unknown class"):
        make_flip_index_map({"moving up": "moving down"}, classes)
    with pytest.raises(ValueError, match="sends class"):
        make_flip_index_map({"growing": "moving left", "moving right": "moving left"}, classes)


# ----------------------------------------------------------------------------- synthetic set
def test_synthetic_layout_csv_and_reuse(synthetic, train_list, tmp_path):
    settings = json.loads((synthetic / MARKER).read_text())
    assert settings["num_classes"] == 6 and settings["seed"] == 3
    assert train_list.format == "kinetics" and len(train_list.records) == 12
    assert train_list.classes == sorted(MOTION_CLASSES[:6])
    assert (synthetic / "train" / "moving left").is_dir()  # class sub-folders with spaces
    assert all((synthetic / "train" / r.label).is_dir() for r in train_list.records)
    assert all(probe(r.path).num_frames == 8 for r in train_list.records)
    header = (synthetic / "annotations" / "train.csv").read_text().splitlines()[0]
    assert header == "label,youtube_id,time_start,time_end,split"
    val = load_video_list(synthetic / "annotations" / "val.csv")
    assert len(val.records) == 6 and all(r.path.startswith(str(synthetic / "val")) for r in val.records)
    # Complete: reused as is; another seed into the same folder is refused.
    mtime = (synthetic / MARKER).stat().st_mtime_ns
    assert generate_synthetic_kinetics(synthetic, show_progress=False, **SMALL) == synthetic
    assert (synthetic / MARKER).stat().st_mtime_ns == mtime
    with pytest.raises(FileExistsError, match="delete it or choose another folder"):
        generate_synthetic_kinetics(synthetic, show_progress=False, **{**SMALL, "seed": 4})
    # Same seed, same annotations.
    again = generate_synthetic_kinetics(tmp_path / "again", show_progress=False,
                                        **{**SMALL, "train_per_class": 1, "val_per_class": 0})
    first_rows = (synthetic / "annotations" / "train.csv").read_text().splitlines()
    assert set((again / "annotations" / "train.csv").read_text().splitlines()[1:]) <= set(first_rows)
    assert not list(tmp_path.glob(".again.*"))  # no temporary folder left behind


def test_ensure_synthetic_kinetics_uses_the_cache():
    root = ensure_synthetic_kinetics(num_classes=2, train_per_class=1, val_per_class=1, num_frames=4, size=16,
                                     show_progress=False)
    assert root.parent == cache_root() / "synthetic" and (root / MARKER).is_file()
    assert ensure_synthetic_kinetics(num_classes=2, train_per_class=1, val_per_class=1, num_frames=4, size=16,
                                     show_progress=False) == root


def _motion_centre(clip: np.ndarray, t: int) -> np.ndarray:
    """(row, col) centre of the pixels that change between frames t and t + 1 (the moving shape)."""
    changed = np.abs(clip[t + 1].astype(int) - clip[t].astype(int)).sum(-1) > 60
    return np.argwhere(changed).mean(0)


@pytest.mark.parametrize("name,axis,sign", [("moving right", 1, 1), ("moving left", 1, -1),
                                            ("moving down", 0, 1), ("moving up", 0, -1)])
def test_synthetic_motion_is_what_the_label_says(name, axis, sign):
    for k in range(3):
        clip = render_clip(name, np.random.default_rng(k), 8, 32, 42)
        move = _motion_centre(clip, 6) - _motion_centre(clip, 0)
        assert sign * move[axis] > 3, (name, k, move)
    assert flip_label_map(MOTION_CLASSES[:6]) == {"moving left": "moving right", "moving right": "moving left"}
    assert FLIP_LABEL_MAP["rotating clockwise"] == "rotating counter-clockwise"


def test_synthetic_growing_and_shrinking():
    def changed(clip, t):  # the ring the shape's edge sweeps: longer when the shape is bigger
        return int((np.abs(clip[t + 1].astype(int) - clip[t].astype(int)).sum(-1) > 60).sum())

    for k in range(3):
        grow = render_clip("growing", np.random.default_rng(k), 8, 32, 42)
        shrink = render_clip("shrinking", np.random.default_rng(k), 8, 32, 42)
        assert changed(grow, 6) > changed(grow, 0) and changed(shrink, 0) > changed(shrink, 6)


# ----------------------------------------------------------------------------- dataset
def make_dataset(records, classes, **kw):
    return VideoClipDataset(records, classes, **{**CLIP, **kw})


def test_train_item_is_a_pure_function_of_the_key(train_list):
    ds = make_dataset(train_list.records, train_list.classes, train=True)
    assert len(ds) == 12
    a, b = ds[(3, 11)], ds[(3, 11)]
    assert a["video"].shape == (3, 4, 20, 20) and a["video"].dtype == torch.float32
    assert torch.equal(a["video"], b["video"]) and a["label"] == b["label"] and a["replaced"] == []
    assert a["video_index"] == 3 and a["path"] == train_list.records[3].path
    fresh = make_dataset(train_list.records, train_list.classes, train=True)
    assert torch.equal(fresh[(3, 11)]["video"], a["video"])
    assert not torch.equal(ds[(3, 12)]["video"], a["video"])
    assert torch.equal(ds[3]["video"], ds[(3, None)]["video"])


def test_flip_swaps_left_and_right(train_list):
    ds = make_dataset(train_list.records, train_list.classes, train=True,
                      flip_label_map=flip_label_map(train_list.classes))
    plain = make_dataset(train_list.records, train_list.classes, train=True)
    idx = {c: i for i, c in enumerate(train_list.classes)}
    for video_index, r in enumerate(train_list.records):
        if r.label not in ("moving left", "growing"):
            continue
        seen = set()
        for seed in range(6):
            item = ds[(video_index, seed)]
            # Replay the key's generator: clip start, then scale/crop/flip, as the dataset does.
            rng = np.random.default_rng([seed, video_index])
            frames = decode_frames(r.path, train_clip_indices(8, 4, 2, rng))
            _, flipped = ds.transform(frames, rng)
            if r.label == "moving left":
                assert item["label"] == idx["moving right" if flipped else "moving left"]
            else:
                assert item["label"] == idx["growing"]
            assert plain[(video_index, seed)]["label"] == idx[r.label]  # no map: label kept
            seen.add(flipped)
        assert seen == {True, False}


@pytest.fixture()
def broken_records(train_list, tmp_path):
    missing = str(tmp_path / "gone.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    good = train_list.records[0]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(Path(good.path).read_bytes()[:300])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(1).bytes(2000))
    bad = [VideoRecord(missing, good.label), VideoRecord(str(empty), good.label),
           VideoRecord(str(cut), good.label), VideoRecord(str(junk), good.label)]
    return bad + list(train_list.records[:3])


def test_bad_videos_are_replaced_by_seed(broken_records, train_list):
    ds = make_dataset(broken_records, train_list.classes, train=True)
    reasons = {0: "file not found", 1: "empty file", 2: "moov atom not found", 3: "not a readable video"}
    for bad_index, reason in reasons.items():
        item = ds[(bad_index, 5)]
        assert item["replaced"][0][0] == broken_records[bad_index].path
        assert reason in item["replaced"][0][1]
        assert item["video_index"] >= 4 and item["video"].shape == (3, 4, 20, 20)
        # Same key, same replacement, in this dataset (bad video now known) and in a fresh one.
        again = ds[(bad_index, 5)]
        fresh = make_dataset(broken_records, train_list.classes, train=True)[(bad_index, 5)]
        for other in (again, fresh):
            assert other["video_index"] == item["video_index"] and other["replaced"] == item["replaced"]
            assert torch.equal(other["video"], item["video"])
    assert {p for p, _ in ds.bad_videos} == {r.path for r in broken_records[:4]}
    assert any("moov atom" in reason for _, reason in ds.bad_videos)


def test_replacement_gives_up_after_max_retries(broken_records, train_list):
    ds = make_dataset(broken_records[:4], train_list.classes, train=True, max_retries=3)
    with pytest.raises(DatasetError, match=r"no usable video after 4 tries .*gn-det-check-videos"):
        ds[(0, 1)]


def test_replacements_reach_the_main_process_from_workers(broken_records, train_list):
    ds = make_dataset(broken_records, train_list.classes, train=True)
    loader = DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate_video_samples,
                        sampler=[(0, 7), (5, 7)])
    batch = next(iter(loader))
    assert batch["video"].shape == (2, 3, 4, 20, 20)
    assert [p for p, _ in batch["replaced"]] == [broken_records[0].path]
    assert ds.bad_videos == []  # the worker's copy saw it; the sample carried it here


def test_too_short_clamp_and_skip(train_list, tmp_path):
    short = write_video(tmp_path / "short clip.mp4", np.full((3, 32, 42, 3), 90, np.uint8), fps=10)
    records = [VideoRecord(str(short), train_list.classes[0])] + list(train_list.records[:2])
    clamp = make_dataset(records, train_list.classes, train=True, too_short="clamp")
    item = clamp[(0, 0)]
    assert item["video_index"] == 0 and item["replaced"] == []
    skip = make_dataset(records, train_list.classes, train=True, too_short="skip")
    item = skip[(0, 0)]
    assert item["video_index"] != 0
    assert item["replaced"] == [(str(short), "too short: 3 frames, a clip needs 7")]
    test_skip = make_dataset(records, train_list.classes, train=False, too_short="skip",
                             num_ensemble_views=2, num_spatial_crops=3)
    assert test_skip[0] == SkippedView(str(short), f"videos: video {short}, view 0: too short: 3 frames, a clip "
                                                   f"needs 7", video_index=0, view=0, label=0)
    assert "video" in make_dataset(records, train_list.classes, train=False, num_ensemble_views=2)[0]


def test_test_views(broken_records, train_list):
    records = broken_records[2:3] + broken_records[4:]  # 1 truncated + 3 good videos
    ds = make_dataset(records, train_list.classes, train=False, num_ensemble_views=2, num_spatial_crops=3)
    assert len(ds) == 4 * 2 * 3
    items = [ds[i] for i in range(len(ds))]
    keys = [(s.video_index, s.view) if isinstance(s, SkippedView) else (s["video_index"], s["view"]) for s in items]
    assert keys == [(v, k) for v in range(4) for k in range(6)]
    assert all(isinstance(s, SkippedView) and "moov atom" in s.reason for s in items[:6])
    good = items[6:]
    assert all(s["video"].shape == (3, 4, 24, 24) for s in good)
    assert [s["temporal_index"] for s in good[:6]] == [0, 0, 0, 1, 1, 1]
    assert [s["spatial_index"] for s in good[:6]] == [0, 1, 2, 0, 1, 2]
    assert not torch.equal(good[0]["video"], good[3]["video"])  # another temporal clip
    assert torch.equal(ds[6]["video"], good[0]["video"])  # deterministic (no cache needed)
    batch = collate_video_samples(items[4:8])
    assert batch["video"].shape == (2, 3, 4, 24, 24) and batch["view"].tolist() == [0, 1]
    assert [s["view"] for s in batch["skipped"]] == [4, 5]
    assert collate_video_samples(items[:2])["video"].numel() == 0


def test_unknown_label_is_refused(train_list):
    with pytest.raises(ValueError, match="not among the 6 classes"):
        VideoClipDataset([VideoRecord("a.mp4", "dancing")], train_list.classes)
