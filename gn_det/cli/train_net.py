"""Train or evaluate a gn_det model: ``gn-det-train`` / ``python tools/train_net.py``.

detectron2's command line::

    gn-det-train --config-file configs/X.yaml [--num-gpus N] [--resume] [--eval-only] \\
        [--num-machines M --machine-rank R --dist-url tcp://host:port] [KEY VALUE ...]

``--num-gpus N`` starts N local processes (one per GPU; on a machine without CUDA, N CPU
processes joined with gloo). Under ``torchrun`` the process count comes from torchrun instead.
``--eval-only`` evaluates MODEL.WEIGHTS (or, with ``--resume``, the last checkpoint in
OUTPUT_DIR) on DATASETS.TEST and writes ``OUTPUT_DIR/eval_results.json``.

A run that fails prints one ``gn-det-train: error:`` line naming the key, file or rank and what to
do; the full traceback goes to ``OUTPUT_DIR/log.txt`` (``log.txt.rank<r>`` for other ranks) only.
Exit codes:

* 0: done;
* 1: an unexpected error (a bug: please report it with the traceback from log.txt);
* 2: a user error: command line, config (missing file, unknown key, bad value, batch not
  divisible, unknown dataset, NUM_CLASSES below the dataset's), input files (MODEL.WEIGHTS missing,
  a directory or unreadable; a bad image, video or annotation without DATALOADER.SKIP_BAD_SAMPLES),
  an OUTPUT_DIR that cannot be written, machines started inconsistently or a rendezvous that timed out;
* 3: training failed: non-finite loss, disk full, a rank of the job died, was killed or stopped
  answering (after ``--dist-timeout``);
* 130: interrupted (Ctrl-C).

CPU threads: each local process gets (usable cores // processes) threads and
``OMP_WAIT_POLICY=PASSIVE`` (logged at the start of log.txt); ``OMP_NUM_THREADS``,
``OMP_WAIT_POLICY`` or ``GN_DET_THREAD_POLICY=off`` override it (:mod:`gn_det.utils.threads`).

Multi-machine: ``--rendezvous-timeout`` and ``--dist-timeout`` (seconds; or the environment
variables ``GN_DET_RENDEZVOUS_TIMEOUT`` and ``GN_DET_DIST_TIMEOUT``; default 1800 each) bound how
long processes wait for each other at the start and in each collective.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import tempfile
from datetime import timedelta
from typing import Sequence

# Nothing here imports torch at module level: --help and config errors answer at once, and the
# thread policy (gn_det.utils.threads) is set before torch starts.
from .. import tasks  # noqa: F401  (registers the built-in tasks and the installed plugins' tasks)
from ..config import ConfigError, load_config
from ..engine.launch import (DIST_TIMEOUT_ENV, RENDEZVOUS_TIMEOUT_ENV, RunFailure, describe_exception, launch,
                             timeout_setting, torchrun_env)
from ..engine.rank_failures import EXIT_TRAINING_FAILED, EXIT_USER_ERROR, exception_chain
from ..engine.task import get_task
from ..utils.threads import apply_thread_policy, thread_policy_line

__all__ = ["build_parser", "main", "setup_cfg", "describe_failure"]

logger = logging.getLogger("gn_det.train_net")
USER_ERROR = EXIT_USER_ERROR  # 2
TRAINING_FAILED = EXIT_TRAINING_FAILED  # 3


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (detectron2's flags, then KEY VALUE overrides)."""
    parser = argparse.ArgumentParser(
        prog="gn-det-train",
        description="Train or evaluate a gn_det model (detection, video, ...) from a YAML config.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n"
               "  gn-det-train --config-file configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml\n"
               "  gn-det-train --config-file cfg.yaml --num-gpus 8 SOLVER.IMS_PER_BATCH 16 SOLVER.BASE_LR 0.02\n"
               "  gn-det-train --config-file configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml --eval-only \\\n"
               "      MODEL.WEIGHTS output/mask_rcnn_R_18_FPN_gn_demo/model_final.pth\n"
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
    parser.add_argument("--rendezvous-timeout", type=float, default=None, metavar="SECONDS",
                        help=f"how long the processes wait for each other at the start (default: "
                             f"${RENDEZVOUS_TIMEOUT_ENV}, else 1800)")
    parser.add_argument("--dist-timeout", type=float, default=None, metavar="SECONDS",
                        help=f"how long a rank waits in a collective for a rank that stopped answering "
                             f"before the job ends (default: ${DIST_TIMEOUT_ENV}, else 1800)")
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
    from ..engine.replicas import check_replicas_agree
    from ..engine.trainer import Trainer, load_model_weights, resolve_device

    cfg = default_setup(setup_cfg(args), args)
    logger.info(thread_policy_line(apply_thread_policy(_local_processes(args))))
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
    check_replicas_agree(trainer.unwrapped_model)


# ----------------------------------------------------------------------------- failures
def describe_failure(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line a user reads for an exception that ended a run (in any
    process; the traceback goes to the log file)."""
    from ..checkpoint.io import CheckpointError

    if isinstance(exc, (ConfigError, CheckpointError, FileNotFoundError) + _data_errors()):
        return USER_ERROR, str(exc)
    if isinstance(exc, FloatingPointError):
        return TRAINING_FAILED, str(exc)
    found = _file_system_failure(exc)
    return found if found is not None else describe_exception(exc)


def _data_errors() -> tuple[type[BaseException], ...]:
    """The errors naming a bad input file the user fixes (or skips with DATALOADER.SKIP_BAD_SAMPLES):
    an unreadable image or video, a bad annotation or list file. Imported only when a run failed."""
    from ..data.coco_dataset import DatasetError
    from ..data.image_folder import ImageFolderError
    from ..data.video.annotations import AnnotationError
    from ..data.video.decode import VideoDecodeError
    from ..utils.image_io import ImageReadError

    return DatasetError, ImageFolderError, AnnotationError, VideoDecodeError, ImageReadError


def _file_system_failure(exc: BaseException) -> tuple[int, str] | None:
    """A full disk or an unwritable file anywhere in the exception chain (libraries such as
    torch.save wrap the OSError in an error of their own that does not say it)."""
    chain = list(exception_chain(exc))
    # The file being written: the OSError's, else the one the atomic writer names.
    target = next((str(e.filename) for e in chain if isinstance(e, OSError) and e.filename), None) or next(
        (str(e.target_file) for e in chain if getattr(e, "target_file", None)), None)
    for e in chain:
        if not isinstance(e, OSError):
            continue
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            what = "No space left on device" if e.errno == errno.ENOSPC else "Disk quota exceeded"
            where = target or "OUTPUT_DIR"
            return TRAINING_FAILED, (f"{what} while writing {where}: free space on that disk (or set OUTPUT_DIR "
                                     f"to a disk with room), then rerun with --resume; the files written before "
                                     f"are intact")
        if e.errno == errno.EROFS:
            return USER_ERROR, (f"cannot write {target or 'OUTPUT_DIR'}: read-only file system; set OUTPUT_DIR "
                                f"to a folder on a writable disk")
        if e.errno in (errno.EACCES, errno.EPERM):
            return USER_ERROR, (f"permission denied: {target or e}; set OUTPUT_DIR to a folder you can write, "
                                f"or fix the permissions of that file")
    return None


def _check_output_dir(path: str, name: str = "OUTPUT_DIR") -> None:
    """Fail before any process starts when OUTPUT_DIR (or the folder ``name`` sets) cannot be created
    or written to."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ConfigError(f"{name} {path!r} is not writable ({e.strerror}); set {name} to a folder "
                          f"you can write") from None


def _timeouts(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[timedelta, timedelta]:
    """(collective, rendezvous) timeouts from the flags or the environment."""
    try:
        return (timeout_setting(args.dist_timeout, DIST_TIMEOUT_ENV, "--dist-timeout"),
                timeout_setting(args.rendezvous_timeout, RENDEZVOUS_TIMEOUT_ENV, "--rendezvous-timeout"))
    except ValueError as e:
        parser.error(str(e))


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
    if args.num_gpus == 1 or torchrun_env() is not None:
        return
    import torch  # only here: one process needs no GPU count, and torch takes seconds to import

    if torch.cuda.is_available() and args.num_gpus > torch.cuda.device_count():
        parser.error(f"--num-gpus {args.num_gpus} but only {torch.cuda.device_count()} GPUs are visible")


def _local_processes(args: argparse.Namespace) -> int:
    """Processes of the job on this machine (they share its cores)."""
    env = torchrun_env()
    return env["LOCAL_WORLD_SIZE"] if env else args.num_gpus


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 on success. A failure prints one line and exits (SystemExit) with
    the code the module documents: 2 for user errors, 3 when training failed, 1 for a bug."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.opts and args.opts[0] == "--":
        args.opts = args.opts[1:]
    apply_thread_policy(_local_processes(args))  # before anything imports torch (gn_det.utils.threads)
    _check_launch_args(parser, args)
    dist_timeout, rendezvous_timeout = _timeouts(parser, args)
    try:
        cfg = setup_cfg(args)
        _check_output_dir(cfg.OUTPUT_DIR)
    except ConfigError as e:
        parser.exit(USER_ERROR, f"{parser.prog}: error: {e}\n")
    try:
        launch(_worker, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,), timeout=dist_timeout, rendezvous_timeout=rendezvous_timeout,
               describe_failure=describe_failure)
    except RunFailure as e:
        parser.exit(e.code, f"{parser.prog}: error: {e.message}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
