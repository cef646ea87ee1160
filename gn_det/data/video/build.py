"""Video datasets by name and the video task's loaders (``TASK video``).

Dataset names (DATASETS.TRAIN / DATASETS.TEST):

- ``kinetics{400,600,700}_{train,val,test}``: the official CSVs under
  ``$GN_DET_DATASETS/kinetics{N}/`` (layout in :mod:`gn_det.data.video.annotations`).
- ``slowfast_{train,val,test}``: PySlowFast's lists ``DATA.PATH_TO_DATA_DIR/{train,val,test}.csv``
  (``path<DATA.PATH_LABEL_SEPARATOR>label`` lines), relative paths under ``DATA.PATH_PREFIX``.
- ``DATASETS.REGISTER``: ``[[name, list_file], ...]`` or ``[[name, list_file, video_root], ...]``: a
  Kinetics CSV, a PySlowFast list or a ``path,label`` CSV (DATA.LIST_FORMAT, "auto" by default).
- ``DATASETS.SYNTHETIC``: ``[[prefix, num_classes, train_per_class, val_per_class, num_frames, size,
  seed], ...]`` registers ``{prefix}_train`` and ``{prefix}_val``: the synthetic motion set
  (:func:`gn_det.data.video.ensure_synthetic_kinetics`), made by seed on first use.

Classes: those of the first training set; a test set is scored in the training set's class
indices when its list can be read, else in its own (with a warning). A flip in training
changes a direction-dependent label through a flip map: the synthetic sets provide theirs, and
DATA.FLIP_LABEL_PAIRS adds ``[[a, b], ...]`` for any set.

Bad videos: a training video that cannot be read (missing, empty, truncated, undecodable, or too
short with DATA.TOO_SHORT "skip") is replaced by another one drawn from the sample's own seed;
:class:`ReplacedVideoLog` counts the replacements, logs each bad file by name once and keeps the
list in ``OUTPUT_DIR/bad_videos.json`` (``bad_videos.rank{r}.json`` on other ranks). A bad test view
is a :class:`~gn_det.data.video.dataset.SkippedView`, which the shared loader plumbing drops, counts
and logs, and which the evaluator reports as a missing view.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from gn_det.config import ConfigError
from gn_det.data.common import ConcatDatasets, SkipBadSamples, build_test_loader, build_train_loader
from gn_det.data.video.annotations import (VideoList, VideoRecord, find_kinetics_root, kinetics_split_files,
                                           load_video_list)
from gn_det.data.video.dataset import VideoClipDataset
from gn_det.data.video.synthetic import ensure_synthetic_kinetics, flip_label_map
from gn_det.utils import comm
from gn_det.utils.io import atomic_write_text

__all__ = ["KINETICS_DATASETS", "SLOWFAST_DATASETS", "BAD_VIDEOS_FILE", "VideoSetInfo", "video_list",
           "video_set_info", "build_video_dataset", "video_clip_dataset", "ReplacedVideoLog",
           "build_video_train_loader", "build_video_test_loader"]

logger = logging.getLogger(__name__)

KINETICS_DATASETS = {f"kinetics{n}_{split}": (f"kinetics{n}", split) for n in (400, 600, 700)
                     for split in ("train", "val", "test")}
SLOWFAST_DATASETS = {f"slowfast_{split}": split for split in ("train", "val", "test")}
BAD_VIDEOS_FILE = "bad_videos.json"
_SYNTHETIC_SPLITS = ("train", "val")


# ------------------------------------------------------------------------------------ names
def _registered(cfg) -> dict[str, tuple[str, str | None]]:
    out = {}
    for entry in cfg.DATASETS.REGISTER:
        if not (isinstance(entry, (list, tuple)) and len(entry) in (2, 3) and all(isinstance(v, str) for v in entry)):
            raise ConfigError(f"DATASETS.REGISTER entry {entry!r} must be [name, list_file] or [name, list_file, "
                             f"video_root] (strings): a Kinetics CSV, a PySlowFast list or a path,label CSV")
        out[entry[0]] = (entry[1], entry[2] if len(entry) == 3 and entry[2] else None)
    return out


def _synthetic(cfg) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{prefix}_{split}`` -> (split, (num_classes, train_per_class, val_per_class, num_frames, size, seed))."""
    out = {}
    for entry in cfg.DATASETS.SYNTHETIC:
        ok = isinstance(entry, (list, tuple)) and len(entry) == 7 and isinstance(entry[0], str)
        if ok:
            try:
                numbers = tuple(int(v) for v in entry[1:])
            except (TypeError, ValueError):
                ok = False
        if not ok:
            raise ConfigError(f"DATASETS.SYNTHETIC entry {entry!r} must be [prefix, num_classes, train_per_class, "
                             f"val_per_class, num_frames, size, seed]; it registers <prefix>_train and <prefix>_val")
        for split in _SYNTHETIC_SPLITS:
            out[f"{entry[0]}_{split}"] = (split, numbers)
    return out


