"""Toy tasks that fail on one rank, for the launcher's failure tests (not a test module itself).

Used through the real CLI as ``TASK launch_fault_tasks:<Class>`` with ``tests/`` on PYTHONPATH.
"""

from __future__ import annotations

from engine_toy_task import ToyLoader, ToyTask
from gn_det.utils import comm

FAILING_RANK = 1
FAILING_BATCH = 3


class _RaisingLoader(ToyLoader):
    def __iter__(self):
        for b, batch in enumerate(super().__iter__()):
            if comm.get_rank() == FAILING_RANK and b == FAILING_BATCH:
                raise ValueError(f"sample {batch['ids'][0]} is corrupt (raised on purpose by rank {FAILING_RANK})")
            yield batch


class RaisingRankToyTask(ToyTask):
    """Rank 1's loader raises a ValueError at its 4th micro-batch; the other ranks are fine."""

    def build_train_loader(self, cfg, micro_batch_size: int, skip_batches: int = 0):
        return _RaisingLoader(micro_batch_size, skip_batches, self.seen, None)
