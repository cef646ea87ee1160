"""Video lists in the formats users bring, read into ``VideoRecord(path, label)`` rows.

Formats (``format="auto"`` tells them apart from the first line):

``"kinetics"``: the official Kinetics CSVs, header ``label,youtube_id,time_start,time_end,split``
    (Kinetics-400 adds ``is_cc`` and names its validation split ``validate``; extra columns are
    ignored, the column order does not matter). The video of a row is
    ``{video_root}/{split folder}/[{label}/]{youtube_id}_{time_start:06d}_{time_end:06d}.mp4``:
    the split folder is the first of ``val``/``validate`` (either spelling in the CSV) that exists,
    else the split's own name; the file is looked for in a class sub-folder (the label as written,
    then with ``_`` for spaces, as some downloaders write it), then flat in the split folder, with
    the extensions ``.mp4``, ``.mkv``, ``.webm``. When none exists the row keeps the path the
    layout suggests (class sub-folders if the split folder has sub-folders, else flat) and the
    loader or ``gn-det-check-videos`` reports it missing. Without a ``split`` column the CSV's
    file name (``train.csv`` -> ``train``) is the split. A CSV without a ``label`` column (the
    unlabeled Kinetics-700 test split) is refused: there is nothing to train or score on.
``"list"``: PySlowFast's ``{train,val,test}.csv``: no header, one ``path<sep>label`` per line,
    ``label`` a non-negative integer class index, ``sep`` a space by default
    (DATA.PATH_LABEL_SEPARATOR). Lines are split on the LAST separator, so paths containing the
    separator (spaces) work, which PySlowFast gets wrong. Trailing whitespace is dropped.
``"csv"``: a CSV with a header holding ``path`` and ``label`` columns (others are ignored), read
    with the csv module, so quoted fields with commas or spaces work.

Relative paths are joined to ``video_root``. Its default is the folder above the list when the
list sits in an ``annotations/`` folder (the Kinetics layout), else the list's own folder.

Classes: the sorted label names, a label's class index being its position in that list. When every
label of a ``"list"`` or ``"csv"`` file is a non-negative integer, the labels are class indices
already and are kept: the classes are then ``["0", "1", ..., str(max label)]``, so the class index
of label ``"7"`` is 7, not its position among sorted strings.

Errors (:class:`AnnotationError`) name the file and, for a bad row, its line number. With
``errors="collect"`` bad rows are skipped and listed in :attr:`VideoList.problems` instead (the
file-level errors — missing or empty file, unknown format, missing columns — still raise).

Kinetics layout under ``$GN_DET_DATASETS`` (:func:`find_kinetics_root`, :func:`load_kinetics`)::

    $GN_DET_DATASETS/kinetics400/           (or kinetics600, kinetics700, any folder name)
        annotations/train.csv               the official CSVs, unchanged
        annotations/validate.csv | val.csv
        annotations/test.csv
        train/[<class name>/]<youtube_id>_<start:06d>_<end:06d>.mp4
        val/ | validate/  (same)
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from gn_det.utils.io import atomic_write_text
from gn_det.data.catalog import DATASETS_ENV, datasets_root
from gn_det.data.video.list_formats import FORMATS  # torch-free, for command-line choices

__all__ = [
    "AnnotationError",
    "VideoRecord",
    "VideoList",
    "FORMATS",
    "KINETICS_COLUMNS",
    "detect_format",
    "load_video_list",
    "write_video_list",
    "find_kinetics_root",
    "kinetics_split_files",
    "load_kinetics",
]

KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm")
# Split names as written in CSVs -> folder names to look for, first existing wins.
_SPLIT_FOLDERS = {"val": ("val", "validate"), "validate": ("validate", "val")}
_INT = re.compile(r"^\d+$")


class AnnotationError(ValueError):
    """A video list cannot be read; the message names the file (and line) and the fix."""


@dataclass(frozen=True)
class VideoRecord:
    """One video: its path and its label (a class name, or an integer index as a string).

    ``line`` is the row's line number in its list (1-based; 0 when not from a file); it does not
    take part in equality.
    """

    path: str
    label: str
    line: int = field(default=0, compare=False)


@dataclass
class VideoList:
    """The rows of a video list. Unpacks as ``records, classes = load_video_list(...)``.

    Attributes:
        records: the good rows, in file order.
        classes: class names; the class index of a record is ``classes.index(record.label)``.
        format: ``"kinetics"``, ``"list"`` or ``"csv"``.
        source: the list file.
        sep: the list format's separator.
        header: the header fields as written (csv formats), else None.
        rows: the raw row of each record (csv fields, or the list format's line), parallel to
            ``records``, so a cleaned copy can be written in the same format.
        problems: ``(line, message)`` of each skipped row (``errors="collect"``).
    """

    records: list[VideoRecord]
    classes: list[str]
    format: str
    source: str
    sep: str = " "
    header: list[str] | None = None
    rows: list = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)

    def __iter__(self) -> Iterator:
        yield self.records
        yield self.classes

    def __len__(self) -> int:
        return len(self.records)

    def class_index(self) -> dict[str, int]:
        """Label -> class index."""
        return {c: i for i, c in enumerate(self.classes)}


# ----------------------------------------------------------------------------- reading helpers
def _read_text(path: Path) -> str:
    if not path.exists():
        raise AnnotationError(f"video list not found: {path}")
    if not path.is_file():
        raise AnnotationError(f"video list {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path} is not UTF-8 text ({e}); re-save it as UTF-8") from None
    if not text.strip():
        raise AnnotationError(f"video list {path} is empty; it needs one row per video")
    return text


def _first_line(text: str) -> tuple[int, str]:
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            return number, line
    return 0, ""


def _split_list_line(line: str, sep: str) -> tuple[str, str] | None:
    """(path, label) split on the last ``sep``, or None if the line has no separator."""
    text = line.rstrip()
    if sep not in text:
        return None
    path, label = text.rsplit(sep, 1)
    return path.rstrip(), label.strip()


def _header_fields(line: str) -> list[str]:
    return [f.strip().lower() for f in next(csv.reader([line]), [])]


def detect_format(path: str | os.PathLike, sep: str = " ") -> str:
    """``"kinetics"``, ``"csv"`` or ``"list"`` from the first non-empty line of ``path``.

    Raises:
        AnnotationError: missing/empty file, or a first line that fits none of the formats.
    """
    p = Path(path)
    number, line = _first_line(_read_text(p))
    return _detect(p, number, line, sep)


def _detect(p: Path, number: int, line: str, sep: str) -> str:
    fields = _header_fields(line)
    if set(fields) & {"youtube_id", "time_start", "time_end"}:
        return "kinetics"
    if "path" in fields:
        return "csv"
    parts = _split_list_line(line, sep)
    if parts is not None and parts[0] and _INT.match(parts[1]):
        return "list"
    if "label" in fields:
        return "csv"
    raise AnnotationError(
        f"{p}:{number}: cannot tell the list format from the first line {line!r}: it is neither a "
        f"Kinetics header (label,youtube_id,time_start,time_end,split), a CSV header with 'path' "
        f"and 'label' columns, nor 'path{sep}label' with an integer label"
        f"{_separator_hint(line, sep)}; pass format= (--format) and sep= (--sep)")


def _separator_hint(line: str, sep: str) -> str:
    for other in ("\t", ",", " ", ";"):
        if other == sep:
            continue
        parts = _split_list_line(line, other)
        if parts is not None and parts[0] and _INT.match(parts[1]):
            return f" (the line looks separated by {other!r}: pass sep={other!r})"
    return ""


def _default_video_root(list_path: Path) -> Path:
    parent = list_path.resolve().parent
    return parent.parent if parent.name == "annotations" else parent


def _join(root: Path, path: str) -> str:
    return path if os.path.isabs(path) else str(root / path)


class _Collector:
    """Raises bad-row errors, or collects them when ``errors == "collect"``."""

    def __init__(self, source: Path, errors: str):
        if errors not in ("raise", "collect"):
            raise ValueError(f"errors must be 'raise' or 'collect', got {errors!r}")
        self.source, self.errors = source, errors
        self.problems: list[tuple[int, str]] = []

    def bad(self, line: int, message: str) -> None:
        if self.errors == "raise":
            raise AnnotationError(f"{self.source}:{line}: {message}")
        self.problems.append((line, message))


# ----------------------------------------------------------------------------- the formats
def _read_list(p: Path, text: str, root: Path, sep: str, out: _Collector):
    records, rows = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = _split_list_line(line, sep)
        if parts is None or not parts[0]:
            out.bad(number, f"expected 'path{sep}label' (separator {sep!r}), got {line!r}"
                            f"{_separator_hint(line, sep)}")
            continue
        path, label = parts
        if not _INT.match(label):
            out.bad(number, f"label {label!r} is not a non-negative integer class index in "
                            f"{line!r}{_separator_hint(line, sep)}")
            continue
        records.append(VideoRecord(_join(root, path), str(int(label)), number))
        rows.append(line.rstrip("\r\n"))
    return records, rows, None


def _csv_rows(p: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank CSV record, the header included."""
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise AnnotationError(f"{p}:{reader.line_num}: not valid CSV ({e}); fix or remove the line") from None
        if any(f.strip() for f in fields):
            yield start, fields
        start = reader.line_num + 1


def _column_map(p: Path, line: int, header: list[str], required: Sequence[str], fmt: str) -> dict[str, int]:
    names = [h.strip().lower() for h in header]
    missing = [c for c in required if c not in names]
    if missing:
        raise AnnotationError(
            f"{p}:{line}: the {fmt} header {','.join(header)!r} lacks the column(s) "
            f"{', '.join(missing)}; it needs {','.join(required)}")
    return {n: i for i, n in reversed(list(enumerate(names)))}  # first occurrence wins


def _read_csv(p: Path, text: str, root: Path, out: _Collector):
    rows_iter = _csv_rows(p, text)
    header_line, header = next(rows_iter)
    cols = _column_map(p, header_line, header, ("path", "label"), "path,label CSV")
    records, rows = [], []
    for number, fields in rows_iter:
        if len(fields) != len(header):
            out.bad(number, f"{len(fields)} fields where the header has {len(header)} "
                            f"({','.join(header)}): {fields!r}")
            continue
        path, label = fields[cols["path"]].strip(), fields[cols["label"]].strip()
        if not path or not label:
            out.bad(number, f"empty {'path' if not path else 'label'} in {fields!r}")
            continue
        records.append(VideoRecord(_join(root, path), label, number))
        rows.append(fields)
    return records, rows, header


class _KineticsPaths:
    """Finds each row's video file under ``root`` (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = root
        self._split_dirs: dict[str, Path] = {}
        self._has_subdirs: dict[Path, bool] = {}

    def split_dir(self, split: str) -> Path:
        if split not in self._split_dirs:
            names = _SPLIT_FOLDERS.get(split, (split,))
            found = [self.root / n for n in names if (self.root / n).is_dir()]
            self._split_dirs[split] = found[0] if found else self.root / names[0]
        return self._split_dirs[split]

    def find(self, split: str, label: str, stem: str) -> str:
        folder = self.split_dir(split)
        label_dirs = [folder / label] + ([folder / label.replace(" ", "_")] if " " in label else [])
        for d in label_dirs + [folder]:
            for ext in VIDEO_EXTENSIONS:
                candidate = d / f"{stem}{ext}"
                if candidate.is_file():
                    return str(candidate)
        if folder not in self._has_subdirs:
            self._has_subdirs[folder] = False
            if folder.is_dir():
                with os.scandir(folder) as entries:
                    self._has_subdirs[folder] = any(e.is_dir() for e in entries)
        return str((label_dirs[0] if self._has_subdirs[folder] else folder) / f"{stem}.mp4")


def _time(value: str) -> int:
    t = float(value)
    if not (math.isfinite(t) and t >= 0):
        raise ValueError(value)
    return int(t)


def _read_kinetics(p: Path, text: str, root: Path, split_filter: str | None, out: _Collector):
    rows_iter = _csv_rows(p, text)
    header_line, header = next(rows_iter)
    cols = _column_map(p, header_line, header, KINETICS_COLUMNS, "Kinetics")
    default_split = p.stem.lower()
    finder = _KineticsPaths(root)
    records, rows = [], []
    for number, fields in rows_iter:
        if len(fields) < len(header):
            out.bad(number, f"{len(fields)} fields where the header has {len(header)} "
                            f"({','.join(header)}): {fields!r}")
            continue
        label, ytid = fields[cols["label"]].strip(), fields[cols["youtube_id"]].strip()
        if not label or not ytid:
            out.bad(number, f"empty {'label' if not label else 'youtube_id'} in {fields!r}")
            continue
        try:
            start, end = _time(fields[cols["time_start"]]), _time(fields[cols["time_end"]])
        except ValueError:
            out.bad(number, f"time_start/time_end must be non-negative numbers, got "
                            f"{fields[cols['time_start']]!r}/{fields[cols['time_end']]!r}")
            continue
        split = fields[cols["split"]].strip().lower() if "split" in cols else default_split
        if split_filter is not None and _norm_split(split) != _norm_split(split_filter):
            continue
        path = finder.find(split, label, f"{ytid}_{start:06d}_{end:06d}")
        records.append(VideoRecord(path, label, number))
        rows.append(fields)
    return records, rows, header


def _norm_split(split: str) -> str:
    split = split.strip().lower()
    return "val" if split in ("val", "validate", "validation") else split


def _classes(records: list[VideoRecord], fmt: str) -> list[str]:
    labels = {r.label for r in records}
    if fmt != "kinetics" and labels and all(_INT.match(lb) for lb in labels):
        return [str(i) for i in range(max(int(lb) for lb in labels) + 1)]
    return sorted(labels)


def load_video_list(path: str | os.PathLike, *, format: str = "auto", video_root: str | os.PathLike | None = None,
                    sep: str = " ", split: str | None = None, errors: str = "raise") -> VideoList:
    """Read a video list (see the module docstring for the formats and the path rules).

    Args:
        path: the list file.
        format: ``"auto"`` (from the first line), ``"kinetics"``, ``"list"`` or ``"csv"``.
        video_root: folder relative paths (and the Kinetics split folders) are under.
        sep: the list format's path/label separator (PySlowFast's DATA.PATH_LABEL_SEPARATOR).
        split: Kinetics format: keep only rows of this split (``val`` and ``validate`` match).
        errors: ``"raise"`` on the first bad row, or ``"collect"`` bad rows in ``problems``.

    Raises:
        AnnotationError: missing/empty file, unknown format, missing columns, a header with no
            rows, or (``errors="raise"``) a bad row; the message names the file and line.
    """
    p = Path(path)
    if not sep:
        raise AnnotationError(f"{p}: the separator must not be empty")
    text = _read_text(p)
    out = _Collector(p, errors)
    number, first = _first_line(text)
    fmt = _detect(p, number, first, sep) if format == "auto" else format
    if fmt not in FORMATS:
        raise AnnotationError(f"{p}: unknown list format {format!r}; use one of auto, {', '.join(FORMATS)}")
    root = Path(video_root) if video_root is not None else _default_video_root(p)
    if fmt == "list":
        records, rows, header = _read_list(p, text, root, sep, out)
    elif fmt == "csv":
        records, rows, header = _read_csv(p, text, root, out)
    else:
        records, rows, header = _read_kinetics(p, text, root, split, out)
    if not records and not out.problems:
        what = f"no rows of split {split!r}" if split is not None else "no rows"
        raise AnnotationError(f"{p}: {what} after the header; it needs one row per video")
    return VideoList(records, _classes(records, fmt), fmt, str(p), sep, header, rows, out.problems)


def write_video_list(video_list: VideoList, path: str | os.PathLike, keep: Iterable[int] | None = None) -> Path:
    """Write (atomically) the rows ``keep`` (indices into ``records``; all by default) of
    ``video_list`` to ``path`` in its own format: same header, same fields, same separator."""
    keep = range(len(video_list.records)) if keep is None else sorted(set(keep))
    buf = io.StringIO()
    if video_list.format == "list":
        for i in keep:
            buf.write(video_list.rows[i] + "\n")
    else:
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(video_list.header)
        for i in keep:
            writer.writerow(video_list.rows[i])
    return atomic_write_text(buf.getvalue(), path)


# ----------------------------------------------------------------------------- Kinetics layout
def find_kinetics_root(name: str = "kinetics400") -> Path:
    """``$GN_DET_DATASETS/{name}``, checked to hold an ``annotations/`` folder.

    Raises:
        FileNotFoundError: naming the folder looked at and the layout expected.
    """
    root = datasets_root() / name
    if not (root / "annotations").is_dir():
        raise FileNotFoundError(
            f"Kinetics dataset {name!r} not found: no folder {(root / 'annotations').resolve()}. "
            f"Expected {name}/annotations/{{train,validate|val,test}}.csv and "
            f"{name}/{{train,val|validate}}/[<class>/]<youtube_id>_<start:06d>_<end:06d>.mp4 under "
            f"{DATASETS_ENV} (now {os.environ.get(DATASETS_ENV, 'unset, so ./datasets')})")
    return root


def kinetics_split_files(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """(annotation CSV, video root) of ``split`` (``val`` and ``validate`` are the same split).

    Raises:
        FileNotFoundError: no ``annotations/{split}.csv`` under any of the split's spellings.
    """
    root = Path(root)
    names = _SPLIT_FOLDERS.get(split.lower(), (split.lower(),))
    for n in names:
        csv_path = root / "annotations" / f"{n}.csv"
        if csv_path.is_file():
            return csv_path, root
    tried = ", ".join(str(root / "annotations" / f"{n}.csv") for n in names)
    raise FileNotFoundError(f"no annotation CSV for split {split!r} of {root}: tried {tried}")


def load_kinetics(name: str, split: str, *, errors: str = "raise") -> VideoList:
    """The ``split`` rows of ``$GN_DET_DATASETS/{name}`` (see :func:`find_kinetics_root`)."""
    csv_path, root = kinetics_split_files(find_kinetics_root(name), split)
    return load_video_list(csv_path, format="kinetics", video_root=root, errors=errors)
