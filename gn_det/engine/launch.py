"""Start one or many training processes, like detectron2's ``launch``.

Three ways to run:

* one process: ``--num-gpus 1`` (the default) runs ``main_func`` right here;
* local workers: ``--num-gpus N`` spawns N processes with torch.multiprocessing and joins them
  into one job (NCCL with one GPU each when CUDA is available; **without CUDA, N is the number
  of CPU worker processes, joined with gloo** — how the tests exercise DDP on a laptop);
  ``--num-machines M --machine-rank R --dist-url tcp://host:port`` runs the same on M machines;
* torchrun: when RANK, WORLD_SIZE and LOCAL_RANK are set by ``torchrun``, no process is spawned;
  this process joins the job through ``env://`` and the ``--num-gpus``/``--dist-url`` flags are
  ignored.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..utils import comm

__all__ = ["launch", "find_free_port", "default_backend", "torchrun_env"]

DEFAULT_TIMEOUT = timedelta(minutes=30)
logger = logging.getLogger(__name__)


def default_backend() -> str:
    """"nccl" when CUDA is available, else "gloo"."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def find_free_port() -> int:
    """A TCP port that is free on this machine right now (for a single-machine --dist-url)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_env() -> dict[str, int] | None:
    """RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE when started by torchrun, else None."""
    if not all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return None
    env = {k: int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["LOCAL_WORLD_SIZE"] = int(os.environ.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))
    return env


def launch(main_func: Callable[..., Any], num_gpus_per_machine: int, num_machines: int = 1,
           machine_rank: int = 0, dist_url: str | None = "auto", args: Sequence[Any] = (),
           timeout: timedelta = DEFAULT_TIMEOUT, backend: str | None = None) -> Any:
    """Run ``main_func(*args)`` in every process of a (possibly distributed) job.

    Args:
        main_func: the per-process entry point; must be picklable (a module-level function)
            when processes are spawned.
        num_gpus_per_machine: processes per machine: one per GPU with CUDA; without CUDA the
            number of CPU processes (gloo).
        num_machines: machines in the job.
        machine_rank: this machine's index in ``[0, num_machines)``.
        dist_url: rendezvous address "tcp://host:port" of machine 0; "auto" (single machine
            only) picks a free local port.
        args: arguments for ``main_func``.
        timeout: collective timeout.
        backend: force a torch.distributed backend; default :func:`default_backend`.

    Returns:
        ``main_func``'s result when it runs in this process (single process or torchrun);
        None after spawned workers finish.
    """
    backend = backend or default_backend()
    env = torchrun_env()
    if env is not None:
        if num_gpus_per_machine > 1 or num_machines > 1:
            logger.warning("Started by torchrun (WORLD_SIZE=%d): ignoring --num-gpus/--num-machines.",
                           env["WORLD_SIZE"])
        if env["WORLD_SIZE"] > 1:
            _init_process_group(backend, "env://", env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"],
                                env["LOCAL_WORLD_SIZE"], timeout)
        try:
            return main_func(*args)
        finally:
            _destroy()

    if num_gpus_per_machine < 1 or num_machines < 1:
        raise ValueError(f"--num-gpus ({num_gpus_per_machine}) and --num-machines ({num_machines}) "
                         f"must be >= 1")
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"--machine-rank {machine_rank} must be in [0, {num_machines})")
    if backend == "nccl" and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} "
                         f"CUDA devices are visible")
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        return main_func(*args)

    if dist_url in (None, "", "auto"):
        if num_machines > 1:
            raise ValueError("--dist-url auto only works on one machine; pass tcp://<machine 0 "
                             "address>:<free port> on every machine")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    mp.start_processes(_distributed_worker, nprocs=num_gpus_per_machine, join=True, daemon=False,
                       start_method="spawn",
                       args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url,
                             tuple(args), timeout, backend))
    return None


def _distributed_worker(local_rank: int, main_func, world_size: int, num_gpus_per_machine: int,
                        machine_rank: int, dist_url: str, args: tuple, timeout: timedelta,
                        backend: str) -> None:
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    if backend == "gloo" and "OMP_NUM_THREADS" not in os.environ:
        # CPU workers share the machine's cores instead of each taking all of them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_gpus_per_machine))
    _init_process_group(backend, dist_url, global_rank, world_size, local_rank, num_gpus_per_machine,
                        timeout)
    try:
        main_func(*args)
    finally:
        _destroy()


def _init_process_group(backend: str, init_method: str, rank: int, world_size: int, local_rank: int,
                        local_size: int, timeout: timedelta) -> None:
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend=backend, init_method=init_method, world_size=world_size,
                                rank=rank, timeout=timeout)
    except Exception as e:
        raise RuntimeError(f"Process group initialization failed at {init_method} "
                           f"(rank {rank} of {world_size}): {e}") from e
    comm.set_local_rank(local_rank, local_size)
    comm.synchronize()


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
