"""Progress display shared by gn_det: tqdm bars that survive a terminal without a width, and log
lines for long steps (a log file shows no bar).

Every progress bar of gn_det is made by :func:`progress_bar`. A terminal that reports a size of 0
(``script``, some CI consoles) makes tqdm print nothing at all: it trims the line to 0 columns and
takes 0 lines as no room for a bar. The factory then uses ``$COLUMNS`` / ``$LINES`` or a fixed size.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator, TypeVar

from tqdm import tqdm

__all__ = ["FALLBACK_COLUMNS", "FALLBACK_LINES", "LoggedProgress", "progress_bar", "terminal_columns",
           "terminal_size"]

FALLBACK_COLUMNS = 100  # bar width where the terminal reports none
FALLBACK_LINES = 20  # bars shown at once where it reports no height (tqdm's own default)
T = TypeVar("T")


def terminal_size(file: Any = None) -> tuple[int, int] | None:
    """(columns, lines) the terminal of ``file`` (default stderr) reports; None when it is not a terminal.

    A terminal may report 0 x 0 (a pseudo-terminal nobody sized, as under ``script``).
    """
    file = sys.stderr if file is None else file
    try:
        size = os.get_terminal_size(file.fileno())
    except (AttributeError, OSError, ValueError):  # not a terminal, or a file object without a descriptor
        return None
    return size.columns, size.lines


def terminal_columns(file: Any = None) -> int | None:
    """The width the terminal of ``file`` (default stderr) reports; None when it is not a terminal."""
    size = terminal_size(file)
    return None if size is None else size[0]


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, "")) or default
    except ValueError:
        return default


def progress_bar(iterable: Iterable[T] | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` that still shows where the terminal reports a size of 0.

    tqdm trims its line to 0 columns there, and takes 0 lines as room for no bar at all; this uses
    ``$COLUMNS`` / ``$LINES`` or a fixed width and height instead.

    Args:
        iterable: what to iterate over (or None and ``total=`` with ``update()``).
        **kwargs: tqdm's arguments (``desc``, ``total``, ``unit``, ``disable``, ``dynamic_ncols`` ...).
            An explicit ``ncols`` / ``nrows`` is kept.
    """
    size = terminal_size(kwargs.get("file"))
    if size is not None and 0 in size:
        columns, lines = size
        if kwargs.get("ncols") is None and columns == 0:
            kwargs["ncols"] = _env_int("COLUMNS", FALLBACK_COLUMNS)
            kwargs["dynamic_ncols"] = False  # it would read the 0 again at every refresh
        if kwargs.get("nrows") is None and lines == 0:
            kwargs["nrows"] = _env_int("LINES", FALLBACK_LINES)
    return tqdm(iterable, **kwargs)


class LoggedProgress:
    """Log lines for a long loop (``what: 120/400 images (30%), 4.1 s``): a start line, one every
    ``every_s`` seconds and a done line, so a log file shows progress where the console shows a bar.

    Args:
        logger: where the lines go (INFO).
        what: the name of the step, e.g. ``"synthetic COCO 'coco_synth_train'"``.
        total: items expected.
        unit: the items' name (plural), e.g. ``"images"``.
        every_s: seconds between lines.
    """

    def __init__(self, logger: logging.Logger, what: str, total: int, unit: str = "items",
                 every_s: float = 5.0) -> None:
        self.logger, self.what, self.total, self.unit, self.every_s = logger, what, total, unit, every_s
        self.done = 0
        self._start = self._last = time.perf_counter()
        logger.info("%s: %d %s ...", what, total, unit)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items; log a line if ``every_s`` passed since the last one."""
        self.done += n
        now = time.perf_counter()
        if now - self._last >= self.every_s and self.done < self.total:
            self._last = now
            self.logger.info("%s: %d/%d %s (%.0f%%), %.1f s", self.what, self.done, self.total, self.unit,
                             100.0 * self.done / max(1, self.total), now - self._start)

    def close(self) -> None:
        """Log the done line."""
        self.logger.info("%s: %d %s done in %.1f s", self.what, self.done, self.unit,
                         time.perf_counter() - self._start)

    def track(self, iterable: Iterable[T]) -> Iterator[T]:
        """Yield from ``iterable``, counting each item, and log the done line at the end."""
        for item in iterable:
            yield item
            self.update()
        self.close()
