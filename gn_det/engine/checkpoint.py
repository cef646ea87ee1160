"""Training checkpoints: model, optimizer, scheduler, iteration and every rank's RNG states.

Files follow detectron2's layout in ``OUTPUT_DIR``: ``model_0004999.pth`` ...,
``model_final.pth``, and a ``last_checkpoint`` text file naming the newest one, which
``--resume`` reads. Every file is written atomically (temp file in the same directory, then
``os.replace``), so a crash while saving leaves the previous checkpoint and ``last_checkpoint``
intact. Files are read back with ``torch.load(weights_only=True)``: RNG states are therefore
stored as tensors and plain Python values only.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint.io import CheckpointError, safe_torch_load
from ..checkpoint.model_loading import RESUME, WeightsForModel, apply_weights
from ..utils import comm
from ..utils.io import atomic_save, atomic_write_text

__all__ = ["Checkpointer", "capture_rng_state", "restore_rng_state"]

logger = logging.getLogger(__name__)
LAST_CHECKPOINT = "last_checkpoint"


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


class Checkpointer:
    """Save and restore the full training state in ``save_dir``.

    Args:
        model: the (unwrapped, not DDP) model.
        save_dir: output folder; checkpoints and ``last_checkpoint`` go here.
        checkpointables: objects with ``state_dict``/``load_state_dict`` (optimizer, scheduler,
            grad scaler), saved under their keyword name.

    :meth:`save` must be called on every rank (it gathers all ranks' RNG states); only the main
    process writes.
    """

    def __init__(self, model: nn.Module, save_dir: str, **checkpointables: Any):
        self.model = model
        self.save_dir = save_dir
        self.checkpointables = {k: v for k, v in checkpointables.items() if v is not None}

    def save(self, name: str, iteration: int, **extra: Any) -> str:
        """Write ``{save_dir}/{name}.pth`` and point ``last_checkpoint`` at it; returns the path.

        Args:
            name: file name without ``.pth``.
            iteration: the iteration just completed (training resumes at ``iteration + 1``).
            extra: more weights_only-loadable values to store.
        """
        rng_states = comm.all_gather(capture_rng_state())
        path = os.path.join(self.save_dir, f"{name}.pth")
        if comm.is_main_process():
            data = {"model": self.model.state_dict(), "iteration": iteration, "rng_states": rng_states,
                    **{k: v.state_dict() for k, v in self.checkpointables.items()}, **extra}
            atomic_save(data, path)
            # Written after the checkpoint itself: it never names a file that is not complete.
            atomic_write_text(os.path.basename(path), os.path.join(self.save_dir, LAST_CHECKPOINT))
            logger.info("Saved checkpoint %s (iteration %d)", path, iteration)
        comm.synchronize()
        return path

    def get_checkpoint_file(self) -> str | None:
        """Path of the newest checkpoint named by ``last_checkpoint``, or None."""
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

    def load(self, path: str) -> dict[str, Any]:
        """Restore model and checkpointables from a gn_det training checkpoint, strictly
        (:data:`gn_det.checkpoint.model_loading.RESUME`); returns the remaining entries
        (``iteration``, ``rng_states``, extras). RNG states are *not* applied here: call
        :func:`restore_rng_state` when training is about to continue.

        Raises:
            CheckpointError: not a training checkpoint, or one that does not fit the model exactly
                (the message names the first keys and shapes); nothing is loaded then.
        """
        data = safe_torch_load(path)
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict) or "iteration" not in data:
            keys = list(data)[:5] if isinstance(data, dict) else type(data).__name__
            raise CheckpointError(f"{path} is not a gn_det training checkpoint (no 'model' and 'iteration' "
                                  f"entries; top level: {keys}); to start from other weights, set "
                                  f"MODEL.WEIGHTS instead of --resume")
        apply_weights(self.model, WeightsForModel(data.pop("model")), RESUME, path)
        for key, obj in self.checkpointables.items():
            if key not in data:
                logger.warning("%s has no %r state; it starts fresh", path, key)
                continue
            obj.load_state_dict(data.pop(key))
        return data