def _known(cfg) -> list[str]:
    names = set(KINETICS_DATASETS) | set(_registered(cfg)) | set(_synthetic(cfg))
    if cfg.DATA.PATH_TO_DATA_DIR:
        names |= set(SLOWFAST_DATASETS)
    return sorted(names)


@lru_cache(maxsize=16)
def _read_list(path: str, mtime: float, fmt: str, sep: str, root: str | None) -> VideoList:
    # Cached by file and modification time: the eval during training does not read the lists again.
    return load_video_list(path, format=fmt, video_root=root, sep=sep)


def _read(path: str | os.PathLike, fmt: str, sep: str, root: str | None = None) -> VideoList:
    path = os.path.abspath(path)
    mtime = os.path.getmtime(path) if os.path.isfile(path) else -1.0
    return _read_list(path, mtime, fmt, sep, root)


def video_list(cfg, name: str) -> VideoList:
    """The list of videos of dataset ``name`` (a synthetic set is generated on first use).

    Raises:
        gn_det.config.ConfigError: an unknown name (the message lists the known ones and how to add one).
        FileNotFoundError, gn_det.data.video.AnnotationError: the list is missing or unreadable.
    """
    fmt, sep = cfg.DATA.LIST_FORMAT, cfg.DATA.PATH_LABEL_SEPARATOR
    synthetic = _synthetic(cfg)
    if name in synthetic:
        split, (classes, train_n, val_n, frames, size, seed) = synthetic[name]
        root = ensure_synthetic_kinetics(num_classes=classes, train_per_class=train_n, val_per_class=val_n,
                                         num_frames=frames, size=size, seed=seed, show_progress=comm.is_main_process())
        return _read(Path(root) / "annotations" / f"{split}.csv", "kinetics", sep)
    registered = _registered(cfg)
    if name in registered:
        path, root = registered[name]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"dataset {name!r}: list {os.path.abspath(path)} not found (registered through "
                                    f"DATASETS.REGISTER as [{name!r}, {path!r}, ...])")
        return _read(path, fmt, sep, root)
    if name in SLOWFAST_DATASETS and cfg.DATA.PATH_TO_DATA_DIR:
        path = os.path.join(cfg.DATA.PATH_TO_DATA_DIR, f"{SLOWFAST_DATASETS[name]}.csv")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"dataset {name!r}: {os.path.abspath(path)} not found; DATA.PATH_TO_DATA_DIR must "
                                    f"hold PySlowFast's train.csv / val.csv / test.csv")
        return _read(path, fmt, sep, cfg.DATA.PATH_PREFIX or None)
    if name in KINETICS_DATASETS:
        folder, split = KINETICS_DATASETS[name]
        csv_path, root = kinetics_split_files(find_kinetics_root(folder), split)
        return _read(csv_path, "kinetics", sep, str(root))
    raise ConfigError(f"unknown video dataset {name!r}; known: {_known(cfg)}. Add a list with DATASETS.REGISTER "
                   f"[[name, list_file, video_root]], PySlowFast's lists with DATA.PATH_TO_DATA_DIR (names "
                   f"slowfast_train/val/test), or a synthetic set with DATASETS.SYNTHETIC")


def _flip_map(cfg, name: str, classes: Sequence[str]) -> dict[str, str]:
    pairs = {}
    if name in _synthetic(cfg):
        pairs.update(flip_label_map(classes))
    for entry in cfg.DATA.FLIP_LABEL_PAIRS:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2):
            raise ConfigError(f"DATA.FLIP_LABEL_PAIRS entry {entry!r} must be [class_a, class_b]")
        pairs[str(entry[0])] = str(entry[1])
    return pairs


