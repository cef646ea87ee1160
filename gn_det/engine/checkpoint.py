"""Training checkpoints: model, optimizer, scheduler, iteration and every rank's RNG states.

Files follow detectron2's layout in ``OUTPUT_DIR``: ``model_0004999.pth`` ...,
``model_final.pth``, and a ``last_checkpoint`` text file naming the newest *good* one (see
:mod:`gn_det.engine.divergence`), which ``--resume`` reads. Every file is written atomically
(temp file in the same directory, then ``os.replace``), so a crash while saving leaves the
previous checkpoint and ``last_checkpoint`` intact; the temporary file such a crash leaves is
removed by the next run (:meth:`Checkpointer.remove_stale_temporaries`). Files are read back with
``torch.load(weights_only=True)``: RNG states are therefore stored as tensors and plain Python
values only.

On resume the optimizer's per-parameter state (momentum buffers) is carried over by parameter
name, while its hyperparameters (lr, momentum, weight decay) are those the optimizer was built
with from the run's config: a changed SOLVER key takes effect (see :func:`carry_optimizer_state`).
"""

from __future__ import annotations

import logging
import os
import random
import re
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.optim import Optimizer

from ..checkpoint.io import CheckpointError, safe_torch_load
from ..checkpoint.model_loading import RESUME, WeightsForModel, apply_weights
from ..utils import comm
from ..utils.io import atomic_save, atomic_write_text, remove_stale_temporaries

__all__ = ["Checkpointer", "capture_rng_state", "restore_rng_state", "carry_optimizer_state",
           "stored_config", "LAST_CHECKPOINT"]

logger = logging.getLogger(__name__)
LAST_CHECKPOINT = "last_checkpoint"
_PERIODIC = re.compile(r"model_(\d+)\.pth")
# The files a training run writes in OUTPUT_DIR; their stale temporaries are removed on start.
RUN_FILES = re.compile(r"model_\w+\.pth|last_checkpoint|config\.yaml|metrics\.json|skipped_samples\.json|"
                       r"eval_results\.json")


def capture_rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch (and CUDA) RNG states, weights_only-loadable."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            logger.warning("Checkpoint has CUDA RNG states for %d devices, %d visible: not restored",
                           len(state["cuda"]), torch.cuda.device_count())


