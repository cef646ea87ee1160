"""The batch-size study: ``gn-det-batch-size-study`` / ``python tools/batch_size_study.py``.

The GN paper's Figure 1 / Table 2 at small scale: one classification config trained with each norm
(BN and GN by default) at each batch size (32, 16, 8, 4, 2 images per step by default), validation
error (100 - top-1) reported for every run, as a table, JSON and a plot::

    gn-det-batch-size-study [--config-file configs/classification/synthetic/R_18_batch_size_study.yaml]
        [--norms BN GN] [--batch-sizes 32 16 8 4 2] [--epochs E] [--output-dir DIR] [--jobs N]
        [--threads T] [--smoke] [KEY VALUE ...]

Every run has the same number of epochs. The config is the reference run: ``SOLVER.BASE_LR`` is the
learning rate at ``SOLVER.IMS_PER_BATCH`` images per step, scaled linearly with the batch (the
paper's rule); ``SOLVER.MAX_ITER`` (unless ``--epochs`` sets the epochs), ``WARMUP_ITERS``,
``CHECKPOINT_PERIOD``, ``TEST.EVAL_PERIOD`` and ``LOG_PERIOD`` are counted at that batch and scaled
inversely, ``SOLVER.STEPS`` stay at the same fraction of the schedule. KEY VALUE overrides change the
reference config (``SOLVER.BASE_LR 0.1`` is the lr at ``IMS_PER_BATCH``).

Each run is a ``gn-det-train --resume`` in a subprocess of its own (``OMP_NUM_THREADS=--threads``,
so a crash ends that run only), in ``<output-dir>/<norm>_b<batch>/``. BN trains with the batch's
statistics and evaluates with its running statistics (PyTorch's BatchNorm, unchanged). A run whose
``metrics.json`` holds its final evaluation is skipped on a rerun; a run that was stopped continues
from its last checkpoint. Outputs: the tables on stdout, ``study.json`` and ``batch_size_study.png``
in the output folder (written atomically).

``--smoke`` is the few-second version for CI: the tiny test config, batch sizes 4 and 2, a tenth of
an epoch of its 160 images.

Exit codes: 0 all runs finished; 1 a run failed (the others still ran; its line says why and where its
output is); 2 a bad command line or config; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..config import ConfigError, load_config
from ..utils.io import atomic_write_file, atomic_write_text
from ..utils.progress import progress_bar
from ..utils.table import format_table

__all__ = ["RunSpec", "RunResult", "build_parser", "count_train_images", "plan_runs", "final_metrics",
           "run_study", "study_tables", "write_plot", "main"]

_PROG = "gn-det-batch-size-study"
_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "classification" / "synthetic"
DEFAULT_CONFIG = _CONFIGS / "R_18_batch_size_study.yaml"
SMOKE_CONFIG = _CONFIGS / "R_18_gn_test.yaml"
SMOKE = {"batch_sizes": [4, 2], "epochs": 0.1}  # 16 of the test set's 160 images: 4 and 8 steps
TOP1 = "classification/top1"
SPEC_FILE = "study_run.json"  # in each run folder: what the run is, and its wall time once done
RESULTS_FILE = "study.json"
PLOT_FILE = "batch_size_study.png"

logger = logging.getLogger("gn_det.batch_size_study")


@dataclass
class RunSpec:
    """One training run of the study.

    Attributes:
        norm: MODEL.RESNETS.NORM.
        batch_size: SOLVER.IMS_PER_BATCH.
        lr: SOLVER.BASE_LR (the reference lr scaled linearly).
        max_iter: SOLVER.MAX_ITER (same epochs at every batch).
        output_dir: the run's folder.
        opts: every KEY VALUE override of the run (the user's, then the study's).
    """

    norm: str
    batch_size: int
    lr: float
    max_iter: int
    output_dir: str
    opts: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.norm.replace('+', '_')}_b{self.batch_size}"


@dataclass
class RunResult:
    """A run's outcome: ``top1`` (%) and ``seconds`` of wall time when finished, else ``error``."""

    spec: RunSpec
    top1: float | None = None
    seconds: float | None = None
    skipped: bool = False
    error: str = ""

    @property
    def val_error(self) -> float | None:
        return None if self.top1 is None else 100.0 - self.top1


