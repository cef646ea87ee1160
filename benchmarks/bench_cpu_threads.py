"""CPU thread policies for training on a small, shared machine: the demo's training step per policy,
idle and with busy processes competing for the cores.

Each cell starts a fresh Python process (thread settings only take effect before torch starts its
thread pool) that trains the demo detector (``configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml``)
through the engine's ``Trainer.run_step`` on one fixed fake batch (``bench_mask_rcnn_step.py``'s
fake-data task, so data loading is not timed) and reports the median step time. ``--competitors N``
runs N ``yes > /dev/null`` processes beside it, the "other job on the same cores" case; data
workers, evaluation and other users do the same on small machines.

    python benchmarks/bench_cpu_threads.py --out bench_cpu_threads.json
    python benchmarks/bench_cpu_threads.py --competitors 0 1 2 --rounds 3 --iters 8

Cells are interleaved (round by round, every load and policy once per round, in a rotated order) so
that what else the machine runs at the time spreads over all cells; the load average and the
processes running when each cell started are printed and stored with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIG = "configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml"
# name -> (environment overrides, what it means); None removes the variable
POLICIES: dict[str, tuple[dict[str, str | None], str]] = {
    "default": ({"OMP_NUM_THREADS": None, "OMP_WAIT_POLICY": None}, "torch's default threads, OpenMP spin-waits"),
    "1 thread": ({"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": None}, "OMP_NUM_THREADS=1"),
    "all, PASSIVE": ({"OMP_NUM_THREADS": None, "OMP_WAIT_POLICY": "PASSIVE"},
                     "torch's default threads, OMP_WAIT_POLICY=PASSIVE"),
    "1 thread, PASSIVE": ({"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
                          "OMP_NUM_THREADS=1, OMP_WAIT_POLICY=PASSIVE"),
    # GNU OpenMP (torch's on Linux) spins GOMP_SPINCOUNT times before sleeping: 300000 by default
    # (~ms), 0 under PASSIVE. A short spin keeps most of the idle speed and yields the core soon.
    "all, spin 10k": ({"OMP_NUM_THREADS": None, "OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "10000"},
                      "torch's default threads, GOMP_SPINCOUNT=10000"),
    "all, spin 1k": ({"OMP_NUM_THREADS": None, "OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "1000"},
                     "torch's default threads, GOMP_SPINCOUNT=1000"),
}


def _child(args: argparse.Namespace) -> int:
    """One cell: time the demo's step in this process and print one JSON line."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import logging

    import tempfile

    import torch
    from bench_mask_rcnn_step import FixedBatchDetectionTask, StepTimer, fake_batch

    from gn_det.config import load_config
    from gn_det.engine.trainer import Trainer

    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as out:
        # a tiny lr (0 is refused by the config): every op of the step runs, the weights barely move
        cfg = load_config(args.config, ["OUTPUT_DIR", out, "SOLVER.MAX_ITER", str(args.warmup + args.iters),
                                        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.ACCUM_STEPS", "1",
                                        "SOLVER.CHECKPOINT_PERIOD", str(10**9), "DATASETS.TEST", "()",
                                        "LOG_PERIOD", str(10**9), "SEED", "0", "MODEL.DEVICE", "cpu",
                                        "SOLVER.BASE_LR", "1e-9"])
        batch = fake_batch(2, int(cfg.INPUT.MIN_SIZE_TEST), 3, int(cfg.MODEL.ROI_HEADS.NUM_CLASSES))
        torch.manual_seed(0)
        trainer = Trainer(cfg, FixedBatchDetectionTask(batch))
        timer = StepTimer(trainer.device)
        trainer.register_hooks([timer])
        trainer.train()
    steps = timer.seconds[args.warmup:]
    print(json.dumps({"median_s": statistics.median(steps), "mean_s": statistics.mean(steps),
                      "torch_threads": torch.get_num_threads(),
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}))
    return 0


def _machine_state() -> dict:
    """Load averages and the running/total processes of ``/proc/loadavg`` right now."""
    load = os.getloadavg()
    running = None
    try:
        running = Path("/proc/loadavg").read_text().split()[3]
    except OSError:
        pass
    return {"loadavg_1m": round(load[0], 2), "loadavg_5m": round(load[1], 2), "running_total": running}


def _run_cell(policy: str, competitors: int, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    for key, value in POLICIES[policy][0].items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env["GN_DET_THREAD_POLICY"] = "off"  # time the raw policy, not gn_det's own on top of it
    busy = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(competitors)]
    try:
        time.sleep(0.5 if competitors else 0)
        state = _machine_state()
        started = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--child", "--config", args.config, "--iters", str(args.iters),
                              "--warmup", str(args.warmup)], env=env, capture_output=True, text=True,
                             timeout=args.timeout)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    if out.returncode != 0:
        raise SystemExit(f"cell {policy!r} with {competitors} competitor(s) failed:\n{out.stderr[-2000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row.update(policy=policy, competitors=competitors, wall_s=round(time.perf_counter() - started, 1), **state)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--competitors", nargs="+", type=int, default=[0, 1],
                        help="numbers of `yes` processes to run beside the cell (default: 0 1)")
    parser.add_argument("--rounds", type=int, default=2, help="times every cell runs (interleaved)")
    parser.add_argument("--iters", type=int, default=5, help="timed steps per cell")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per cell before giving up")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)

    print(f"{os.cpu_count()} CPUs; before: {_machine_state()}", flush=True)
    rows = []
    for r in range(args.rounds):
        for competitors in args.competitors:
            shift = (r + competitors) % len(args.policies)
            for policy in args.policies[shift:] + args.policies[:shift]:
                row = _run_cell(policy, competitors, args)
                rows.append(row)
                print(f"  round {r} | {competitors} yes | {policy:<18} {row['median_s']:.3f} s/step "
                      f"({row['torch_threads']} threads; load {row['loadavg_1m']}, running {row['running_total']})",
                      flush=True)
    after = _machine_state()

    header = f"{'policy':<20}" + "".join(f"{f'{c} yes: s/step':>17}" for c in args.competitors) + f"{'threads':>9}"
    print("\nmedian over rounds of each cell's median step time (demo config, 2 images, CPU)")
    print(header)
    table = {}
    for policy in args.policies:
        cells = {}
        line = f"{policy:<20}"
        for c in args.competitors:
            values = [x["median_s"] for x in rows if x["policy"] == policy and x["competitors"] == c]
            cells[c] = statistics.median(values)
            line += f"{cells[c]:>17.3f}"
        threads = {x["torch_threads"] for x in rows if x["policy"] == policy}
        print(line + f"{','.join(map(str, sorted(threads))):>9}")
        table[policy] = {"description": POLICIES[policy][1], "median_s_per_step": cells,
                         "torch_threads": sorted(threads)}
    loads = [x["loadavg_1m"] for x in rows]
    print(f"\nAlso running: load average (1 min) at cell starts {min(loads)}..{max(loads)} "
          f"(includes this benchmark's own `yes` processes); after: {after}")
    if args.out:
        import torch  # only for the version: the parent never trains

        env = {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
               "torch": torch.__version__, "parallel": torch.__config__.parallel_info().splitlines()[:6],
               "config": args.config, "iters": args.iters, "warmup": args.warmup, "rounds": args.rounds}
        args.out.write_text(json.dumps({"env": env, "table": table, "cells": rows, "after": after}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
