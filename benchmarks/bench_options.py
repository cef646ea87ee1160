"""Measure the speed options (AMP, channels_last, torch.compile) on Mask R-CNN training steps.

Each row is one :class:`~gn_det.engine.trainer.Trainer` built from a config plus the option's
keys (SOLVER.AMP.ENABLED/DTYPE, MODEL.CHANNELS_LAST, MODEL.COMPILE.MODE), training on one fixed
fake batch (``bench_fixtures``: lr ~0, so every step does the same work).
Steps go round-robin over the rows (one step of each per round), so machine noise hits all
rows alike; the table shows each row's median step time after ``--warmup`` rounds and its
ratio to the baseline of the same config. The first step is reported apart: for compile rows
it holds the compilation.

    python benchmarks/bench_options.py --out bench_options.json
    python benchmarks/bench_options.py --device cuda --out bench_options_cuda.json
    python benchmarks/bench_options.py --smoke     # a few seconds, for CI
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_fixtures import (FixedBatchDetectionTask, SteppedTrainer, fake_batch, finish_report,  # noqa: E402
                            machine_info, synchronize, trainer_opts)

from gn_det.config import load_config  # noqa: E402
from gn_det.engine.trainer import Trainer  # noqa: E402
from gn_det.utils.table import format_table  # noqa: E402

DEFAULT_CONFIGS = ["configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml",
                   "configs/synthetic/mask_rcnn_R_18_FPN_gn_ws_demo.yaml"]
# option name -> config overrides
OPTIONS: dict[str, list[str]] = {
    "baseline": [],
    "amp_fp16": ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "float16"],
    "amp_bf16": ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "bfloat16"],
    "channels_last": ["MODEL.CHANNELS_LAST", "True"],
    "compile": ["MODEL.COMPILE.MODE", "default", "MODEL.COMPILE.SCOPE", "backbone"],
}
CPU_OPTIONS = ("baseline", "amp_bf16", "channels_last", "compile")
CUDA_OPTIONS = ("baseline", "amp_fp16", "amp_bf16", "channels_last", "compile")


class _Row:
    """One trainer stepped by hand (:class:`bench_fixtures.SteppedTrainer`), and its step times."""

    def __init__(self, config: str, option: str, device: str, batch_size: int, objects: int, out_dir: str):
        self.config, self.option = config, option
        cfg = load_config(config, trainer_opts(out_dir, batch_size, device) + OPTIONS[option])
        batch = fake_batch(batch_size, int(cfg.INPUT.MIN_SIZE_TEST), objects, int(cfg.MODEL.ROI_HEADS.NUM_CLASSES))
        torch.manual_seed(0)
        self.stepper = SteppedTrainer(Trainer(cfg, FixedBatchDetectionTask(batch)))
        self.device = self.stepper.trainer.device
        self.seconds: list[float] = []

    def step(self) -> None:
        synchronize(self.device)
        start = time.perf_counter()
        self.stepper.step()
        synchronize(self.device)
        self.seconds.append(time.perf_counter() - start)

    def result(self, warmup: int) -> dict:
        steady = self.seconds[1 + warmup:]
        loss = self.stepper.storage.latest()["total_loss"][0]
        return {"config": self.config, "option": self.option, "first_step_s": self.seconds[0],
                "median_s": statistics.median(steady), "mean_s": statistics.mean(steady), "steps": len(steady),
                "total_loss": loss}


def run(configs: list[str], options: tuple[str, ...], device: str, rounds: int, warmup: int, batch_size: int,
        objects: int) -> list[dict]:
    """Build one row per (config, option) and step them round-robin; results with ratios."""
    results = []
    for config in configs:
        with tempfile.TemporaryDirectory() as out:
            rows = [_Row(config, o, device, batch_size, objects, os.path.join(out, o)) for o in options]
            for _ in range(1 + warmup + rounds):
                for row in rows:
                    row.step()
            found = [r.result(warmup) for r in rows]
        base = found[0]["median_s"]
        for r in found:
            r["ratio_to_baseline"] = r["median_s"] / base
        results += found
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--options", nargs="+", choices=sorted(OPTIONS),
                        help=f"rows (default: {CPU_OPTIONS} on cpu, {CUDA_OPTIONS} on cuda)")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="rounds dropped after the first step (default 2)")
    parser.add_argument("--batch", type=int, default=2, help="images per step (default 2)")
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--smoke", action="store_true", help="one config, no compile, 1 round: a quick check")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    options = tuple(args.options or (CUDA_OPTIONS if args.device.startswith("cuda") else CPU_OPTIONS))
    if "baseline" in options:  # ratios are against the first row
        options = ("baseline",) + tuple(o for o in options if o != "baseline")
    configs, rounds, warmup = args.configs, args.rounds, args.warmup
    if args.smoke:
        configs, rounds, warmup = configs[:1], 1, 0
        options = tuple(o for o in options if o != "compile")

    env = machine_info(torch.device(args.device), args.threads)
    env.update(batch=args.batch, rounds=rounds, warmup=warmup)
    rows = run(configs, options, args.device, rounds, warmup, args.batch, args.objects)
    env["loadavg_end"] = list(os.getloadavg())
    print(format_table([(Path(r["config"]).stem, r["option"], r["first_step_s"], r["median_s"], r["ratio_to_baseline"],
                         r["total_loss"]) for r in rows],
                       ["config", "option", "first s", "median s", "x baseline", "loss"]))
    finish_report(env, rows, args.out, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
