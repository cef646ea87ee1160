"""Progress display (gn_det.utils.progress): a bar where the terminal reports 0 columns, and log
lines a log file can show."""

import logging
import os
import select
import sys

import pytest
from tqdm import tqdm

from gn_det.utils.progress import FALLBACK_COLUMNS, LoggedProgress, progress_bar, terminal_columns


def _lines_at_half(master: int) -> list[str]:
    """The texts drawn for "50%" on the terminal (all output read, split at carriage returns)."""
    chunks = []
    while select.select([master], [], [], 0.2)[0]:
        chunks.append(os.read(master, 65536))
    segments = b"".join(chunks).decode("utf-8", "replace").replace("\n", "\r").split("\r")
    return [seg for seg in segments if "50%" in seg]


@pytest.fixture
def unsized_terminal():
    """A pseudo-terminal nobody gave a size, as under ``script``: it reports 0 columns."""
    master, slave = os.openpty()
    file = os.fdopen(slave, "w", encoding="utf-8")
    yield master, file
    file.close()
    os.close(master)


@pytest.mark.parametrize("dynamic", [False, True])
def test_bar_keeps_a_fixed_width_where_the_terminal_reports_zero_columns(unsized_terminal, monkeypatch, dynamic):
    master, file = unsized_terminal
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(sys, "stderr", file)  # where bars go by default: tqdm asks its width
    assert terminal_columns() == 0
    # tqdm alone trims its line to the 0 columns: nothing shows
    plain = tqdm(total=10, dynamic_ncols=dynamic, ascii=True, mininterval=0)
    plain.update(5)
    plain.close()
    assert _lines_at_half(master) == []
    bar = progress_bar(total=10, dynamic_ncols=dynamic, ascii=True, mininterval=0)
    bar.update(5)
    bar.close()
    line = _lines_at_half(master)[-1]
    assert len(line) == FALLBACK_COLUMNS and line.startswith(" 50%|#")
    assert line.count("#") > 10  # half of the bar drawn


def test_bar_width_follows_columns_and_keeps_an_explicit_ncols(unsized_terminal, monkeypatch):
    master, file = unsized_terminal
    monkeypatch.setenv("COLUMNS", "60")
    bar = progress_bar(total=4, file=file, ascii=True, mininterval=0)
    assert bar.ncols == 60
    bar.close()
    bar = progress_bar(total=4, file=file, ncols=70, ascii=True, mininterval=0)
    assert bar.ncols == 70
    bar.close()


def test_a_file_that_is_no_terminal_is_left_to_tqdm(tmp_path):
    with open(tmp_path / "out.txt", "w") as f:
        assert terminal_columns(f) is None
        bar = progress_bar(total=3, file=f)
        assert bar.ncols is None
        bar.close()


def test_logged_progress_writes_start_progress_and_done_lines(caplog):
    log = logging.getLogger("gn_det.test_progress")
    with caplog.at_level(logging.INFO, logger=log.name):
        items = list(LoggedProgress(log, "synthetic COCO 'x'", 4, "images", every_s=0.0).track("abcd"))
    assert items == ["a", "b", "c", "d"]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "synthetic COCO 'x': 4 images ..."
    assert [m.split(" (")[0] for m in messages[1:4]] == [f"synthetic COCO 'x': {n}/4 images" for n in (1, 2, 3)]
    assert messages[1].split(" (")[1].startswith("25%)")
    assert messages[-1].startswith("synthetic COCO 'x': 4 images done in ")
    assert len(messages) == 5


def test_logged_progress_waits_every_s_between_lines(caplog):
    log = logging.getLogger("gn_det.test_progress")
    with caplog.at_level(logging.INFO, logger=log.name):
        list(LoggedProgress(log, "indexing", 1000, every_s=3600.0).track(range(1000)))
    assert len(caplog.records) == 2  # start and done only
