"""A synthetic Kinetics-format video set whose classes are motions: no single frame tells them apart.

Classes (the first ``num_classes`` of :data:`MOTION_CLASSES`, 6 by default): ``moving right``,
``moving left``, ``moving up``, ``moving down``, ``growing``, ``shrinking``, ``rotating
clockwise``, ``rotating counter-clockwise``. Each clip shows one shape (circle, square, triangle
or an arrow-like kite for the rotations) of a random colour, size and position on a random
textured background (smooth colour blobs plus fine noise), and the shape's motion is the class:
any frame of "moving left" could be a frame of "moving right", the direction is only in time.

A horizontal flip swaps left and right and clockwise and counter-clockwise:
:data:`FLIP_LABEL_MAP` / :func:`flip_label_map` is the map to give
:class:`~gn_det.data.video.dataset.VideoClipDataset` so flipped clips keep a true label.

Layout written (the official Kinetics layout, class sub-folders with spaces)::

    root/annotations/train.csv     label,youtube_id,time_start,time_end,split
    root/annotations/val.csv
    root/train/moving left/<youtube_id>_<start:06d>_<end:06d>.mp4
    root/val/...
    root/.complete.json            the generator version and settings: written last

The set is a pure function of its settings and seed (each clip has its own generator,
``default_rng([seed, split, class, k])``). It is written into a temporary folder next to ``root``
and renamed into place, each file atomically, and reused when ``.complete.json`` matches.
Encoder: ``libx264`` if this PyAV build has it, else ``mpeg4``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Mapping, Sequence

import av
import numpy as np
from PIL import Image, ImageDraw

from gn_det.utils.io import atomic_write_file, atomic_write_text
from gn_det.utils.cache import cache_root
from gn_det.utils.progress import LoggedProgress, progress_bar

__all__ = [
    "MOTION_CLASSES",
    "FLIP_LABEL_MAP",
    "GENERATOR_VERSION",
    "MARKER",
    "flip_label_map",
    "pick_encoder",
    "write_video",
    "render_clip",
    "generate_synthetic_kinetics",
    "ensure_synthetic_kinetics",
]

logger = logging.getLogger(__name__)

MOTION_CLASSES: tuple[str, ...] = ("moving right", "moving left", "moving up", "moving down", "growing",
                                   "shrinking", "rotating clockwise", "rotating counter-clockwise")
FLIP_LABEL_MAP: dict[str, str] = {
    "moving left": "moving right", "moving right": "moving left",
    "rotating clockwise": "rotating counter-clockwise", "rotating counter-clockwise": "rotating clockwise",
}
# Bump when the output for given settings changes, so completed sets are not reused.
GENERATOR_VERSION = 1
MARKER = ".complete.json"
_SPLITS = ("train", "val")
_ENCODERS = ("libx264", "mpeg4")


def flip_label_map(classes: Sequence[str]) -> dict[str, str]:
    """The part of :data:`FLIP_LABEL_MAP` whose classes are all in ``classes``."""
    have = set(classes)
    return {a: b for a, b in FLIP_LABEL_MAP.items() if a in have and b in have}


def pick_encoder(preferred: Sequence[str] = _ENCODERS) -> str:
    """The first of ``preferred`` this PyAV build can encode with.

    Raises:
        RuntimeError: none of them is available.
    """
    for name in preferred:
        if name in av.codecs_available:
            try:
                av.codec.Codec(name, "w")
                return name
            except (av.FFmpegError, ValueError):
                continue
    raise RuntimeError(f"this PyAV build ({av.__version__}) has none of the video encoders {list(preferred)}")


def _encode(f, frames: np.ndarray, fps: Fraction, codec: str, gop: int | None, crf: int | None,
            metadata: Mapping[str, str] | None, metadata_encoding: str, container_format: str) -> None:
    # No "movflags=faststart": it re-reads the output, which the write-only temp file cannot do;
    # the index (moov) goes at the end, as most cameras and downloaders write it.
    container = av.open(f, "w", format=container_format, metadata_encoding=metadata_encoding)
    try:
        for k, v in (metadata or {}).items():
            container.metadata[k] = v
        options = {"preset": "veryfast", "crf": str(18 if crf is None else crf)} if codec == "libx264" else {}
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = int(gop)
        if codec != "libx264":  # mpeg4 & co: quality by bit rate (about 4 bits per pixel)
            stream.bit_rate = int(4 * frames.shape[1] * frames.shape[2] * float(fps))
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(fps.denominator, fps.numerator)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    finally:
        container.close()


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float | Fraction = 25, *,
                codec: str | None = None, gop: int | None = None, crf: int | None = None,
                metadata: Mapping[str, str] | None = None, metadata_encoding: str = "utf-8") -> Path:
    """Encode uint8 RGB ``frames`` (T, H, W, 3), H and W even, to ``path`` atomically.

    Args:
        codec: encoder (default :func:`pick_encoder`).
        gop: keyframe interval (encoder default if None).
        crf: libx264 quality (default 18).
        metadata: container tags; ``metadata_encoding="latin-1"`` writes them in latin-1, as some
            real files have them (tests use it to make a non-UTF-8 tag).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.shape} {frames.dtype}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"frame height and width must be even for yuv420p, got {frames.shape[1:3]}")
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
    fmt = {".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".mov": "mov"}.get(Path(path).suffix.lower(), "mp4")
    return atomic_write_file(path, lambda f: _encode(f, frames, rate, codec or pick_encoder(), gop, crf,
                                                     metadata, metadata_encoding, fmt))


# ----------------------------------------------------------------------------- rendering
def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random colour blobs plus fine noise, float (H, W, 3) in [0, 255]."""
    coarse = rng.uniform(0, 255, size=(rng.integers(3, 6), rng.integers(3, 6), 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.float32)
    return np.clip(0.7 * smooth + 0.3 * rng.uniform(0, 255, size=3) + rng.normal(0, 12, size=(h, w, 3)), 0, 255)


def _shape_points(kind: str, cx: float, cy: float, r: float, theta: float) -> list[tuple[float, float]]:
    if kind == "square":
        angles, radii = np.pi / 4 + np.arange(4) * np.pi / 2, np.full(4, r)
    elif kind == "triangle":
        angles, radii = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3, np.full(3, r)
    else:  # "kite": an arrow-like shape with no rotational symmetry, so rotation shows
        angles, radii = np.array([0.0, 2.4, np.pi, -2.4]), np.array([r, 0.75 * r, 0.35 * r, 0.75 * r])
    angles = angles + theta
    return [(float(cx + q * np.cos(a)), float(cy + q * np.sin(a))) for a, q in zip(angles, radii)]


def render_clip(class_name: str, rng: np.random.Generator, num_frames: int, height: int, width: int) -> np.ndarray:
    """uint8 (T, H, W, 3) frames of one clip of ``class_name`` (see the module docstring)."""
    if class_name not in MOTION_CLASSES:
        raise ValueError(f"unknown class {class_name!r}; known: {MOTION_CLASSES}")
    bg = _background(rng, height, width)
    colour = tuple(int(c) for c in rng.uniform(0, 255, size=3))
    while np.abs(np.asarray(colour) - bg.mean(axis=(0, 1))).sum() < 150:  # keep the shape visible
        colour = tuple(int(c) for c in rng.uniform(0, 255, size=3))
    size = min(height, width)
    rotating = class_name.startswith("rotating")
    kind = "kite" if rotating else str(rng.choice(["circle", "square", "triangle"]))
    theta0 = float(rng.uniform(0, 2 * np.pi))
    t = np.linspace(0.0, 1.0, num_frames)
    if class_name.startswith("moving"):
        r = np.full(num_frames, rng.uniform(0.1, 0.16) * size)
        axis_len = width if class_name in ("moving right", "moving left") else height
        travel = rng.uniform(0.35, 0.55) * axis_len
        a0 = rng.uniform(r[0], axis_len - r[0] - travel)
        along = a0 + travel * t if class_name in ("moving right", "moving down") else a0 + travel * (1 - t)
        other_len = height if axis_len == width else width
        across = np.full(num_frames, rng.uniform(r[0], other_len - r[0]))
        cx, cy = (along, across) if axis_len == width else (across, along)
        theta = np.full(num_frames, theta0)
    else:
        r_small, r_big = rng.uniform(0.07, 0.13) * size, rng.uniform(0.26, 0.34) * size
        if class_name == "growing":
            r = r_small + (r_big - r_small) * t
        elif class_name == "shrinking":
            r = r_big + (r_small - r_big) * t
        else:
            r = np.full(num_frames, rng.uniform(0.22, 0.3) * size)
        cx = np.full(num_frames, rng.uniform(r.max(), width - r.max()))
        cy = np.full(num_frames, rng.uniform(r.max(), height - r.max()))
        # Image y points down, so an increasing angle turns clockwise on screen.
        step = rng.uniform(0.15, 0.3) if rotating else 0.0
        theta = theta0 + (step if class_name == "rotating clockwise" else -step) * np.arange(num_frames)
    out = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    base = Image.fromarray(bg.astype(np.uint8))
    for i in range(num_frames):
        im = base.copy()
        draw = ImageDraw.Draw(im)
        if kind == "circle":
            draw.ellipse([cx[i] - r[i], cy[i] - r[i], cx[i] + r[i], cy[i] + r[i]], fill=colour)
        else:
            draw.polygon(_shape_points(kind, cx[i], cy[i], r[i], theta[i]), fill=colour)
        out[i] = np.asarray(im)
    return out


# ----------------------------------------------------------------------------- the set
def _youtube_id(rng: np.random.Generator) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=11))


def _settings(num_classes: int, train_per_class: int, val_per_class: int, num_frames: int, size: int,
              fps: int, seed: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "num_classes": num_classes, "train_per_class": train_per_class,
            "val_per_class": val_per_class, "num_frames": num_frames, "size": size, "fps": fps, "seed": seed}


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def generate_synthetic_kinetics(root: str | os.PathLike, *, num_classes: int = 6, train_per_class: int = 100,
                                val_per_class: int = 20, num_frames: int = 16, size: int = 64, fps: int = 25,
                                seed: int = 0, show_progress: bool = True) -> Path:
    """Write (or reuse) the set under ``root``; frames are ``size`` high and ``~4/3 size`` wide.

    Returns:
        ``root``.

    Raises:
        FileExistsError: ``root`` exists but is not a complete set with these settings.
        ValueError: bad settings.
    """
    root = Path(root)
    if not 1 <= num_classes <= len(MOTION_CLASSES):
        raise ValueError(f"num_classes must be in [1, {len(MOTION_CLASSES)}], got {num_classes}")
    if size < 16 or size % 2 or num_frames < 2 or train_per_class < 0 or val_per_class < 0:
        raise ValueError(f"need an even size >= 16, num_frames >= 2 and clip counts >= 0; got size={size}, "
                         f"num_frames={num_frames}, train/val per class={train_per_class}/{val_per_class}")
    settings = _settings(num_classes, train_per_class, val_per_class, num_frames, size, fps, seed)
    if root.exists():
        if _read_marker(root) == settings:
            return root
        raise FileExistsError(f"{root} exists but is not a complete synthetic Kinetics set with settings "
                              f"{settings}; delete it or choose another folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    height, width = size, 2 * round(size * 2 / 3)  # 4:3 landscape, even
    classes = MOTION_CLASSES[:num_classes]
    encoder = pick_encoder()
    jobs = [(split, c, k) for split, per in zip(_SPLITS, (train_per_class, val_per_class))
            for c in range(num_classes) for k in range(per)]
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    start = time.perf_counter()
    try:
        rows: dict[str, list[list]] = {s: [] for s in _SPLITS}
        used: set[str] = set()
        bar = progress_bar(jobs, desc=f"synthetic kinetics {root.name}", unit="clip", disable=not show_progress)
        for split, c, k in LoggedProgress(logger, f"synthetic Kinetics {root.name}", len(jobs), "clips").track(bar):
            rng = np.random.default_rng([seed, _SPLITS.index(split), c, k])
            ytid = _youtube_id(rng)
            while ytid in used:
                ytid = _youtube_id(rng)
            used.add(ytid)
            t0 = int(rng.integers(0, 290))
            frames = render_clip(classes[c], rng, num_frames, height, width)
            write_video(tmp / split / classes[c] / f"{ytid}_{t0:06d}_{t0 + 10:06d}.mp4", frames, fps,
                        codec=encoder, gop=max(num_frames // 2, 1))
            rows[split].append([classes[c], ytid, t0, t0 + 10, split])
        for split in _SPLITS:
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            writer.writerows(rows[split])
            atomic_write_text(buf.getvalue(), tmp / "annotations" / f"{split}.csv")
        atomic_write_text(json.dumps(settings, indent=1) + "\n", tmp / MARKER)
        try:
            os.rename(tmp, root)
        except OSError:
            if _read_marker(root) != settings:  # another process finished first: same content
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("synthetic Kinetics set %s: %d clips in %.1f s (%s)", root, len(jobs),
                time.perf_counter() - start, encoder)
    return root


def ensure_synthetic_kinetics(*, num_classes: int = 6, train_per_class: int = 100, val_per_class: int = 20,
                              num_frames: int = 16, size: int = 64, fps: int = 25, seed: int = 0,
                              show_progress: bool = True) -> Path:
    """The set with these settings under ``$GN_DET_CACHE/synthetic/``, generated on first use."""
    name = (f"kinetics-motion-v{GENERATOR_VERSION}-c{num_classes}-n{train_per_class}-v{val_per_class}"
            f"-f{num_frames}-s{size}-fps{fps}-seed{seed}")
    return generate_synthetic_kinetics(cache_root() / "synthetic" / name, num_classes=num_classes,
                                       train_per_class=train_per_class, val_per_class=val_per_class,
                                       num_frames=num_frames, size=size, fps=fps, seed=seed,
                                       show_progress=show_progress)
