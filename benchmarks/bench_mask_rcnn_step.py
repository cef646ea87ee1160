"""Time Mask R-CNN training steps for detection configs: the trainer's own step.

Each config is trained by the engine's :class:`~gn_det.engine.trainer.Trainer` (``run_step``:
forward, backward, the rank all-reduce, gradient clipping if configured, the SGD step and the
lr schedule, exactly what ``gn-det-train`` runs) on a fake-data task: the detection task with a
train loader that hands out one fixed batch, so data loading is not timed. A hook records each
step's wall time. The demo's budget (issue 3) is box AP >= 20 within 15 minutes on a 2-core CPU
at 2 images per batch, so seconds per iteration of the demo models decide how many iterations it
gets.

    python benchmarks/bench_mask_rcnn_step.py --out bench_mask_rcnn_step.json
    python benchmarks/bench_mask_rcnn_step.py --configs configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml \\
        --threads 2 --iters 30

Each config trains on one fixed batch of ``--batch`` images at the config's test size
(INPUT.MIN_SIZE_TEST, square) holding ``--objects`` rectangles each. The first ``--warmup``
iterations are dropped; the table shows median and mean seconds per iteration.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
from pathlib import Path

import torch

from bench_fixtures import FixedBatchDetectionTask, StepTimer, fake_batch, trainer_opts
from gn_det.config import load_config
from gn_det.engine.trainer import Trainer
from gn_det.utils.io import atomic_write_text

__all__ = ["DEFAULT_CONFIGS", "FixedBatchDetectionTask", "StepTimer", "fake_batch", "time_config", "main"]

_DEMOS = ("gn", "gn_ws", "bn", "frozenbn")
DEFAULT_CONFIGS = [f"configs/synthetic/mask_rcnn_R_18_FPN_{n}_demo.yaml" for n in _DEMOS]


def time_config(path: str, iters: int, warmup: int, batch_size: int, objects: int, device: str = "cpu",
                opts: list[str] | None = None) -> dict:
    """Train ``path``'s model for ``warmup + iters`` steps through ``Trainer``; step-time statistics
    (and peak GPU memory on CUDA)."""
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(path, trainer_opts(out, batch_size, device, warmup + iters) + list(opts or []))
        batch = fake_batch(batch_size, int(cfg.INPUT.MIN_SIZE_TEST), objects, int(cfg.MODEL.ROI_HEADS.NUM_CLASSES))
        torch.manual_seed(0)
        trainer = Trainer(cfg, FixedBatchDetectionTask(batch))
        timer = StepTimer(trainer.device)
        trainer.register_hooks([timer])
        if timer.cuda:
            torch.cuda.reset_peak_memory_stats(trainer.device)
        trainer.train()
        peak = torch.cuda.max_memory_allocated(trainer.device) / 2**30 if timer.cuda else None
    steps = timer.seconds[warmup:]
    model = trainer.unwrapped_model
    return {"config": path, "norm": cfg.MODEL.RESNETS.NORM, "image_size": int(cfg.INPUT.MIN_SIZE_TEST),
            "median_s_per_iter": statistics.median(steps), "mean_s_per_iter": statistics.mean(steps),
            "iters": iters, "params_millions": sum(p.numel() for p in model.parameters()) / 1e6,
            "device": str(trainer.device), "amp": bool(cfg.SOLVER.AMP.ENABLED), "peak_gpu_gib": peak}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2, help="images per iteration (default 2)")
    parser.add_argument("--objects", type=int, default=3, help="objects per image (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--amp", action="store_true", help="SOLVER.AMP.ENABLED True (fp16 + GradScaler on CUDA)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    opts = ["SOLVER.AMP.ENABLED", "True"] if args.amp else []
    rows = [time_config(c, args.iters, args.warmup, args.batch, args.objects, args.device, opts) for c in args.configs]
    print(f"{'config':<55} {'norm':>8} {'median s/it':>12} {'mean s/it':>10} {'peak GiB':>9}")
    for r in rows:
        peak = f"{r['peak_gpu_gib']:.2f}" if r["peak_gpu_gib"] is not None else "-"
        print(f"{Path(r['config']).name:<55} {r['norm']:>8} {r['median_s_per_iter']:>12.3f} "
              f"{r['mean_s_per_iter']:>10.3f} {peak:>9}")
    if args.out:
        env = {"torch": torch.__version__, "threads": args.threads, "cpu": platform.processor() or platform.machine(),
               "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
               "batch": args.batch, "objects": args.objects, "amp": args.amp}
        atomic_write_text(json.dumps({"env": env, "results": rows}, indent=2), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