class VideoSetInfo:
    """What a test set's evaluator needs: class names, and each video's path and label.

    Attributes:
        name: the dataset name.
        classes: class names (index = label).
        paths, labels: one entry per video, in dataset order.
        views_per_video: TEST.NUM_ENSEMBLE_VIEWS x TEST.NUM_SPATIAL_CROPS.
    """

    def __init__(self, name: str, classes: Sequence[str], paths: Sequence[str], labels: Sequence[int],
                 views_per_video: int):
        self.name, self.classes = name, list(classes)
        self.paths, self.labels, self.views_per_video = list(paths), [int(v) for v in labels], int(views_per_video)


def _classes_for(cfg, name: str, own: VideoList, train: bool) -> list[str]:
    """The class list ``name`` is indexed in: the first training set's (see the module docstring)."""
    first = list(cfg.DATASETS.TRAIN)[:1]
    if train or not first or first[0] == name:
        return list(own.classes)
    try:
        return list(video_list(cfg, first[0]).classes)
    except (KeyError, OSError, ValueError) as e:
        logger.warning("test set %r is scored in its own %d classes: the training set %r cannot be read (%s)",
                       name, len(own.classes), first[0], e)
        return list(own.classes)


def _check_num_classes(cfg, name: str, classes: Sequence[str]) -> None:
    if int(cfg.MODEL.NUM_CLASSES) < len(classes):
        raise ConfigError(f"dataset {name!r} has {len(classes)} classes but MODEL.NUM_CLASSES is "
                         f"{cfg.MODEL.NUM_CLASSES}; set MODEL.NUM_CLASSES {len(classes)}")


def video_set_info(cfg, name: str) -> VideoSetInfo:
    """Classes, paths and labels of test set ``name`` (no video is opened)."""
    own = video_list(cfg, name)
    classes = _classes_for(cfg, name, own, train=False)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({r.label for r in own.records if r.label not in index})
    if unknown:
        raise ConfigError(f"test set {name!r}: label(s) {unknown[:5]} are not among the {len(classes)} classes of the "
                         f"training set {cfg.DATASETS.TRAIN[0]!r}")
    views = int(cfg.TEST.NUM_ENSEMBLE_VIEWS) * int(cfg.TEST.NUM_SPATIAL_CROPS)
    return VideoSetInfo(name, classes, [r.path for r in own.records], [index[r.label] for r in own.records], views)


def build_video_dataset(cfg, name: str, train: bool) -> VideoClipDataset:
    """:class:`~gn_det.data.video.VideoClipDataset` of ``name`` with the DATA.* and TEST.* settings."""
    own = video_list(cfg, name)
    classes = _classes_for(cfg, name, own, train)
    _check_num_classes(cfg, name, classes)
    return video_clip_dataset(cfg, own.records, classes, train=train, name=name,
                              flip_label_map=_flip_map(cfg, name, classes))


def video_clip_dataset(cfg, records: Sequence[VideoRecord], classes: Sequence[str], *, train: bool, name: str,
                       flip_label_map: dict[str, str] | None = None) -> VideoClipDataset:
    """:class:`~gn_det.data.video.VideoClipDataset` of ``records`` with the DATA.* and TEST.* settings
    (test mode: TEST.NUM_ENSEMBLE_VIEWS temporal clips x TEST.NUM_SPATIAL_CROPS crops per video), for
    a named set or for any videos (``gn-det-demo``)."""
    d = cfg.DATA
    return VideoClipDataset(
        records, classes, num_frames=d.NUM_FRAMES, sampling_rate=d.SAMPLING_RATE, train=train,
        jitter_scales=tuple(d.TRAIN_JITTER_SCALES), crop_size=d.TRAIN_CROP_SIZE, test_crop_size=d.TEST_CROP_SIZE,
        num_ensemble_views=cfg.TEST.NUM_ENSEMBLE_VIEWS, num_spatial_crops=cfg.TEST.NUM_SPATIAL_CROPS,
        mean=tuple(d.MEAN), std=tuple(d.STD), too_short=d.TOO_SHORT, flip_label_map=flip_label_map,
        random_flip=bool(d.RANDOM_FLIP), max_retries=d.MAX_RETRIES, name=name)


