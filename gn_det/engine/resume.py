"""What ``--resume`` does with a config that differs from the checkpoint's.

A training checkpoint stores the config it was trained with (``config``, a YAML dump). On
resume the run's config is compared with it, key by key, and every difference is handled one of
three ways, each announced in one log line, so that the log, ``config.yaml`` and what runs agree:

* **applied** from the resume iteration on (every key not listed below: all of ``SOLVER``, the
  data, ``TEST``, ``MODEL.DEVICE``, inference-only ``MODEL.*_TEST`` keys ...). The lr schedule
  is rebuilt from the new ``SOLVER`` keys and continues at the resume iteration: lowering
  ``SOLVER.BASE_LR`` after a divergence takes effect, and a new ``MAX_ITER``/``STEPS`` moves
  the decay points. Example line: ``SOLVER.BASE_LR: 0.02 in the checkpoint -> 0.001 now, from
  iteration 300``.
* **kept** at the checkpoint's value (:data:`KEPT`): keys that describe how the run *started*.
  ``SEED`` (the checkpoint continues the random streams of its seed; a ``SEED -1`` run draws a new
  one each start) and ``MODEL.WEIGHTS`` (resume loads the checkpoint's weights, not these).
  ``config.yaml`` is rewritten with the kept values.
* **refused** (:func:`is_structural`): ``TASK``, ``VERSION``, ``INPUT.FORMAT`` and the other
  ``MODEL.*`` keys: they change the model itself, which the checkpoint's weights were trained as.
  One :class:`~gn_det.config.ConfigError` names them and the way out (drop the overrides, or
  start a new OUTPUT_DIR with ``MODEL.WEIGHTS`` set to the checkpoint).

``OUTPUT_DIR`` is not compared (a run folder may be moved).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ..config import ConfigError

__all__ = ["KEPT", "NOTES", "ConfigChanges", "is_structural", "compare_configs", "keep_values", "check_resume_config"]

KEPT = {
    "SEED": "a resumed run continues the checkpoint's random streams; start a new OUTPUT_DIR for another seed",
    "MODEL.WEIGHTS": "--resume loads the checkpoint's weights, not MODEL.WEIGHTS",
    "MODEL.WEIGHTS_ALLOW_EMPTY_PARTS": "--resume loads the checkpoint's weights, not MODEL.WEIGHTS",
}
# Changes that are applied, with a caveat the log line adds.
NOTES = {
    "SOLVER.IMS_PER_BATCH": "the data stream resumes at iteration x the new batch, not exactly after the "
                            "samples the checkpoint saw",
}
# how the model runs, not what it is: free to change on resume
_MODEL_RUNTIME = {"MODEL.DEVICE", "MODEL.CHANNELS_LAST", "MODEL.COMPILE.MODE", "MODEL.COMPILE.SCOPE"}
_NOT_COMPARED = {"OUTPUT_DIR"}


def is_structural(key: str) -> bool:
    """Whether ``key`` defines the model (cannot change on resume)."""
    if key in ("TASK", "VERSION", "INPUT.FORMAT"):
        return True
    return key.startswith("MODEL.") and key not in _MODEL_RUNTIME and key not in KEPT and not key.endswith("_TEST")


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@dataclass
class ConfigChanges:
    """The differences between a checkpoint's config and the run's, sorted by how they are handled.

    Each entry is ``(key, value in the checkpoint, value now)``; a key one side lacks has
    ``"(absent)"`` there.
    """

    applied: list[tuple[str, Any, Any]] = field(default_factory=list)
    kept: list[tuple[str, Any, Any]] = field(default_factory=list)
    refused: list[tuple[str, Any, Any]] = field(default_factory=list)

    def log_lines(self, start_iter: int) -> list[str]:
        """One line per applied or kept change."""
        lines = []
        for key, old, new in self.applied:
            note = f" ({NOTES[key]})" if key in NOTES else ""
            lines.append(f"{key}: {old!r} in the checkpoint -> {new!r} now, from iteration {start_iter}{note}")
        for key, old, new in self.kept:
            lines.append(f"{key}: {old!r} in the checkpoint, {new!r} given: kept at {old!r} ({KEPT[key]})")
        return lines

    def refusal(self, checkpoint: str) -> str:
        """The one-line error for the refused changes."""
        shown = "; ".join(f"{k} is {old!r} in the checkpoint, {new!r} now" for k, old, new in self.refused[:3])
        more = f" (and {len(self.refused) - 3} more)" if len(self.refused) > 3 else ""
        return (f"--resume from {checkpoint}: {shown}{more}. These keys define the model, which cannot change "
                f"on resume: drop the overrides to continue, or train in a new OUTPUT_DIR with "
                f"MODEL.WEIGHTS {checkpoint}")


def compare_configs(saved: dict[str, Any], cfg) -> ConfigChanges:
    """Compare a checkpoint's config (nested dicts, :func:`~gn_det.engine.checkpoint.stored_config`)
    with the run's ``cfg`` (compared through the same YAML dump, so tuples and lists are equal)."""
    old, new = _flatten(saved), _flatten(yaml.safe_load(cfg.dump()))
    changes = ConfigChanges()
    for key in sorted(set(old) | set(new)):
        if key in _NOT_COMPARED or key not in new:  # a key this version no longer has: nothing uses it
            continue
        before, now = old.get(key, "(absent)"), new[key]
        if before == now:
            continue
        if key in KEPT:
            if key in old:
                changes.kept.append((key, before, now))
        elif is_structural(key) and key in old:
            changes.refused.append((key, before, now))
        else:
            changes.applied.append((key, before, now))
    return changes


def keep_values(cfg, kept: list[tuple[str, Any, Any]]):
    """A frozen copy of ``cfg`` with each kept key set back to its checkpoint value."""
    out = cfg.clone()
    out.defrost()
    for key, old, _ in kept:
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node[p]
        current = node[leaf]
        node[leaf] = tuple(old) if isinstance(current, tuple) and isinstance(old, list) else old
    out.freeze()
    return out


def check_resume_config(saved: dict[str, Any] | None, cfg, checkpoint: str) -> tuple[Any, ConfigChanges]:
    """``(config to run, changes)``; raises ConfigError for refused changes."""
    if saved is None:
        return cfg, ConfigChanges()
    changes = compare_configs(saved, cfg)
    if changes.refused:
        raise ConfigError(changes.refusal(checkpoint))
    return (keep_values(cfg, changes.kept) if changes.kept else cfg), changes