def build_parser() -> argparse.ArgumentParser:
    """The command line (module docstring)."""
    parser = argparse.ArgumentParser(prog=_PROG, description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=None, metavar="FILE",
                        help=f"the reference classification config (default: {DEFAULT_CONFIG.name}; "
                             f"with --smoke {SMOKE_CONFIG.name})")
    parser.add_argument("--norms", nargs="+", default=["BN", "GN"], help="MODEL.RESNETS.NORM values")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=None, metavar="B",
                        help="images per step (default: 32 16 8 4 2; with --smoke 4 2)")
    parser.add_argument("--epochs", type=float, default=None,
                        help="epochs of every run (default: the config's MAX_ITER x IMS_PER_BATCH / images)")
    parser.add_argument("--output-dir", default=None, metavar="DIR",
                        help="the study folder (default: the config's OUTPUT_DIR; with --smoke "
                             "output/batch_size_study_smoke)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each a process of its own)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS of each run (1: runs do not fight over shared cores)")
    parser.add_argument("--smoke", action="store_true", help="the few-second version, for CI")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="overrides of the reference config, KEY VALUE pairs")
    return parser


def count_train_images(cfg) -> int:
    """Images in DATASETS.TRAIN (synthetic sets, DATASETS.TEST's too, are generated here, once, before
    the runs start)."""
    from ..data.classification import build_classification_dataset, dataset_root

    for name in cfg.DATASETS.TEST:  # made here too, so that runs started together do not all make it
        dataset_root(cfg, name)
    return sum(len(build_classification_dataset(cfg, name, is_train=True)) for name in cfg.DATASETS.TRAIN)


def plan_runs(cfg, user_opts: Sequence[str], norms: Sequence[str], batch_sizes: Sequence[int],
              num_images: int, output_dir: str | os.PathLike, epochs: float | None = None) -> list[RunSpec]:
    """The runs of the study, norm by norm, batch sizes in the order given.

    Args:
        cfg: the reference config (the user's overrides applied).
        user_opts: those overrides; every run passes them first.
        norms, batch_sizes: the grid.
        num_images: images in one epoch.
        output_dir: the study folder.
        epochs: epochs of every run; None: the reference run's (``MAX_ITER x IMS_PER_BATCH / num_images``).
    """
    s = cfg.SOLVER
    ref = s.IMS_PER_BATCH
    if epochs is None:
        epochs = s.MAX_ITER * ref / num_images
    runs = []
    for norm in norms:
        for b in batch_sizes:
            max_iter = max(1, round(epochs * num_images / b))
            per_ref_iter = ref / b  # iterations of this run per iteration of the reference run

            def scaled(n: int) -> int:
                return max(1, round(n * per_ref_iter)) if n > 0 else n

            steps = tuple(max(1, round(x * max_iter / s.MAX_ITER)) for x in s.STEPS)
            study = ["MODEL.RESNETS.NORM", norm, "SOLVER.IMS_PER_BATCH", str(b),
                     "SOLVER.BASE_LR", repr(s.BASE_LR * b / ref), "SOLVER.MAX_ITER", str(max_iter),
                     "SOLVER.WARMUP_ITERS", str(min(scaled(s.WARMUP_ITERS), max_iter)),
                     "SOLVER.CHECKPOINT_PERIOD", str(scaled(s.CHECKPOINT_PERIOD)),
                     "TEST.EVAL_PERIOD", str(scaled(cfg.TEST.EVAL_PERIOD)), "LOG_PERIOD", str(scaled(cfg.LOG_PERIOD))]
            if s.LR_SCHEDULER_NAME == "WarmupMultiStepLR":  # the other schedules do not read STEPS
                study += ["SOLVER.STEPS", repr(steps)]
            spec = RunSpec(norm, b, s.BASE_LR * b / ref, max_iter, "", [])
            spec.output_dir = str(Path(output_dir) / spec.name)
            spec.opts = list(user_opts) + study + ["OUTPUT_DIR", spec.output_dir]
            runs.append(spec)
    return runs


