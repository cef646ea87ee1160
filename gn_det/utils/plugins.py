"""Find code registered by installed packages through entry points (``importlib.metadata``).

Tasks are plugins: gn_det declares its own in ``pyproject.toml`` under the entry-point group
``gn_det_tasks`` (``detection = gn_det.tasks.detection:DetectionTask``), and an outside package
adds a task the same way, without gn_det naming it anywhere. Loading an entry point imports its
module, whose ``@register_task`` decorator registers the task and its config keys.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

__all__ = ["TASK_GROUP", "load_entry_point", "entry_point_names"]

TASK_GROUP = "gn_det_tasks"  # a group name, not a module: the ground floor names no task


def entry_point_names(group: str = TASK_GROUP) -> list[str]:
    """Names declared in ``group`` by the installed packages, sorted."""
    return sorted({ep.name for ep in entry_points(group=group)})


def load_entry_point(name: str, group: str = TASK_GROUP) -> Any | None:
    """Load (import) the entry point ``name`` of ``group``; None when no package declares it.

    Import errors of the declaring module propagate: a broken plugin must not look like a
    missing one.
    """
    for ep in entry_points(group=group):
        if ep.name == name:
            return ep.load()
    return None
