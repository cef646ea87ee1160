"""gn-det-prepare-videos: re-encode a folder of videos for fast training reads.

Every video under ``INPUT`` (recursively; extensions ``--ext``) is written to the same relative
path under ``OUTPUT`` (names with spaces kept, extension ``.mp4``) with:

- the short side resized to ``--short-side`` (256 by default, as PySlowFast's recipe expects;
  320 for a [256, 320] jitter at full resolution), the aspect ratio kept, sizes even;
- a constant frame rate ``--fps`` (30 by default, the rate PySlowFast's DATA.TARGET_FPS resamples to at
  decode time; gn_det samples frames as stored, so they are made constant here; 0 keeps the source's average
  rate): output frame ``k`` shows the source frame whose timestamp rounds to slot ``k``, so frames
  are repeated or dropped as the rate change needs, and variable-rate sources become constant;
- a keyframe every ``--gop`` frames (16 by default), so a seek lands close to any frame;
- H.264 (libx264, ``--crf``) when this PyAV build has it, else MPEG-4 part 2. Audio is dropped.

Runs in parallel (``--workers``) with a progress bar and is resumable: each output is written to
a temporary file and renamed into place when complete, so an existing output is finished and is
skipped on the next run. A failing video does not stop the others: failures are listed at the
end and the exit code is 1 (2 for a user error, with one ``error:`` line). Example::

    gn-det-prepare-videos datasets/kinetics400_raw datasets/kinetics400 --short-side 256 --workers 8
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

# PyAV and gn_det.data (torch) are imported where used, so that --help answers at once.
from gn_det.utils.io import atomic_write_file
from gn_det.utils.progress import progress_bar

__all__ = ["main", "build_parser", "find_videos", "output_path", "reencode_video"]

_PROG = "gn-det-prepare-videos"
DEFAULT_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (see the module docstring)."""
    p = argparse.ArgumentParser(prog=_PROG, description="Re-encode videos: short side, constant fps, short GOP.")
    p.add_argument("input", help="folder of videos (searched recursively)")
    p.add_argument("output", help="output folder (the input's sub-folders are mirrored)")
    p.add_argument("--short-side", type=int, default=256, help="short side in pixels (default 256)")
    p.add_argument("--fps", type=float, default=30.0, help="constant output frame rate (default 30; 0 keeps the "
                                                           "source's average rate)")
    p.add_argument("--gop", type=int, default=16, help="keyframe interval in frames (default 16)")
    p.add_argument("--codec", default="auto", help="encoder: auto (libx264, else mpeg4), libx264, mpeg4, ...")
    p.add_argument("--crf", type=int, default=23, help="libx264 quality, lower is better (default 23)")
    p.add_argument("--ext", default=",".join(DEFAULT_EXTENSIONS),
                   help="comma-separated input extensions (default: common video extensions)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="videos encoded at once (default min(8, CPUs)); 0 works in this process")
    p.add_argument("--executor", choices=("process", "thread"), default="process", help="worker kind")
    p.add_argument("--threads", type=int, default=1, help="encoder/decoder threads per video (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def find_videos(root: str | os.PathLike, extensions: Sequence[str] = DEFAULT_EXTENSIONS) -> list[Path]:
    """Video files under ``root``, sorted; hidden files (our temporary files among them) skipped."""
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    return sorted(p for p in Path(root).rglob("*")
                  if p.suffix.lower() in exts and not p.name.startswith(".") and p.is_file())


def output_path(src: Path, input_root: Path, output_root: Path) -> Path:
    """``output_root / (src relative to input_root)`` with the extension ``.mp4``."""
    return output_root / src.relative_to(input_root).with_suffix(".mp4")


def _even_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    def even(v: float) -> int:
        return max(2, 2 * int(round(v / 2)))

    if height <= width:
        return short_side, even(width * short_side / height)
    return even(height * short_side / width), short_side


def reencode_video(src: str | os.PathLike, dst: str | os.PathLike, *, short_side: int = 256, fps: float = 30.0,
                   gop: int = 16, codec: str = "auto", crf: int = 23, threads: int = 1) -> dict[str, Any]:
    """Re-encode ``src`` to ``dst`` (atomically; see the module docstring).

    Returns:
        ``{"frames": frames written, "width", "height", "fps"}``.

    Raises:
        VideoDecodeError: the source cannot be read (nothing is written).
    """
    import av

    from gn_det.data.video.decode import VideoDecodeError, open_video
    from gn_det.data.video.synthetic import pick_encoder

    src, dst = str(src), Path(dst)
    encoder = pick_encoder() if codec == "auto" else codec
    container, stream = open_video(src)
    with container:
        stream.codec_context.thread_count = threads
        height, width = stream.codec_context.height, stream.codec_context.width
        if not height or not width:
            raise VideoDecodeError(src, "the video stream has no frame size")
        out_h, out_w = _even_size(height, width, short_side)
        src_rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(src_rate)
        written = 0

        def write(f) -> None:
            nonlocal written
            out = av.open(f, "w", format="mp4")
            try:
                options = {"preset": "veryfast", "crf": str(crf)} if encoder == "libx264" else {}
                ostream = out.add_stream(encoder, rate=rate, options=options)
                ostream.width, ostream.height, ostream.pix_fmt = out_w, out_h, "yuv420p"
                ostream.codec_context.gop_size = gop
                ostream.codec_context.thread_count = threads
                if encoder != "libx264":
                    ostream.bit_rate = int(0.15 * out_w * out_h * float(rate))

                frame_tb = Fraction(rate.denominator, rate.numerator)  # one tick per output frame

                def emit(frame, until: int) -> None:
                    nonlocal written
                    while written < until:
                        frame.pts, frame.time_base = written, frame_tb
                        out.mux(ostream.encode(frame))
                        written += 1

                start, prev, last_t, n_in = None, None, 0.0, 0
                try:
                    for frame in container.decode(stream):
                        t = frame.time if frame.time is not None else n_in / float(src_rate)
                        n_in += 1
                        start = t if start is None else start
                        if prev is not None:
                            emit(prev, int(round((t - start) * rate)))
                        prev = frame.reformat(width=out_w, height=out_h, format="yuv420p", interpolation="AREA")
                        last_t = t
                except (av.FFmpegError, ValueError) as e:
                    raise VideoDecodeError(src, f"decoding failed after {n_in} frames ({e}); the file is "
                                                f"truncated or corrupt") from None
                if prev is None:
                    raise VideoDecodeError(src, "no frame could be decoded", "too_few_frames", 0)
                end_slot = int(round((last_t - start + 1 / float(src_rate)) * rate))
                emit(prev, max(end_slot, written + 1))
                out.mux(ostream.encode(None))
            finally:
                out.close()

        atomic_write_file(dst, write)
    return {"frames": written, "width": out_w, "height": out_h, "fps": float(rate)}


def _job(args: tuple) -> tuple[str, str, str | None]:
    """(src, "done" | "skipped" | "failed", reason)."""
    from gn_det.data.video.decode import VideoDecodeError

    src, dst, options = args
    if os.path.isfile(dst) and os.path.getsize(dst) > 0:
        return src, "skipped", None
    try:
        reencode_video(src, dst, **options)
        return src, "done", None
    except VideoDecodeError as e:
        return src, "failed", e.reason
    except Exception as e:  # any encoder/disk failure: list it, go on with the others
        return src, "failed", f"{type(e).__name__}: {e}"


def _executor(kind: str, workers: int) -> Executor:
    return ThreadPoolExecutor(workers) if kind == "thread" else ProcessPoolExecutor(workers)


def prepare_videos(args: argparse.Namespace) -> dict[str, list]:
    """Run the job; returns ``{"done": [...], "skipped": [...], "failed": [(src, reason), ...]}``."""
    src_root, dst_root = Path(args.input), Path(args.output)
    if not src_root.is_dir():
        raise ValueError(f"input folder not found: {src_root}")
    if args.short_side < 2 or args.short_side % 2:
        raise ValueError(f"--short-side must be even and >= 2 (yuv420p), got {args.short_side}")
    if args.fps < 0 or args.gop < 1 or args.workers < 0 or args.threads < 0:
        raise ValueError("--fps must be >= 0, --gop >= 1, --workers and --threads >= 0")
    src_abs, dst_abs = src_root.resolve(), dst_root.resolve()
    if dst_abs == src_abs or src_abs in dst_abs.parents:
        raise ValueError(f"the output folder {dst_root} must not be inside the input folder {src_root}")
    import av

    if args.codec != "auto" and args.codec not in av.codecs_available:
        raise ValueError(f"unknown encoder {args.codec!r} in this PyAV build; try auto, libx264 or mpeg4")
    videos = find_videos(src_root, [e.strip() for e in args.ext.split(",") if e.strip()])
    if not videos:
        raise ValueError(f"no video files ({args.ext}) under {src_root}")
    options = {"short_side": args.short_side, "fps": args.fps, "gop": args.gop, "codec": args.codec,
               "crf": args.crf, "threads": args.threads}
    result: dict[str, list] = {"done": [], "skipped": [], "failed": []}
    jobs, seen = [], {}
    for v in videos:
        dst = output_path(v, src_root, dst_root)
        if dst in seen:  # a.mkv and a.mp4 in one folder would both become a.mp4
            result["failed"].append((str(v), f"its output {dst} is also the output of {seen[dst]}"))
            continue
        seen[dst] = v
        jobs.append((str(v), str(dst), options))
    with progress_bar(total=len(jobs), desc="prepare videos", unit="video", disable=args.no_progress) as bar:
        if args.workers == 0:
            outcomes = map(_job, jobs)
            for src, status, reason in outcomes:
                result[status].append((src, reason) if status == "failed" else src)
                bar.update()
        else:
            with _executor(args.executor, args.workers) as pool:
                for src, status, reason in pool.map(_job, jobs):
                    result[status].append((src, reason) if status == "failed" else src)
                    bar.update()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gn-det-prepare-videos`` / ``tools/prepare_videos.py``; returns the exit code."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        result = prepare_videos(args)
    except (ValueError, OSError) as e:  # user errors: one line, no traceback
        print(f"{_PROG}: error: {e}", file=sys.stderr)
        return 2
    print(f"{len(result['done'])} encoded, {len(result['skipped'])} already done (skipped), "
          f"{len(result['failed'])} failed in {time.perf_counter() - start:.1f} s -> {args.output}")
    if result["failed"]:
        print("failed:")
        for src, reason in result["failed"]:
            print(f"  {src}: {reason}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
