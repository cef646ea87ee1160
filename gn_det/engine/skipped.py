"""The training run's record of skipped samples (``DATALOADER.SKIP_BAD_SAMPLES``).

A train loader that drops unusable samples and lists them (``skipped``: ``(file_name, reason)``
pairs, as :class:`gn_det.data.common.SkipBadSamples` keeps them) is polled after every batch;
each new entry is tagged with the iteration and rank that met it. The list of the whole run goes
to ``OUTPUT_DIR/skipped_samples.json`` (atomically) at every checkpoint and at the end, and a
resumed run keeps the entries of iterations before its resume point, so the file and the final
log line count the run as one::

    {"num_skipped": 3, "num_files": 2, "files": ["a.jpg", "b.jpg"],
     "samples": [{"file_name": "a.jpg", "reason": "...", "iteration": 4, "rank": 0}, ...]}

A bad file met twice (two epochs) counts twice in ``num_skipped`` and once in ``num_files``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from ..utils import comm
from ..utils.io import atomic_write_text

__all__ = ["SKIPPED_FILE", "SkippedSampleLog"]

logger = logging.getLogger(__name__)
SKIPPED_FILE = "skipped_samples.json"


class SkippedSampleLog:
    """Collects the skipped samples of a training run (see the module docstring).

    Args:
        output_dir: where ``skipped_samples.json`` goes.
        enabled: whether skipping is on (DATALOADER.SKIP_BAD_SAMPLES): then the file and the
            final line are written even when nothing was skipped.
    """

    def __init__(self, output_dir: str, enabled: bool):
        self.path = os.path.join(output_dir, SKIPPED_FILE)
        self.enabled = enabled
        self.entries: list[dict[str, Any]] = []  # of all ranks, up to the last sync (main process)
        self._pending: list[dict[str, Any]] = []  # this rank's, since the last sync
        self._loader: Any = None
        self._seen = 0

    @property
    def active(self) -> bool:
        """Whether there is anything to account for: skipping is on, or a loader listed skips."""
        return self.enabled or bool(self.entries or self._pending)

    def resume(self, start_iter: int) -> None:
        """Keep the entries an earlier run recorded for iterations before ``start_iter``."""
        self.entries = []
        if not comm.is_main_process() or not os.path.isfile(self.path):
            return
        try:
            with open(self.path, encoding="utf-8") as f:
                samples = json.load(f)["samples"]
            self.entries = [s for s in samples if int(s["iteration"]) < start_iter]
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("%s cannot be read (%s); its earlier entries are not counted", self.path, e)

    def watch(self, loader: Any) -> None:
        """Poll ``loader`` from now on, if it lists skipped samples."""
        skipped = getattr(loader, "skipped", None)
        self._loader = loader if isinstance(skipped, list) else None
        self._seen = len(skipped) if self._loader is not None else 0

    def poll(self, iteration: int) -> None:
        """Tag the samples the loader skipped since the last call with ``iteration``."""
        if self._loader is None:
            return
        skipped = self._loader.skipped
        for file_name, reason in skipped[self._seen:]:
            self._pending.append({"file_name": str(file_name), "reason": str(reason), "iteration": iteration,
                                  "rank": comm.get_rank()})
        self._seen = len(skipped)

    def sync(self, collective: bool = True) -> None:
        """Bring every rank's new entries to the main process (``collective``: call on every rank;
        False, after a failure: the main process adds only its own)."""
        parts = comm.all_gather(self._pending) if collective else [self._pending]
        self._pending = []
        if comm.is_main_process():
            self.entries.extend(e for part in parts for e in part)
            self.entries.sort(key=lambda e: (e["iteration"], e["rank"]))

    def write(self) -> None:
        """Write ``skipped_samples.json`` (main process; only when :attr:`active`)."""
        if not comm.is_main_process() or not (self.active or os.path.isfile(self.path)):
            return
        files = sorted({e["file_name"] for e in self.entries})
        record = {"num_skipped": len(self.entries), "num_files": len(files), "files": files,
                  "samples": self.entries}
        atomic_write_text(json.dumps(record, indent=1) + "\n", self.path)

    def summary(self) -> str:
        """The final line: how many samples the run skipped, and where they are listed."""
        files = len({e["file_name"] for e in self.entries})
        if not self.entries:
            return "DATALOADER.SKIP_BAD_SAMPLES: no sample was skipped in training"
        return (f"DATALOADER.SKIP_BAD_SAMPLES: {len(self.entries)} sample(s) skipped in training, {files} distinct "
                f"file(s), listed in {self.path} (counted as training met them; the dataset summary at the start "
                f"counts only what was checked when the data was read)")