def carry_optimizer_state(optimizer: Optimizer, saved: dict[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    """A state dict for ``optimizer.load_state_dict``: the saved per-parameter state, with the
    hyperparameters of ``optimizer`` as built (from the config the run is started with).

    When the param groups carry ``"names"`` (:func:`gn_det.engine.optimizer.get_param_groups`),
    states are matched by parameter name, so a config change that regroups parameters (a weight
    decay made equal to another) still carries every momentum buffer to its parameter; otherwise
    the groups must have the same sizes.

    Raises:
        CheckpointError: unnamed groups whose sizes differ.
    """
    current = optimizer.state_dict()
    old_groups, old_state = saved.get("param_groups", []), saved.get("state", {})
    if all("names" in g for g in old_groups + current["param_groups"]):
        by_name = {name: old_state[i] for g in old_groups for name, i in zip(g["names"], g["params"])
                   if i in old_state}
        state, new = {}, 0
        for g in current["param_groups"]:
            for name, i in zip(g["names"], g["params"]):
                if name in by_name:
                    state[i] = by_name.pop(name)
                else:
                    new += 1
        if new or by_name:
            logger.info("%s: optimizer state carried by parameter name; %d parameter(s) start without "
                        "state, %d saved state(s) belong to parameters no longer trained", source, new, len(by_name))
    else:
        sizes = [len(g["params"]) for g in old_groups]
        if sizes != [len(g["params"]) for g in current["param_groups"]]:
            raise CheckpointError(f"{source}: its optimizer has param groups of sizes {sizes}, this run's "
                                  f"{[len(g['params']) for g in current['param_groups']]}; resume with the "
                                  f"checkpoint's SOLVER settings or start a new OUTPUT_DIR")
        state = old_state
    return {"state": state, "param_groups": current["param_groups"]}


def stored_config(data: dict[str, Any]) -> dict[str, Any] | None:
    """The config a training checkpoint was saved with (its ``config`` entry, a YAML dump), as
    nested dicts; None when the checkpoint has none or it cannot be read."""
    text = data.get("config")
    if not isinstance(text, str):
        return None
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return cfg if isinstance(cfg, dict) else None


class Checkpointer:
    """Save and restore the full training state in ``save_dir``.

    Args:
        model: the (unwrapped, not DDP) model.
        save_dir: output folder; checkpoints and ``last_checkpoint`` go here.
        max_to_keep: keep only the newest ``max_to_keep`` periodic checkpoints
            (``model_<iteration>.pth``; 0 keeps all). ``model_final.pth`` and the checkpoint that
            ``last_checkpoint`` names are never deleted.
        checkpointables: objects with ``state_dict``/``load_state_dict`` (optimizer, scheduler,
            grad scaler), saved under their keyword name.

    :meth:`save` must be called on every rank (it gathers all ranks' RNG states); only the main
    process writes.
    """

    def __init__(self, model: nn.Module, save_dir: str, *, max_to_keep: int = 0, **checkpointables: Any):
        if max_to_keep < 0:
            raise ValueError(f"max_to_keep must be >= 0 (0 keeps all), got {max_to_keep}")
        self.model = model
        self.save_dir = save_dir
        self.max_to_keep = max_to_keep
        self.checkpointables = {k: v for k, v in checkpointables.items() if v is not None}

    def save(self, name: str, iteration: int, *, good: bool = True, **extra: Any) -> str:
        """Write ``{save_dir}/{name}.pth``; returns the path.

        Args:
            name: file name without ``.pth``.
            iteration: the iteration just completed (training resumes at ``iteration + 1``).
            good: point ``last_checkpoint`` at it (False: the file is written, but resume and
                the "last good checkpoint" keep naming the previous one).
            extra: more weights_only-loadable values to store.
        """
        rng_states = comm.all_gather(capture_rng_state())
        path = os.path.join(self.save_dir, f"{name}.pth")
        if comm.is_main_process():
            data = {"model": self.model.state_dict(), "iteration": iteration, "rng_states": rng_states,
                    **{k: v.state_dict() for k, v in self.checkpointables.items()}, **extra}
            atomic_save(data, path)
            if good:
                # Written after the checkpoint itself: it never names a file that is not complete.
                atomic_write_text(os.path.basename(path), os.path.join(self.save_dir, LAST_CHECKPOINT))
            logger.info("Saved checkpoint %s (iteration %d)%s", path, iteration,
                        "" if good else f", not named in {LAST_CHECKPOINT}")
            self._prune(iteration)
        comm.synchronize()
        return path

    def _prune(self, iteration: int) -> None:
        """Delete periodic checkpoints beyond the newest ``max_to_keep`` (up to ``iteration``;
        later ones, left by a run that went further before this one resumed, are overwritten as
        training reaches them)."""
        if self.max_to_keep <= 0:
            return
        protected = None
        marker = os.path.join(self.save_dir, LAST_CHECKPOINT)
        if os.path.isfile(marker):
            with open(marker, encoding="utf-8") as f:
                protected = f.read().strip()
        found = []
        for entry in os.scandir(self.save_dir):
            m = _PERIODIC.fullmatch(entry.name)
            if m and int(m.group(1)) <= iteration:
                found.append((int(m.group(1)), entry.name))
        for _, fname in sorted(found)[:-self.max_to_keep]:
            if fname != protected:
                os.unlink(os.path.join(self.save_dir, fname))
                logger.info("Deleted %s (SOLVER.CHECKPOINT_MAX_TO_KEEP %d)", fname, self.max_to_keep)

    def get_checkpoint_file(self) -> str | None:
        """Path of the newest good checkpoint named by ``last_checkpoint``, or None."""
        marker = os.path.join(self.save_dir, LAST_CHECKPOINT)
        if not os.path.isfile(marker):
            return None
        with open(marker, encoding="utf-8") as f:
            name = f.read().strip()
        path = os.path.join(self.save_dir, name)
        if not os.path.isfile(path):
            raise CheckpointError(f"{marker} names {name!r}, which does not exist in {self.save_dir}. "
                                  f"Fix or delete {marker} to resume from another checkpoint.")
        return path

    def has_checkpoint(self) -> bool:
        return self.get_checkpoint_file() is not None

    def remove_stale_temporaries(self) -> list[tuple[str, int]]:
        """Remove the temporary files of this run's own files (checkpoints, ``last_checkpoint``,
        config.yaml, metrics.json ...) that a killed run left in ``save_dir``; main process only,
        before training writes anything. Returns ``(name, bytes)`` of each file removed."""
        if not comm.is_main_process():
            return []
        return remove_stale_temporaries(self.save_dir, RUN_FILES)

    def read(self, path: str) -> dict[str, Any]:
        """Read a gn_det training checkpoint (nothing is applied).

        Raises:
            CheckpointError: not a readable training checkpoint.
        """
        data = safe_torch_load(path)
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict) or "iteration" not in data:
            keys = list(data)[:5] if isinstance(data, dict) else type(data).__name__
            raise CheckpointError(f"{path} is not a gn_det training checkpoint (no 'model' and 'iteration' "
                                  f"entries; top level: {keys}); to start from other weights, set "
                                  f"MODEL.WEIGHTS instead of --resume")
        return data

    def apply(self, data: dict[str, Any], path: str) -> dict[str, Any]:
        """Restore model and checkpointables from ``data`` (read by :meth:`read` from ``path``),
        strictly (:data:`gn_det.checkpoint.model_loading.RESUME`); returns the remaining entries
        (``iteration``, ``rng_states``, extras). An optimizer gets the saved per-parameter state
        and keeps its own hyperparameters (:func:`carry_optimizer_state`). RNG states are *not*
        applied here: call :func:`restore_rng_state` when training is about to continue.

        Raises:
            CheckpointError: a checkpoint that does not fit the model exactly (the message names
                the first keys and shapes); nothing is loaded then.
        """
        data = dict(data)
        apply_weights(self.model, WeightsForModel(data.pop("model")), RESUME, path)
        for key, obj in self.checkpointables.items():
            if key not in data:
                logger.warning("%s has no %r state; it starts fresh", path, key)
                continue
            state = data.pop(key)
            if isinstance(obj, Optimizer):
                state = carry_optimizer_state(obj, state, path)
            obj.load_state_dict(state)
        return data

    def load(self, path: str) -> dict[str, Any]:
        """:meth:`read` then :meth:`apply` (see there)."""
        return self.apply(self.read(path), path)
