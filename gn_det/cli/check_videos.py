"""gn-det-check-videos: find the bad rows and bad files of a video list before training on it.

Reads the list (Kinetics CSV, PySlowFast ``path label`` list or ``path,label`` CSV; see
:mod:`gn_det.data.video.annotations`), then opens every video in parallel and decodes it fully
(``--quick``: header only) to find:

- ``bad_line``: a row that cannot be parsed (wrong separator, non-integer label, missing field);
- ``duplicate``: a video listed again (the first row is kept);
- ``missing``, ``not_a_file``, ``empty`` (0 bytes), ``truncated`` (mp4 without its ``moov``
  index), ``undecodable``, ``no_video_stream``, ``no_frames``;
- ``too_short``: fewer than ``(num_frames - 1) * sampling_rate + 1`` frames, the span a clip of
  ``--num-frames`` frames at ``--sampling-rate`` needs.

It writes a JSON report (counts, every problem with its line and reason, frame rate / resolution
/ duration statistics of the good videos) and a cleaned list in the input's own format holding
only the good rows, prints a summary table, and exits with 0 when everything is good, 1 when
problems were found, 2 on a user error (one ``error:`` line). Example::

    gn-det-check-videos datasets/kinetics400/annotations/train.csv --num-frames 32 --sampling-rate 2 \\
        --workers 8 --out-dir checks/
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import Counter
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

# the list reader and PyAV (with torch) load after the command line is parsed: --help answers at once
from gn_det.data.video.list_formats import FORMATS
from gn_det.utils.io import atomic_write_text
from gn_det.utils.progress import progress_bar
from gn_det.utils.table import format_table

__all__ = ["main", "build_parser", "check_file", "check_video_list"]

_PROG = "gn-det-check-videos"
PROBLEM_KINDS = ("bad_line", "duplicate", "missing", "not_a_file", "empty", "truncated", "undecodable",
                 "no_video_stream", "no_frames", "too_short")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (see the module docstring)."""
    p = argparse.ArgumentParser(prog=_PROG, description="Pre-flight check of a video list and its files.")
    p.add_argument("list", help="video list: Kinetics CSV, PySlowFast 'path label' list, or path,label CSV")
    p.add_argument("--format", default="auto", choices=("auto",) + FORMATS, help="list format (default auto)")
    p.add_argument("--video-root", metavar="DIR",
                   help="folder relative paths / Kinetics split folders are under (default: the list's "
                        "folder, or the folder above it when the list is in annotations/)")
    p.add_argument("--sep", default=" ", help="separator of the 'path label' list format (default a space)")
    p.add_argument("--split", help="Kinetics CSVs: keep only rows of this split")
    p.add_argument("--num-frames", type=int, default=8, help="frames per clip, T (default 8)")
    p.add_argument("--sampling-rate", type=int, default=8, help="frame stride, s (default 8)")
    p.add_argument("--quick", action="store_true", help="read headers only, do not decode every frame")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="parallel checks (default min(8, CPUs)); 0 checks in this process")
    p.add_argument("--executor", choices=("thread", "process"), default="thread",
                   help="worker kind (default thread: PyAV decodes without holding the GIL)")
    p.add_argument("--out-dir", default=".", metavar="DIR",
                   help="where <list stem>.check.json and <list stem>.clean<ext> go (default .)")
    p.add_argument("--report", metavar="FILE", help="JSON report path (overrides --out-dir)")
    p.add_argument("--clean", metavar="FILE", help="cleaned list path (overrides --out-dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def check_file(path: str, needed_frames: int, quick: bool = False) -> dict[str, Any]:
    """Facts and the first problem of one video (a plain dict: crosses process boundaries)."""
    from gn_det.data.video.decode import VideoDecodeError, probe

    result: dict[str, Any] = {"path": path, "problem": None, "reason": None}
    try:
        result["size_bytes"] = os.path.getsize(path)
    except OSError:
        pass
    try:
        info = probe(path, count_frames=not quick)
    except VideoDecodeError as e:
        kind = "no_frames" if e.kind == "too_few_frames" else e.kind
        result.update(problem=kind, reason=e.reason)
        return result
    except Exception as e:  # whatever else a strange file does to the decoder: report it, go on
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        result.update(problem="undecodable", reason=f"decoding failed ({type(e).__name__}: {first})")
        return result
    result.update(info.as_dict())
    if info.num_frames < needed_frames:
        result.update(problem="too_short", reason=f"{info.num_frames} frames, a clip needs {needed_frames}")
    return result


def _check_one(job: tuple[str, int, bool]) -> dict[str, Any]:
    return check_file(*job)


def _executor(kind: str, workers: int) -> Executor:
    return ThreadPoolExecutor(workers) if kind == "thread" else ProcessPoolExecutor(workers)


def _stats(good: list[dict[str, Any]]) -> dict[str, Any]:
    def spread(key: str) -> dict[str, float] | None:
        values = [r[key] for r in good if r.get(key) is not None]
        return {"min": min(values), "median": statistics.median(values), "max": max(values)} if values else None

    return {
        "fps": dict(Counter(round(r["fps"], 3) for r in good if "fps" in r).most_common(10)),
        "resolution": dict(Counter(f"{r['width']}x{r['height']}" for r in good if "width" in r).most_common(10)),
        "codec": dict(Counter(r["codec"] for r in good if "codec" in r).most_common(10)),
        "duration_s": spread("duration"),
        "num_frames": spread("num_frames"),
    }


def check_video_list(args: argparse.Namespace) -> tuple[dict[str, Any], Path, Path]:
    """Run the check; returns (report, report path, cleaned list path). Raises on user errors."""
    from gn_det.data.video.annotations import load_video_list, write_video_list
    from gn_det.data.video.sampling import required_frames

    if args.num_frames < 1 or args.sampling_rate < 1:
        raise ValueError(f"--num-frames and --sampling-rate must be >= 1, got {args.num_frames} and "
                         f"{args.sampling_rate}")
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    src = Path(args.list)
    vl = load_video_list(src, format=args.format, video_root=args.video_root, sep=args.sep, split=args.split,
                         errors="collect")
    needed = required_frames(args.num_frames, args.sampling_rate)
    out_dir = Path(args.out_dir)
    report_path = Path(args.report) if args.report else out_dir / f"{src.stem}.check.json"
    clean_path = Path(args.clean) if args.clean else out_dir / f"{src.stem}.clean{src.suffix or '.csv'}"
    if clean_path.resolve() == src.resolve():
        raise ValueError(f"the cleaned list would overwrite the input {src}; pass another --clean or --out-dir")

    problems: list[dict[str, Any]] = [{"line": line, "path": None, "problem": "bad_line", "reason": msg}
                                      for line, msg in vl.problems]
    first_row: dict[str, int] = {}
    for i, r in enumerate(vl.records):
        if r.path in first_row:
            problems.append({"line": r.line, "path": r.path, "problem": "duplicate",
                             "reason": f"already listed on line {vl.records[first_row[r.path]].line}"})
        else:
            first_row[r.path] = i
    paths = list(first_row)
    jobs = [(p, needed, args.quick) for p in paths]
    bar = progress_bar(total=len(jobs), desc="check videos", unit="video", disable=args.no_progress)
    results: dict[str, dict[str, Any]] = {}
    if args.workers == 0:
        iterator = map(_check_one, jobs)
        for res in iterator:
            results[res["path"]] = res
            bar.update()
    else:
        with _executor(args.executor, args.workers) as pool:
            for res in pool.map(_check_one, jobs, chunksize=4 if args.executor == "process" else 1):
                results[res["path"]] = res
                bar.update()
    bar.close()

    good_rows = []
    for path, i in first_row.items():
        res = results[path]
        if res["problem"] is None:
            good_rows.append(i)
        else:
            problems.append({"line": vl.records[i].line, "path": path, "problem": res["problem"],
                             "reason": res["reason"]})
    problems.sort(key=lambda p: p["line"])
    write_video_list(vl, clean_path, good_rows)
    counts = Counter(p["problem"] for p in problems)
    report = {
        "list": str(src), "format": vl.format, "num_rows": len(vl.records) + len(vl.problems),
        "num_videos": len(paths), "num_good": len(good_rows), "num_classes": len(vl.classes),
        "num_frames_needed": needed, "decoded_every_frame": not args.quick,
        "counts": {k: counts.get(k, 0) for k in PROBLEM_KINDS},
        "problems": problems, "good_videos": _stats([results[vl.records[i].path] for i in good_rows]),
        "clean_list": str(clean_path),
    }
    atomic_write_text(json.dumps(report, indent=1) + "\n", report_path)
    return report, report_path, clean_path


def _summary(report: dict[str, Any], report_path: Path, clean_path: Path) -> str:
    rows = [[k, v] for k, v in report["counts"].items()]
    rows.append(["good", report["num_good"]])
    lines = [f"{report['list']} ({report['format']}): {report['num_rows']} rows, {report['num_videos']} videos, "
             f"{report['num_classes']} classes; a clip needs {report['num_frames_needed']} frames",
             format_table(rows, ["problem", "rows"])]
    st = report["good_videos"]
    if st["num_frames"]:
        lines.append(format_table(
            [[k, st[k]["min"], st[k]["median"], st[k]["max"]] for k in ("num_frames", "duration_s")],
            ["good videos", "min", "median", "max"], ".2f"))
        lines.append("fps: " + ", ".join(f"{k} ({v})" for k, v in st["fps"].items()))
        lines.append("resolution: " + ", ".join(f"{k} ({v})" for k, v in st["resolution"].items()))
    for p in report["problems"][:10]:
        lines.append(f"  line {p['line']}: {p['problem']}: {p['path'] or ''} {p['reason']}")
    if len(report["problems"]) > 10:
        lines.append(f"  ... {len(report['problems']) - 10} more in the report")
    lines.append(f"wrote {report_path} and {clean_path} ({report['num_good']} good rows)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gn-det-check-videos`` / ``tools/check_videos.py``; returns the exit code."""
    args = build_parser().parse_args(argv)
    from gn_det.data.video.annotations import AnnotationError

    try:
        report, report_path, clean_path = check_video_list(args)
    except (AnnotationError, ValueError, OSError) as e:  # user errors: one line, no traceback
        print(f"{_PROG}: error: {e}", file=sys.stderr)
        return 2
    print(_summary(report, report_path, clean_path))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
