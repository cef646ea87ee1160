"""Per-process run setup: output folder, logging, seeding, the config as run."""

from __future__ import annotations

import logging
import os
import random
import sys
from typing import Any

import numpy as np
import torch

from ..utils.io import atomic_write_text
from ..utils import comm
from ..utils.logger import setup_logger

__all__ = ["default_setup", "seed_all_rng"]


def seed_all_rng(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_setup(cfg, args: Any = None):
    """Prepare this process for a run and return the config as run (frozen).

    * creates OUTPUT_DIR and logs to ``OUTPUT_DIR/log.txt`` (rank 0; others to ``log.txt.rank{r}``);
    * SEED < 0: draws one seed on rank 0 and shares it, so the saved config reproduces the run;
      each rank seeds its RNGs with ``SEED + rank`` (DDP copies rank 0's initial weights anyway);
    * writes ``OUTPUT_DIR/config.yaml`` (the full merged config, including that seed).
    """
    rank = comm.get_rank()
    out = cfg.OUTPUT_DIR
    if comm.is_main_process():
        os.makedirs(out, exist_ok=True)
    comm.synchronize()
    logger = setup_logger(out, rank)
    seed = cfg.SEED
    if seed < 0:
        seed = comm.broadcast_object(int.from_bytes(os.urandom(4), "little") % 2**31)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SEED = seed
    cfg.freeze()
    seed_all_rng(seed + rank)
    torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK)
    logger.info("Rank %d of %d; python %s; torch %s; seed %d", rank, comm.get_world_size(),
                sys.version.split()[0], torch.__version__, seed)
    if args is not None:
        logger.info("Command line arguments: %s", args)
    if comm.is_main_process():
        path = os.path.join(out, "config.yaml")
        atomic_write_text(cfg.dump(), path)
        logger.info("Full config saved to %s", path)
    logging.getLogger("gn_det").debug("Running with config:\n%s", cfg.dump())
    return cfg
