"""Plain-text tables for metrics in the log (no third-party dependency).

One formatter for the whole project: the evaluators and the engine print metric tables
through :func:`format_table`, so every table in a log looks the same.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

__all__ = ["format_table", "format_metrics_table", "format_per_class_table"]


def _cell(value: Any, float_fmt: str) -> str:
    if value is None:  # a value that does not apply to this row
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, float_fmt)
    return str(value)


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], float_fmt: str = ".3f") -> str:
    """Format rows as a pipe-delimited table with aligned columns (markdown-like).

    Args:
        rows: table rows; every row has ``len(headers)`` cells. Floats are printed with
            ``float_fmt`` (NaN as "nan"), everything else with ``str``.
        headers: column titles.
        float_fmt: format spec for float cells.

    Returns:
        The table as one string, header line, separator line, then one line per row.
    """
    cells = [[_cell(v, float_fmt) for v in row] for row in rows]
    for i, row in enumerate(cells):
        if len(row) != len(headers):
            raise ValueError(f"Row {i} has {len(row)} cells but there are {len(headers)} headers")
    widths = [max([len(h)] + [len(r[j]) for r in cells]) for j, h in enumerate(headers)]
    # Numbers are right-aligned, text left-aligned, decided per column.
    numeric = [all(isinstance(row[j], (int, float)) or row[j] in ("", None) for row in rows) and bool(rows)
               for j in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w)
                                 for v, w, num in zip(values, widths, numeric)) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" if num else ":" + "-" * (w + 1)
                         for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(list(headers)), sep] + [line(r) for r in cells])


def format_metrics_table(metrics: Mapping[str, float], float_fmt: str = ".3f") -> str:
    """One row with one column per metric: ``{"AP": 40.1, "AP50": 60.2}`` -> a 2-line table."""
    return format_table([list(metrics.values())], list(metrics.keys()), float_fmt)


def format_per_class_table(per_class: Mapping[str, float], metric: str = "AP", num_pairs: int = 3,
                           float_fmt: str = ".3f") -> str:
    """Per-class values laid out as ``num_pairs`` (category, value) column pairs, as detectron2 does.

    Args:
        per_class: class name -> value.
        metric: the value column's title.
        num_pairs: how many (category, value) pairs per line, to keep long class lists compact.
    """
    items = list(per_class.items())
    num_pairs = max(1, min(num_pairs, len(items)))
    rows = []
    for start in range(0, len(items), num_pairs):
        chunk = items[start:start + num_pairs]
        row: list[Any] = []
        for name, value in chunk:
            row += [name, value]
        row += [""] * (2 * num_pairs - len(row))
        rows.append(row)
    headers = ["category", metric] * num_pairs
    return format_table(rows, headers, float_fmt)
