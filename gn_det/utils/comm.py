"""Small helpers over torch.distributed that also work in a single, non-distributed process."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["is_dist_initialized", "get_world_size", "get_rank", "get_local_rank", "get_local_size",
           "is_main_process", "synchronize", "all_gather", "broadcast_object", "reduce_dict",
           "set_local_rank"]

_LOCAL_RANK = 0
_LOCAL_SIZE = 1


def set_local_rank(local_rank: int, local_size: int) -> None:
    """Record this process's rank and the process count on its machine (called by launch)."""
    global _LOCAL_RANK, _LOCAL_SIZE
    _LOCAL_RANK, _LOCAL_SIZE = local_rank, local_size


def is_dist_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the job (1 when not distributed)."""
    return dist.get_world_size() if is_dist_initialized() else 1


def get_rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    return dist.get_rank() if is_dist_initialized() else 0


def get_local_rank() -> int:
    """Rank of this process on its machine (selects its GPU)."""
    return _LOCAL_RANK if is_dist_initialized() else 0


def get_local_size() -> int:
    """Number of processes on this machine."""
    return _LOCAL_SIZE if is_dist_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; a no-op when not distributed."""
    if get_world_size() > 1:
        if dist.get_backend() == "nccl" and torch.cuda.is_available():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_gather(data: Any) -> list[Any]:
    """Gather a picklable object from every rank; returns the list ordered by rank."""
    world = get_world_size()
    if world == 1:
        return [data]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, data)
    return out


def broadcast_object(data: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``data`` on every rank."""
    if get_world_size() == 1:
        return data
    box = [data]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def reduce_dict(input_dict: dict[str, torch.Tensor], average: bool = True) -> dict[str, torch.Tensor]:
    """All-reduce a dict of scalar tensors (same keys on every rank); mean over ranks by default.

    Every rank gets the result (all-reduce, not reduce), so all ranks log the same values.
    """
    world = get_world_size()
    if world == 1 or not input_dict:
        return dict(input_dict)
    names = sorted(input_dict)
    with torch.no_grad():
        values = torch.stack([input_dict[k].detach().float().reshape(()) for k in names])
        values = values.to(_collective_device())
        dist.all_reduce(values)
        if average:
            values /= world
    return {k: v for k, v in zip(names, values)}


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
