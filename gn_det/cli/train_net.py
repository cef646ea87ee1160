"""Train or evaluate a gn_det model: ``gn-det-train`` / ``python tools/train_net.py``.

detectron2's command line::

    gn-det-train --config-file configs/X.yaml [--num-gpus N] [--resume] [--eval-only] \\
        [--num-machines M --machine-rank R --dist-url tcp://host:port] [KEY VALUE ...]

``--num-gpus N`` starts N local processes (one per GPU; on a machine without CUDA, N CPU
processes joined with gloo). Under ``torchrun`` the process count comes from torchrun instead.
``--eval-only`` evaluates MODEL.WEIGHTS (or, with ``--resume``, the last checkpoint in
OUTPUT_DIR) on DATASETS.TEST and writes ``OUTPUT_DIR/eval_results.json``. Mistakes in the command line or config (missing file, unknown key,
bad value, batch not divisible) print one ``error:`` line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Sequence

import torch
import torch.multiprocessing as mp

from .. import tasks  # noqa: F401  (registers the built-in tasks and the installed plugins' tasks)
from ..checkpoint.io import CheckpointError
from ..config import ConfigError, load_config
from ..engine.launch import launch, torchrun_env
from ..engine.task import get_task

__all__ = ["build_parser", "main", "setup_cfg"]

logger = logging.getLogger("gn_det.train_net")
USER_ERROR = 2
TRAINING_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (detectron2's flags, then KEY VALUE overrides)."""
    parser = argparse.ArgumentParser(
        prog="gn-det-train",
        description="Train or evaluate a gn_det model (detection, video, ...) from a YAML config.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n"
               "  gn-det-train --config-file configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml\n"
               "  gn-det-train --config-file cfg.yaml --num-gpus 8 SOLVER.IMS_PER_BATCH 16 SOLVER.BASE_LR 0.02\n"
               "  gn-det-train --config-file cfg.yaml --eval-only MODEL.WEIGHTS output/model_final.pth\n"
               "  torchrun --nproc-per-node 8 -m gn_det.cli.train_net --config-file cfg.yaml\n")
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to the YAML config")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUTPUT_DIR/last_checkpoint if it exists (else start fresh)")
    parser.add_argument("--eval-only", action="store_true", help="only evaluate, no training")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per machine: one per GPU; without CUDA, CPU processes (gloo)")
    parser.add_argument("--num-machines", type=int, default=1, help="machines in the job")
    parser.add_argument("--machine-rank", type=int, default=0, help="this machine's rank (0-based)")
    parser.add_argument("--dist-url", default="auto",
                        help="rendezvous URL of machine 0, tcp://host:port; 'auto' picks a free "
                             "local port (single machine only)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides as KEY VALUE pairs, e.g. SOLVER.BASE_LR 0.01")
    return parser


def setup_cfg(args: argparse.Namespace):
    """Load and check the config the command line describes (raises ConfigError)."""
    cfg = load_config(args.config_file or None, args.opts)  # reads TASK first, then the task's keys
    env = torchrun_env()
    world = env["WORLD_SIZE"] if env else args.num_gpus * args.num_machines
    try:
        get_task(cfg.TASK)
    except KeyError as e:
        raise ConfigError(f"TASK: {e.args[0]}") from None
    if not args.eval_only:  # fail before spawning workers
        from ..engine.lr_scheduler import build_lr_multiplier
        from ..engine.trainer import micro_batch_size

        micro_batch_size(cfg, world)
        build_lr_multiplier(cfg)
    return cfg


def _worker(args: argparse.Namespace) -> None:
    """Runs in every process of the job."""
    from ..engine.checkpoint import Checkpointer
    from ..engine.setup import default_setup
    from ..engine.trainer import Trainer, load_model_weights, resolve_device

    try:
        cfg = default_setup(setup_cfg(args), args)
        task = get_task(cfg.TASK)
        if args.eval_only:
            model = task.build_model(cfg).to(resolve_device(cfg.MODEL.DEVICE))
            checkpointer = Checkpointer(model, cfg.OUTPUT_DIR)
            path = checkpointer.get_checkpoint_file() if args.resume else None
            if path:
                checkpointer.load(path)  # strict, as --resume of training
            elif cfg.MODEL.WEIGHTS:
                load_model_weights(cfg, model, cfg.MODEL.WEIGHTS, task)
            else:
                raise ConfigError("--eval-only needs weights: set MODEL.WEIGHTS path/to/model.pth, or pass "
                                  f"--resume with a checkpoint in OUTPUT_DIR ({cfg.OUTPUT_DIR})")
            results = Trainer.test(cfg, model, task)
            _write_eval_results(cfg.OUTPUT_DIR, results)
            return
        trainer = Trainer(cfg, task)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
    except (ConfigError, CheckpointError, FileNotFoundError) as e:
        print(f"gn-det-train: error: {e}", file=sys.stderr)
        raise SystemExit(USER_ERROR) from None
    except FloatingPointError as e:
        logging.getLogger("gn_det").error("%s", e)
        print(f"gn-det-train: error: {e}", file=sys.stderr)
        raise SystemExit(TRAINING_FAILED) from None


def _write_eval_results(output_dir: str, results: dict) -> None:
    """``OUTPUT_DIR/eval_results.json``: ``{dataset: {kind: {metric: value}}}`` of an --eval-only run."""
    from ..utils import comm
    from ..utils.io import atomic_write_text

    if comm.is_main_process():
        path = os.path.join(output_dir, "eval_results.json")
        atomic_write_text(json.dumps(results, indent=2) + "\n", path)
        logging.getLogger("gn_det").info("Evaluation results written to %s", path)


def _check_launch_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.num_gpus < 1:
        parser.error(f"--num-gpus must be >= 1, got {args.num_gpus}")
    if args.num_machines < 1:
        parser.error(f"--num-machines must be >= 1, got {args.num_machines}")
    if not 0 <= args.machine_rank < args.num_machines:
        parser.error(f"--machine-rank must be in [0, {args.num_machines}), got {args.machine_rank}")
    if args.num_machines > 1 and args.dist_url in ("", "auto"):
        parser.error("--num-machines > 1 needs --dist-url tcp://<machine 0 address>:<port>, the same on "
                     "every machine")
    if torch.cuda.is_available() and args.num_gpus > torch.cuda.device_count() and torchrun_env() is None:
        parser.error(f"--num-gpus {args.num_gpus} but only {torch.cuda.device_count()} GPUs are visible")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 on success). User errors exit with code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.opts and args.opts[0] == "--":
        args.opts = args.opts[1:]
    _check_launch_args(parser, args)
    try:
        setup_cfg(args)
    except ConfigError as e:
        parser.exit(USER_ERROR, f"{parser.prog}: error: {e}\n")
    try:
        launch(_worker, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except mp.ProcessExitedException as e:
        return e.exit_code if e.exit_code and e.exit_code > 0 else TRAINING_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