def final_metrics(spec: RunSpec) -> dict[str, Any] | None:
    """The record of the run's last iteration in its metrics.json if it holds the final top-1, else None."""
    path = Path(spec.output_dir) / "metrics.json"
    if not path.is_file():
        return None
    for line in reversed(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("iteration") == spec.max_iter - 1 and TOP1 in record:
            return record
    return None


def _spec_record(spec: RunSpec) -> dict[str, Any]:
    return {k: v for k, v in asdict(spec).items() if k != "output_dir"}


def _claim_folder(spec: RunSpec) -> dict[str, Any]:
    """Write the run's spec into its folder, or read it back; refuse a folder of another run."""
    path = Path(spec.output_dir) / SPEC_FILE
    mine = _spec_record(spec)
    if path.is_file():
        found = json.loads(path.read_text(encoding="utf-8"))
        if {k: found.get(k) for k in mine} != mine:
            raise ConfigError(f"{spec.output_dir} holds a run with other settings ({path}: {json.dumps(found)}); "
                              f"delete that folder, or pass another --output-dir")
        return found
    atomic_write_text(json.dumps(mine, indent=2) + "\n", path)
    return mine


def _run(spec: RunSpec, config_file: str, threads: int) -> RunResult:
    """Train one run in a subprocess (``gn-det-train --resume``), unless it already finished."""
    record = _claim_folder(spec)
    done = final_metrics(spec)
    if done is not None:
        return RunResult(spec, done[TOP1], record.get("seconds"), skipped=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "gn_det.cli.train_net", "--config-file", config_file, "--resume", *spec.opts]
    log = Path(spec.output_dir) / "train_output.txt"
    start = time.perf_counter()
    with open(log, "ab") as out:
        code = subprocess.call(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    seconds = round(time.perf_counter() - start, 1)  # as study_run.json keeps it, so a rerun prints the same
    if code == 130:
        raise KeyboardInterrupt
    done = final_metrics(spec)
    if code != 0 or done is None:
        lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if "error:" in ln]
        why = lines[-1].strip() if lines else f"exit code {code}, no final top-1 in metrics.json"
        return RunResult(spec, error=f"{why} (output: {log})")
    record["seconds"] = seconds
    atomic_write_text(json.dumps(record, indent=2) + "\n", Path(spec.output_dir) / SPEC_FILE)
    return RunResult(spec, done[TOP1], seconds)


def _describe(result: RunResult) -> str:
    spec = result.spec
    what = f"{spec.norm} at {spec.batch_size} images/step (lr {spec.lr:g}, {spec.max_iter} steps)"
    if result.error:
        return f"{what}: FAILED: {result.error}"
    took = "time unknown" if result.seconds is None else f"{result.seconds:.0f} s"
    return f"{what}: val error {result.val_error:.2f}% ({took}{', done before: skipped' if result.skipped else ''})"


def study_tables(results: Sequence[RunResult]) -> tuple[str, str]:
    """(per-run table, the paper's Table 2 layout: one row per norm, one column per batch size)."""
    rows = [[r.spec.norm, r.spec.batch_size, f"{r.spec.lr:g}", r.spec.max_iter, r.val_error, r.top1,
             None if r.seconds is None else round(r.seconds)] for r in results]
    runs = format_table(rows, ["norm", "batch", "lr", "iterations", "val error (%)", "top-1 (%)", "time (s)"],
                        float_fmt=".2f")
    norms = list(dict.fromkeys(r.spec.norm for r in results))
    sizes = list(dict.fromkeys(r.spec.batch_size for r in results))
    err = {(r.spec.norm, r.spec.batch_size): r.val_error for r in results}
    grid = [[norm] + [err.get((norm, b)) for b in sizes] for norm in norms]
    if len(norms) == 2:  # the paper's "GN - BN" line, here second minus first
        a, b_ = norms
        grid.append([f"{b_} - {a}"] + [None if err.get((a, b)) is None or err.get((b_, b)) is None
                                       else err[(b_, b)] - err[(a, b)] for b in sizes])
    paper = format_table(grid, ["val error (%) / batch"] + [str(b) for b in sizes], float_fmt=".2f")
    return runs, paper


def write_plot(results: Sequence[RunResult], path: str | os.PathLike, title: str = "") -> None:
    """Validation error vs batch size, one line per norm, log2 x axis from the largest batch to the
    smallest (the paper's Figure 1); matplotlib's Agg canvas, written atomically."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    sizes = sorted({r.spec.batch_size for r in results}, reverse=True)
    for norm in dict.fromkeys(r.spec.norm for r in results):
        points = sorted(((r.spec.batch_size, r.val_error) for r in results
                         if r.spec.norm == norm and r.val_error is not None), reverse=True)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=norm)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, labels=[str(b) for b in sizes])
    ax.minorticks_off()
    ax.set_xlim(max(sizes) * 1.25, min(sizes) / 1.25)  # large to small batch, left to right
    ax.set_xlabel("batch size (images per step)")
    ax.set_ylabel("validation error (%)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_file(path, lambda f: f.write(buf.getvalue()))


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.opts and args.opts[0] == "--":
        args.opts = args.opts[1:]
    if args.smoke:
        args.config_file = args.config_file or str(SMOKE_CONFIG)
        args.batch_sizes = args.batch_sizes or SMOKE["batch_sizes"]
        args.epochs = SMOKE["epochs"] if args.epochs is None else args.epochs
        args.output_dir = args.output_dir or os.path.join("output", "batch_size_study_smoke")
    args.config_file = args.config_file or str(DEFAULT_CONFIG)
    args.batch_sizes = args.batch_sizes or [32, 16, 8, 4, 2]
    if any(b < 1 for b in args.batch_sizes) or len(set(args.batch_sizes)) != len(args.batch_sizes):
        parser.error(f"--batch-sizes must be distinct positive numbers, got {args.batch_sizes}")
    if len(set(args.norms)) != len(args.norms):
        parser.error(f"--norms must be distinct, got {args.norms}")
    if args.epochs is not None and not (args.epochs > 0 and math.isfinite(args.epochs)):
        parser.error(f"--epochs must be > 0, got {args.epochs}")
    if args.jobs < 1 or args.threads < 1:
        parser.error("--jobs and --threads must be >= 1")


def _plan(args: argparse.Namespace) -> tuple[list[RunSpec], dict[str, Any]]:
    """Check the reference config and every run's config before anything trains (ConfigError)."""
    from .train_net import setup_cfg

    cfg = load_config(args.config_file, args.opts)
    if cfg.TASK != "classification":
        raise ConfigError(f"{args.config_file}: the study trains TASK classification configs, this one has "
                          f"TASK {cfg.TASK!r}")
    if len(cfg.DATASETS.TEST) != 1:
        raise ConfigError(f"DATASETS.TEST = {tuple(cfg.DATASETS.TEST)}: the study reports the error on one "
                          f"validation set; name exactly one")
    output_dir = args.output_dir or cfg.OUTPUT_DIR
    num_images = count_train_images(cfg)
    runs = plan_runs(cfg, args.opts, args.norms, args.batch_sizes, num_images, output_dir, args.epochs)
    for spec in runs:  # the checks gn-det-train makes, here, so a bad value stops the study at once
        setup_cfg(argparse.Namespace(config_file=args.config_file, opts=spec.opts, eval_only=False,
                                     num_gpus=1, num_machines=1))
    info = {"config_file": args.config_file, "overrides": list(args.opts), "train_images": num_images,
            "epochs": runs[0].max_iter * runs[0].batch_size / num_images, "reference_batch": cfg.SOLVER.IMS_PER_BATCH,
            "reference_lr": cfg.SOLVER.BASE_LR, "test_set": cfg.DATASETS.TEST[0], "output_dir": str(output_dir),
            "depth": cfg.MODEL.RESNETS.DEPTH, "crop_size": cfg.INPUT.CROP_SIZE}
    return runs, info


def run_study(args: argparse.Namespace) -> tuple[list[RunResult], dict[str, Any]]:
    """Plan, run (skipping finished runs), and write ``study.json`` and the plot; returns the results
    in plan order and the study's description."""
    runs, info = _plan(args)
    for spec in runs:
        _claim_folder(spec)  # a folder of another setting stops the study before anything trains
    logger.info("%d runs (%s x batch %s), %.3g epochs of %d images each, in %s", len(runs), "/".join(args.norms),
                "/".join(map(str, args.batch_sizes)), info["epochs"], info["train_images"], info["output_dir"])
    results: dict[str, RunResult] = {}
    with progress_bar(total=len(runs), desc="batch-size study", unit="run", disable=args.no_progress) as bar, \
            ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(_run, spec, args.config_file, args.threads): spec for spec in runs}
        for future in as_completed(futures):
            result = future.result()
            results[result.spec.name] = result
            bar.update()
            (logger.warning if result.error else logger.info)("[%d/%d] %s", len(results), len(runs), _describe(result))
    ordered = [results[spec.name] for spec in runs]
    record = dict(info, runs=[dict(asdict(r.spec), val_error=r.val_error, top1=r.top1, seconds=r.seconds,
                                   skipped=r.skipped, error=r.error) for r in ordered])
    out = Path(info["output_dir"])
    atomic_write_text(json.dumps(record, indent=2) + "\n", out / RESULTS_FILE)
    write_plot(ordered, out / PLOT_FILE, title=f"ResNet-{info['depth']}, {info['train_images']} images, "
                                                f"{info['epochs']:.3g} epochs, lr {info['reference_lr']:g} "
                                                f"per {info['reference_batch']} images")
    return ordered, info


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (module docstring)."""
    from ..utils.logger import setup_logger

    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    setup_logger(name="gn_det")
    start = time.perf_counter()
    try:
        results, info = run_study(args)
    except ConfigError as e:
        print(f"{_PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted; rerun the same command to continue (finished runs are skipped)",
              file=sys.stderr)
        return 130
    runs, paper = study_tables(results)
    out = Path(info["output_dir"])
    print(f"{runs}\n\n{paper}\n\n{len(results)} runs in {time.perf_counter() - start:.0f} s; "
          f"{out / RESULTS_FILE}, {out / PLOT_FILE}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
