"""Whether the model replicas of a distributed job ended with the same parameters.

DDP keeps replicas identical by construction (same initial weights, all-reduced gradients, same
optimizer); a difference means a rank trained on something else (a buffer-driven branch, a
non-deterministic op in the update, a bug). Checked once at the end of training, cheaply: a hash
of the parameters' bytes, gathered from every rank.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Iterable

import torch

from ..utils import comm

__all__ = ["parameter_fingerprint", "check_replicas_agree"]

logger = logging.getLogger(__name__)


def parameter_fingerprint(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """16 hex digits of a SHA-256 over the names, dtypes, shapes and exact bytes of the tensors
    (e.g. ``model.named_parameters()``), in name order."""
    digest = hashlib.sha256()
    for name, t in sorted(named_tensors, key=lambda item: item[0]):
        t = t.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def check_replicas_agree(model: torch.nn.Module) -> bool:
    """Compare ``model``'s parameters across ranks (call on every rank); logs the fingerprint on
    each rank, a warning naming the ranks that differ from rank 0. True when all agree.

    Buffers are left out: BN running statistics legitimately differ from rank to rank.
    """
    world = comm.get_world_size()
    if world == 1:
        return True
    prints = comm.all_gather(parameter_fingerprint(model.named_parameters()))
    differ = [r for r, p in enumerate(prints) if p != prints[0]]
    if not differ:
        logger.info("Parameters identical on all %d ranks (fingerprint %s)", world, prints[comm.get_rank()])
        return True
    logger.warning("Parameters differ across ranks: rank(s) %s differ from rank 0 (fingerprints %s); this "
                   "rank's is %s", differ, prints, prints[comm.get_rank()])
    return False
