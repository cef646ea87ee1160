"""Time the checkpoint converter (no calibration) stage by stage on a ResNet-101 checkpoint.

Target (issue 2): converting a ResNet-101 checkpoint takes under 5 s on the project's CPU machine.

    python benchmarks/bench_convert.py --out bench_convert.json
    python benchmarks/bench_convert.py --input resnet101-63fe2227.pth --norm gn+ws --out r101.json

Without ``--input`` a randomly initialized torchvision ResNet-101 BN state dict is written to a
temporary folder first (not timed). Each configuration runs ``--repeats`` times through the same
code path as ``gn-det-convert``; the table shows the median seconds per stage and in total.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from gn_det.checkpoint.io import atomic_save, atomic_write_text
from gn_det.cli.convert_checkpoint import build_parser, convert

STAGES = ("read", "build", "load", "convert", "write")


def _run_once(input_path: Path, norm: str, output_format: str, out_dir: Path) -> dict[str, float]:
    suffix = ".pkl" if output_format == "detectron2" else ".pth"
    args = build_parser().parse_args([str(input_path), "--norm", norm, "--output-format", output_format,
                                      "--output", str(out_dir / f"out{suffix}")])
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the report is long; the table is what we want
        report = convert(args)
    seconds = dict(report["seconds"])
    seconds["total"] = time.perf_counter() - start
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, help="checkpoint to convert (default: random ResNet-101)")
    parser.add_argument("--norm", nargs="+", default=["gn", "gn+ws"])
    parser.add_argument("--output-format", nargs="+", default=["gn_det", "detectron2"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        input_path = args.input
        if input_path is None:
            input_path = tmp / "resnet101_bn.pth"
            atomic_save(torchvision.models.resnet101().state_dict(), input_path)
        rows = []
        for norm in args.norm:
            for fmt in args.output_format:
                runs = [_run_once(input_path, norm, fmt, tmp) for _ in range(args.repeats)]
                median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                rows.append({"norm": norm, "output_format": fmt, "median_s": median,
                             "runs_total_s": [r["total"] for r in runs]})

    header = ["norm", "output"] + list(STAGES) + ["total"]
    print(" | ".join(f"{h:>10}" for h in header))
    for row in rows:
        cells = [row["norm"], row["output_format"]] + [f"{row['median_s'].get(s, 0.0):.3f}"
                                                       for s in STAGES + ("total",)]
        print(" | ".join(f"{c:>10}" for c in cells))
    result = {"benchmark": "convert_checkpoint", "input": str(args.input or "random resnet101"),
              "repeats": args.repeats, "threads": args.threads, "torch": torch.__version__,
              "python": platform.python_version(), "machine": platform.machine(),
              "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
              "results": rows}
    if args.out:
        atomic_write_text(json.dumps(result, indent=2), args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