# ------------------------------------------------------------------------------- bad videos
class ReplacedVideoLog:
    """Wraps the training loader: counts the replaced (bad) videos the samples report, logs each
    file once by name, and keeps the list in ``output_dir`` (atomic writes).

    The file is ``{"num_replacements": n, "videos": [{"path", "reason", "times_replaced"}, ...]}``;
    an existing file (a resumed run's) is read first and continued.

    Attributes:
        num_replacements: samples that were replaced so far (this run and the file's).
        videos: path -> {"reason", "times_replaced"}.
    """

    def __init__(self, loader: Iterable[list], output_dir: str | None):
        self.loader = loader
        rank = comm.get_rank()
        name = BAD_VIDEOS_FILE if rank == 0 else BAD_VIDEOS_FILE.replace(".json", f".rank{rank}.json")
        self.path = os.path.join(output_dir, name) if output_dir else None
        self.num_replacements = 0
        self.videos: dict[str, dict] = {}
        if self.path and os.path.isfile(self.path):
            try:
                with open(self.path, encoding="utf-8") as f:
                    saved = json.load(f)
                self.num_replacements = int(saved["num_replacements"])
                self.videos = {v["path"]: {"reason": v["reason"], "times_replaced": int(v["times_replaced"])}
                               for v in saved["videos"]}
            except (OSError, ValueError, KeyError, TypeError) as e:
                logger.warning("%s is unreadable (%s); starting a new list", self.path, e)

    def __iter__(self) -> Iterator[list]:
        for batch in self.loader:
            replaced = [r for s in batch for r in s.get("replaced", ())]
            if replaced:
                self._record(replaced)
            yield batch

    def _record(self, replaced: list[tuple[str, str]]) -> None:
        counts = Counter(path for path, _ in replaced)
        for path, reason in replaced:
            if path not in self.videos:
                self.videos[path] = {"reason": reason, "times_replaced": 0}
                logger.warning("bad training video (replaced by another; %d bad so far): %s: %s",
                               len(self.videos), path, reason)
        for path, n in counts.items():
            self.videos[path]["times_replaced"] += n
        self.num_replacements += len(replaced)
        if self.path:
            record = {"num_replacements": self.num_replacements,
                      "videos": [{"path": p, **v} for p, v in sorted(self.videos.items())]}
            atomic_write_text(json.dumps(record, indent=1) + "\n", self.path)


# ---------------------------------------------------------------------------------- loaders
def build_video_train_loader(cfg, micro_batch_size: int, *, skip_batches: int = 0) -> ReplacedVideoLog:
    """Endless loader of this rank's training micro-batches (lists of ``micro_batch_size`` clips).

    DATASETS.TRAIN (concatenated, one class list), shuffled with SEED, sharded over ranks,
    ``skip_batches`` micro-batches skipped first (exact resume), DATALOADER.NUM_WORKERS workers;
    replaced videos are counted and listed (:class:`ReplacedVideoLog`).
    """
    names = list(cfg.DATASETS.TRAIN)
    if not names:
        raise ConfigError("DATASETS.TRAIN is empty: name at least one video dataset to train on")
    datasets = [build_video_dataset(cfg, n, train=True) for n in names]
    for other, ds in zip(names[1:], datasets[1:]):
        if ds.classes != datasets[0].classes:
            raise ConfigError(f"training sets {names[0]!r} and {other!r} have different classes; label i must mean "
                             f"the same class in every training set")
    dataset = datasets[0] if len(datasets) == 1 else ConcatDatasets(datasets)
    logger.info("training on %s: %d videos, %d classes, clips of %d frames every %d", " + ".join(names),
                len(dataset), len(datasets[0].classes), cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE)
    loader = build_train_loader(dataset, micro_batch_size, seed=cfg.SEED, num_workers=cfg.DATALOADER.NUM_WORKERS,
                                skip_batches=skip_batches)
    return ReplacedVideoLog(loader, cfg.OUTPUT_DIR)


def build_video_test_loader(cfg, name: str) -> SkipBadSamples:
    """This rank's shard of the views of ``name`` (TEST.NUM_ENSEMBLE_VIEWS clips x TEST.NUM_SPATIAL_CROPS
    crops per video), in order; TEST.BATCH_SIZE views per batch over all ranks, as PySlowFast counts."""
    dataset = build_video_dataset(cfg, name, train=False)
    per_rank = max(1, int(cfg.TEST.BATCH_SIZE) // comm.get_world_size())
    return build_test_loader(dataset, seed=cfg.SEED, num_workers=cfg.DATALOADER.NUM_WORKERS, batch_size=per_rank)
