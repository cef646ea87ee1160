#!/usr/bin/env python
"""Video data loading speed: decoded clips per second per worker, before and after prepare-videos.

A DataLoader worker runs one :class:`~gn_det.data.video.VideoClipDataset` item at a time, so the
clips one process delivers per second, with one torch thread, is what one worker adds; a GPU step
of ``s`` seconds on ``B`` clips needs about ``B / (s * clips_per_s_per_worker)`` workers.

Videos: ``--num-videos`` Kinetics-like files, ``--seconds`` s at 30 fps, ``--height`` x 4/3 wide,
keyframe every 250 frames (libx264's default, as most downloads have), moving shapes on a textured
background with noise. ``gn-det-prepare-videos`` (short side 256, 30 fps, keyframe every 16
frames) makes the prepared copy. Pipelines (I3D's Kinetics settings by default):

- ``train``: a random clip of ``--num-frames`` frames every ``--sampling-rate``, short side
  jittered in [256, 320], random 224 crop, flip, normalize (the training dataset's ``__getitem__``).
- ``test``: one view of ``--views`` temporal clips x 3 spatial 256 crops; the 3 crops of a clip
  share one decode, as the test loader visits them in order.
- ``decode``: the train clip's frames only (uint8), PyAV through gn_det's decoder; with
  ``--torchcodec`` the same frames through torchcodec's ``VideoDecoder`` beside it.

torchcodec needs FFmpeg shared libraries (4-9) on the library path; this machine has none, but
PyAV's wheel bundles FFmpeg 8, which serves if exposed under the plain names::

    pip install torchcodec --target /tmp/tcsite
    L=$(python -c "import av, os; print(os.path.join(os.path.dirname(av.__file__) + '.libs'))")
    mkdir -p /tmp/ffmpeg8 && for f in $L/libav*.so.* $L/libsw*.so.*; do
      ln -sf "$f" /tmp/ffmpeg8/$(basename $f | sed -E 's/-[0-9a-f]{8}\\.so\\.([0-9]+).*/.so.\\1/'); done
    PYTHONPATH=/tmp/tcsite LD_LIBRARY_PATH=/tmp/ffmpeg8:$L python benchmarks/bench_video_loading.py --torchcodec

Prints a markdown table and writes JSON::

    OMP_NUM_THREADS=1 python benchmarks/bench_video_loading.py --output bench_out/video_loading.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gn_det.cli.prepare_videos import main as prepare_videos_main
from gn_det.data.video import VideoClipDataset
from gn_det.data.video.annotations import VideoRecord
from gn_det.data.video.decode import decode_clip
from gn_det.data.video.sampling import train_clip_indices
from gn_det.data.video.synthetic import MOTION_CLASSES, render_clip, write_video
from gn_det.utils.io import atomic_write_text
from gn_det.utils.table import format_table


def make_raw_videos(folder: Path, num_videos: int, seconds: float, height: int, seed: int) -> list[VideoRecord]:
    """Kinetics-like source files: 30 fps, keyframe every 250 frames, class sub-folders with spaces."""
    width = 2 * round(height * 2 / 3)
    records = []
    for k in range(num_videos):
        label = MOTION_CLASSES[k % 6]
        rng = np.random.default_rng([seed, k])
        frames = render_clip(label, rng, int(round(seconds * 30)), height, width)
        frames = np.clip(frames.astype(np.int16) + rng.integers(-6, 7, size=frames.shape), 0, 255).astype(np.uint8)
        path = folder / label / f"video{k:03d}_000000_000010.mp4"
        write_video(path, frames, 30, gop=250, crf=23)
        records.append(VideoRecord(str(path), label))
    return records


def time_cells(cells: dict[str, tuple[Callable[[int], object], int]], min_seconds: float,
               burst_seconds: float = 1.0) -> dict[str, dict]:
    """Time each cell's ``get(i)`` (i = 0, 1, ... wrapping at its n) for ``min_seconds`` in total.

    The cells take turns in bursts of about ``burst_seconds``, so a change in machine load during
    the run touches them all alike and their ratios stay fair.
    """
    state = {name: {"items": 0, "seconds": 0.0} for name in cells}
    for get, _ in cells.values():
        get(0)  # warm-up: imports, first open
    while min(s["seconds"] for s in state.values()) < min_seconds:
        for name, (get, n) in cells.items():
            s, start = state[name], time.perf_counter()
            while time.perf_counter() - start < burst_seconds:
                get(s["items"] % n)
                s["items"] += 1
            s["seconds"] += time.perf_counter() - start
    return {name: {**s, "per_s": s["items"] / s["seconds"], "ms_per_item": 1000 * s["seconds"] / s["items"]}
            for name, s in state.items()}


def torchcodec_decoder() -> Callable | None:
    """A ``decode(path, indices)`` through torchcodec, or None with the reason printed."""
    try:
        import torchcodec
        from torchcodec.decoders import VideoDecoder
    except (ImportError, RuntimeError) as e:
        print(f"torchcodec: not usable ({str(e).splitlines()[0]}); install it as --help shows, or drop --torchcodec")
        return None
    print(f"torchcodec {torchcodec.__version__}")

    def decode(path: str, choose) -> torch.Tensor:
        d = VideoDecoder(path, num_ffmpeg_threads=1, seek_mode="exact")
        indices = [int(i) for i in choose(d.metadata.num_frames)]
        return d.get_frames_at(indices).data  # (T, C, H, W) uint8

    return decode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--num-videos", type=int, default=6)
    p.add_argument("--seconds", type=float, default=10.0, help="video length (Kinetics: 10 s)")
    p.add_argument("--height", type=int, default=360, help="source height (Kinetics downloads: 240-720)")
    p.add_argument("--num-frames", type=int, default=32)
    p.add_argument("--sampling-rate", type=int, default=2)
    p.add_argument("--views", type=int, default=10, help="test temporal clips per video")
    p.add_argument("--min-seconds", type=float, default=8.0, help="time each cell at least this long")
    p.add_argument("--torchcodec", action="store_true", help="also decode with torchcodec (see --help)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: one DataLoader worker)")
    p.add_argument("--workdir", default=None, help="keep the videos here (default: a temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="bench_out/video_loading.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tc_decode = torchcodec_decoder() if args.torchcodec else None

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gn_det_video_bench."))
    raw_dir, prepared_dir = work / "raw", work / "prepared"
    try:
        t0 = time.perf_counter()
        if not raw_dir.exists():
            make_raw_videos(raw_dir, args.num_videos, args.seconds, args.height, args.seed)
        print(f"{args.num_videos} source videos in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        reused = prepared_dir.exists()
        if prepare_videos_main([str(raw_dir), str(prepared_dir), "--workers", "0", "--no-progress"]) != 0:
            raise SystemExit("gn-det-prepare-videos failed")
        prepare_s = None if reused else time.perf_counter() - t0  # a resumed run re-encodes nothing
        print("prepared copies reused" if reused else f"prepared in {prepare_s:.1f} s (one process)")

        rows, results = [], []
        for data, folder in (("raw", raw_dir), ("prepared", prepared_dir)):
            records = [VideoRecord(str(f), f.parent.name) for f in sorted(folder.rglob("*.mp4"))]
            classes = sorted({r.label for r in records})
            common = dict(num_frames=args.num_frames, sampling_rate=args.sampling_rate, jitter_scales=(256, 320),
                          crop_size=224, test_crop_size=256, num_ensemble_views=args.views, num_spatial_crops=3)
            train = VideoClipDataset(records, classes, train=True, name=data, **common)
            test = VideoClipDataset(records, classes, train=False, name=data, **common)
            n = len(records)
            choose_rng = np.random.default_rng(args.seed)

            def choose(num):
                return train_clip_indices(num, args.num_frames, args.sampling_rate, choose_rng, "clamp")

            cells = {
                "train": (lambda i: train[(i, args.seed)], n),
                "test": (lambda i: test[i], len(test)),
                "decode (PyAV)": (lambda i: decode_clip(records[i].path, choose)[0], n),
            }
            if tc_decode is not None:
                cells["decode (torchcodec)"] = (lambda i: tc_decode(records[i].path, choose), n)
            cells = time_cells(cells, args.min_seconds)
            for pipeline, r in cells.items():
                unit = "views" if pipeline == "test" else "clips"
                rows.append([pipeline, data, f"{r['per_s']:.2f} {unit}/s", f"{r['ms_per_item']:.0f}", r["items"]])
                results.append({"pipeline": pipeline, "data": data, **r})
        table = format_table(rows, ["pipeline", "videos", "per worker", "ms each", "items timed"])
        print(table)
        out = {"argv": argv if argv is not None else sys.argv[1:], "settings": vars(args), "results": results,
               "prepare_seconds": prepare_s, "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                                         "torch_threads": torch.get_num_threads(),
                                                         "torch": torch.__version__}}
        atomic_write_text(json.dumps(out, indent=1) + "\n", args.output)
        print(f"wrote {args.output}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
