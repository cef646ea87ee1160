"""Logging setup: console (through tqdm, so progress bars stay intact) and a log file per run."""

from __future__ import annotations

import logging
import os
import sys

from tqdm import tqdm

__all__ = ["setup_logger"]

_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"
_DATEFMT = "%m/%d %H:%M:%S"


class _TqdmHandler(logging.StreamHandler):
    """Writes records with ``tqdm.write`` so they print above a running progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never crash training
            self.handleError(record)


def setup_logger(output_dir: str | None = None, rank: int = 0, name: str = "gn_det",
                 level: int = logging.INFO) -> logging.Logger:
    """Configure the ``gn_det`` logger: console on rank 0 (warnings only on others), and
    ``{output_dir}/log.txt`` (``log.txt.rank{r}`` for other ranks).

    Calling it again replaces the handlers it added before (safe in tests and notebooks).
    """
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    for h in [h for h in logger.handlers if getattr(h, "_gn_det", False)]:
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter(_FORMAT, datefmt=_DATEFMT)
    console = _TqdmHandler()
    console.setLevel(level if rank == 0 else logging.WARNING)
    console.setFormatter(fmt)
    handlers: list[logging.Handler] = [console]
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        filename = os.path.join(output_dir, "log.txt" if rank == 0 else f"log.txt.rank{rank}")
        file_handler = logging.FileHandler(filename, mode="a", encoding="utf-8")
        file_handler.setLevel(level)
        file_handler.setFormatter(fmt)
        handlers.append(file_handler)
    for h in handlers:
        h._gn_det = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    return logger
