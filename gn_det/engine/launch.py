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

Rendezvous: with a ``tcp://host:port`` URL, machine 0's launcher hosts the job's key-value store
at that port; every process connects to it, checks in under its rank (two machines with the same
``--machine-rank``, or machines that disagree on the world size, are refused) and waits for the
others, then the process group is built on that store.

Timeouts, so that a lost machine never leaves the others hanging:

* rendezvous: how long the processes wait for each other at the start (machines started at
  different times): ``rendezvous_timeout``, ``--rendezvous-timeout SECONDS`` or the environment
  variable ``GN_DET_RENDEZVOUS_TIMEOUT``; default 30 minutes;
* collectives: how long a rank waits in an all-reduce or barrier for a rank that stopped
  answering: ``timeout``, ``--dist-timeout SECONDS`` or ``GN_DET_DIST_TIMEOUT``; default 30
  minutes (torch's). A rank that *dies* is noticed at once (its connections close); one that
  hangs, after this timeout.

Failures: every process of a job that fails ends with one line naming the rank and the cause
(see :mod:`gn_det.engine.rank_failures`); its full traceback goes to its log file only. A
launcher raises :class:`RunFailure` with that line and the exit code; with several processes on
the machine, the line of the process that failed first (a process killed by a signal is named
with the signal).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

from ..utils.lazy import lazy_module
from ..utils.threads import apply_thread_policy
from .rank_failures import (EXIT_INTERRUPTED, EXIT_TRAINING_FAILED, EXIT_UNEXPECTED, EXIT_USER_ERROR, Failure,
                            FailureBoard, first_line, is_peer_error)

# imported on first use: the CLIs import this module for its settings before they need torch
torch = lazy_module("torch")
dist = lazy_module("torch.distributed")
mp = lazy_module("torch.multiprocessing")
_spawn = lazy_module("torch.multiprocessing.spawn")
comm = lazy_module("gn_det.utils.comm")

__all__ = ["launch", "find_free_port", "default_backend", "torchrun_env", "RunFailure", "timeout_setting",
           "describe_exception", "DEFAULT_TIMEOUT", "DIST_TIMEOUT_ENV", "RENDEZVOUS_TIMEOUT_ENV"]

DEFAULT_TIMEOUT = timedelta(minutes=30)
DIST_TIMEOUT_ENV = "GN_DET_DIST_TIMEOUT"
RENDEZVOUS_TIMEOUT_ENV = "GN_DET_RENDEZVOUS_TIMEOUT"
_GRACE_S = 2.0  # after one local process fails, the others get this long to report before SIGTERM
_BOARD_STORE_TIMEOUT = timedelta(seconds=5)
logger = logging.getLogger(__name__)

Describe = Callable[[BaseException], "tuple[int, str]"]


class RunFailure(Exception):
    """A run ended by an error: ``message`` is one line naming the cause (and the rank in a
    distributed job), ``code`` the exit code to end with."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


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


def timeout_setting(seconds: float | None, env_var: str, name: str = "the timeout") -> timedelta:
    """``seconds`` when given (``name``, e.g. the flag, says where it came from), else the
    environment variable ``env_var`` (seconds), else :data:`DEFAULT_TIMEOUT`.

    Raises:
        ValueError: a value that is not a positive number of seconds (naming where it came from).
    """
    source = name
    if seconds is None:
        raw = os.environ.get(env_var, "").strip()
        if not raw:
            return DEFAULT_TIMEOUT
        source = f"{env_var}={raw!r}"
        try:
            seconds = float(raw)
        except ValueError:
            raise ValueError(f"{source} is not a number of seconds") from None
    if not seconds > 0:
        raise ValueError(f"{source} must be a positive number of seconds, got {seconds:g}")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class _Job:
    world_size: int
    procs_per_machine: int
    num_machines: int
    machine_rank: int
    dist_url: str
    backend: str
    timeout: timedelta
    rendezvous_timeout: timedelta

    def rank(self, local_rank: int) -> int:
        return self.machine_rank * self.procs_per_machine + local_rank

    def where(self, rank: int) -> str:
        return f"rank {rank} of {self.world_size} (machine {rank // self.procs_per_machine})"

    @property
    def store_address(self) -> tuple[str, int] | None:
        """(host, port) of a tcp:// URL; None for other init methods (file://, ...)."""
        url = urlparse(self.dist_url)
        if url.scheme != "tcp" or not url.hostname or not url.port:
            return None
        return url.hostname, url.port


def launch(main_func: Callable[..., Any], num_gpus_per_machine: int, num_machines: int = 1,
           machine_rank: int = 0, dist_url: str | None = "auto", args: Sequence[Any] = (),
           timeout: timedelta | None = None, backend: str | None = None,
           rendezvous_timeout: timedelta | None = None, describe_failure: Describe | None = None) -> Any:
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
        timeout: collective timeout; default ``GN_DET_DIST_TIMEOUT`` seconds, else 30 minutes.
        backend: force a torch.distributed backend; default :func:`default_backend`.
        rendezvous_timeout: how long processes wait for each other at the start; default
            ``GN_DET_RENDEZVOUS_TIMEOUT`` seconds, else 30 minutes.
        describe_failure: ``describe_failure(exc) -> (exit code, one line)`` for an exception
            that ends ``main_func`` (picklable when processes are spawned). Default: exit code 1
            and the exception's first line; in a single process without it, exceptions propagate
            unchanged.

    Returns:
        ``main_func``'s result when it runs in this process (single process or torchrun);
        None after spawned workers finish.

    Raises:
        RunFailure: a spawned process failed (always), or ``main_func`` raised in this process
            and ``describe_failure`` was given; one line naming the rank and the cause.
    """
    backend = backend or default_backend()
    timeout = timeout or timeout_setting(None, DIST_TIMEOUT_ENV)
    rendezvous_timeout = rendezvous_timeout or timeout_setting(None, RENDEZVOUS_TIMEOUT_ENV)
    env = torchrun_env()
    if env is not None:
        if num_gpus_per_machine > 1 or num_machines > 1:
            logger.warning("Started by torchrun (WORLD_SIZE=%d): ignoring --num-gpus/--num-machines.",
                           env["WORLD_SIZE"])
        where = ""
        if env["WORLD_SIZE"] > 1:
            _init_process_group(backend, "env://", env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"],
                                env["LOCAL_WORLD_SIZE"], timeout)
            where = f"rank {env['RANK']} of {env['WORLD_SIZE']}: "
        result = _run_here(main_func, args, describe_failure, where)
        _destroy()
        return result

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
        return _run_here(main_func, args, describe_failure, "")

    if dist_url in (None, "", "auto"):
        if num_machines > 1:
            raise ValueError("--dist-url auto only works on one machine; pass tcp://<machine 0 "
                             "address>:<free port> on every machine")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    job = _Job(world_size, num_gpus_per_machine, num_machines, machine_rank, dist_url, backend, timeout,
               rendezvous_timeout)
    server = _host_store(job) if machine_rank == 0 and job.store_address else None
    try:
        _spawn_and_join(main_func, tuple(args), job, describe_failure or describe_exception)
    finally:
        del server  # the store lives as long as this machine's processes
    return None


def describe_exception(exc: BaseException) -> tuple[int, str]:
    """The default ``describe_failure``: (exit code, one line) for any exception."""
    if isinstance(exc, RunFailure):
        return exc.code, exc.message
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted (SIGINT: Ctrl-C, or this machine's launcher ended)"
    if isinstance(exc, SystemExit):
        return (exc.code if isinstance(exc.code, int) else EXIT_UNEXPECTED), f"exited: {exc.code}"
    return EXIT_UNEXPECTED, first_line(exc)


# ------------------------------------------------------------------------------ this process
def _run_here(main_func: Callable[..., Any], args: Sequence[Any], describe: Describe | None, where: str) -> Any:
    """``main_func(*args)`` in this process; with ``describe``, a failure becomes a RunFailure."""
    if describe is None:
        return main_func(*args)
    try:
        return main_func(*args)
    except BaseException as e:
        if isinstance(e, SystemExit) and e.code in (None, 0):
            raise
        code, cause = describe(e)
        raise RunFailure(code, where + cause + _traceback_note(e, code, where + cause)) from None


def _traceback_note(exc: BaseException, code: int, line: str = "") -> str:
    """Log ``line`` and the traceback of ``exc`` to the run's log files (not the console);
    returns where to find it for an unexpected error (exit code 1)."""
    files = _log_to_files(line or first_line(exc), exc)
    if code != EXIT_UNEXPECTED:  # the line says what to do; the traceback is in the log all the same
        return ""
    if files:
        return f" (full traceback in {', '.join(files)})"
    traceback.print_exception(exc, file=sys.stderr)  # no log file yet: a bug must not lose its traceback
    return ""


def _log_to_files(message: str, exc: BaseException | None = None) -> list[str]:
    """Write ``message`` (and the traceback of ``exc``) to the file handlers of the "gn_det"
    logger only; returns their paths."""
    root = logging.getLogger("gn_det")
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    if not files:
        return []
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    record = root.makeRecord(root.name, logging.ERROR, __file__, 0, "%s", (message,), exc_info)
    for h in files:
        h.handle(record)
        h.flush()
    return [h.baseFilename for h in files]


# --------------------------------------------------------------------------- spawned workers
def _host_store(job: _Job) -> dist.TCPStore:
    """The job's key-value store at ``--dist-url``'s port, hosted by machine 0's launcher."""
    host, port = job.store_address
    try:
        return dist.TCPStore(host, port, None, True, timeout=job.rendezvous_timeout, wait_for_workers=False)
    except Exception as e:
        raise RunFailure(EXIT_USER_ERROR, f"cannot host the rendezvous at --dist-url {job.dist_url} on this "
                                          f"machine ({first_line(e)}): use one of machine 0's own addresses "
                                          f"and a free port") from None


def _spawn_and_join(main_func: Callable[..., Any], args: tuple, job: _Job, describe: Describe) -> None:
    # The resource tracker (started with the first semaphore, below) frees the semaphores of a
    # worker killed by a signal, and warns about each on exit: noise under the one failure line.
    quiet = "ignore:resource_tracker:UserWarning"
    if quiet not in os.environ.get("PYTHONWARNINGS", ""):
        os.environ["PYTHONWARNINGS"] = ",".join(w for w in (os.environ.get("PYTHONWARNINGS"), quiet) if w)
    ctx = mp.get_context("spawn")
    reports = ctx.SimpleQueue()
    context = mp.start_processes(_distributed_worker, nprocs=job.procs_per_machine, join=False, daemon=False,
                                 start_method="spawn", args=(main_func, job, args, describe, reports))
    # torch logs a warning per process it terminates after a failure; the one line below says it all.
    spawn_logger = logging.getLogger("torch.multiprocessing.spawn")
    level = spawn_logger.level
    spawn_logger.setLevel(logging.ERROR)
    try:
        while not context.join(grace_period=_GRACE_S):
            pass
    except KeyboardInterrupt:
        for p in context.processes:
            if p.is_alive():
                p.terminate()
        raise RunFailure(EXIT_INTERRUPTED, f"interrupted (Ctrl-C): stopped the {job.procs_per_machine} "
                                           f"process(es) of machine {job.machine_rank}") from None
    except _spawn.ProcessException as e:
        failure = _machine_failure(e, _drain(reports), job)
        raise RunFailure(failure.code, failure.line) from None
    finally:
        spawn_logger.setLevel(level)
        reports.close()


def _drain(reports) -> dict[int, Failure]:
    found = {}
    try:
        while not reports.empty():
            local_rank, failure = reports.get()
            found[local_rank] = Failure(**failure)
    except Exception as e:  # a worker killed while writing: keep what was read
        logger.debug("failure reports unreadable: %s", e)
    return found


def _machine_failure(exc: _spawn.ProcessException, reports: dict[int, Failure], job: _Job) -> Failure:
    """The failure of this machine's processes: that of the first one to end (its own report,
    or the signal that killed it), else any report."""
    first = exc.error_index
    rank = job.rank(first)
    if first in reports:
        return reports[first]
    signal_name = getattr(exc, "signal_name", None)
    if signal_name:
        hint = (" (the kernel's out-of-memory killer sends it: check dmesg)" if signal_name == "SIGKILL"
                else "")
        return Failure(rank, EXIT_TRAINING_FAILED, f"{job.where(rank)}, pid {exc.error_pid}, was killed by "
                                                   f"{signal_name}{hint}; the other processes were stopped")
    own = [f for f in reports.values() if f.own]
    if own or reports:
        return (own or list(reports.values()))[0]
    if isinstance(exc, _spawn.ProcessRaisedException):
        lines = [s for s in exc.msg.strip().splitlines() if s.strip()]
        return Failure(rank, EXIT_UNEXPECTED, f"{job.where(rank)}: {lines[-1].strip() if lines else exc.msg}")
    code = getattr(exc, "exit_code", None) or EXIT_UNEXPECTED
    return Failure(rank, code, f"{job.where(rank)}, pid {exc.error_pid}, exited with code {code}")


def _distributed_worker(local_rank: int, main_func, job: _Job, args: tuple, describe: Describe,
                        reports) -> None:
    rank = job.rank(local_rank)
    # torch makes the launcher's death send SIGINT here; a launcher started in the background
    # (nohup, "&" in a script) passes SIGINT on as ignored, which would leave this worker training.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # The local workers share the machine's cores instead of each taking all of them (the CLIs'
    # policy, gn_det.utils.threads: the user's OMP_NUM_THREADS wins).
    apply_thread_policy(procs=job.procs_per_machine)
    board = None
    try:
        board = _join(job, rank, local_rank)
        main_func(*args)
    except BaseException as e:
        if isinstance(e, SystemExit) and e.code in (None, 0):
            _end(board)
            return
        failure = _worker_failure(e, rank, job, board, describe)
        if board is not None and failure.own:
            board.report(failure)
        try:
            reports.put((local_rank, asdict(failure)))
        except Exception:  # the launcher is gone: nobody to tell
            pass
        _exit_now(failure.code)
    _end(board)


def _exit_now(code: int) -> None:
    """Exit with ``code`` after the exit handlers (log files, semaphores, ...) ran, or 5 s: a
    broken process group or a stuck data-loader worker must not hold the exit."""
    cleanup = threading.Thread(target=atexit._run_exitfuncs, daemon=True)
    cleanup.start()
    cleanup.join(timeout=5.0)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _end(board: FailureBoard | None) -> None:
    if board is not None:
        board.stop_heartbeat()
    _destroy()


def _worker_failure(exc: BaseException, rank: int, job: _Job, board: FailureBoard | None,
                    describe: Describe) -> Failure:
    """This rank's failure: another rank's, when a broken collective was its doing; else its own."""
    if board is not None and is_peer_error(exc):
        found = board.diagnose()
        if found is not None:
            _traceback_note(exc, EXIT_TRAINING_FAILED, f"stopped by another rank: {found.line}")
            # The culprit's exit code: the job ends the same way on every machine (this rank was
            # not interrupted itself, it lost a peer).
            code = EXIT_TRAINING_FAILED if found.code == EXIT_INTERRUPTED else found.code
            return Failure(found.culprit, code, found.line, own=False)
        line = (f"{job.where(rank)}: communication with the other ranks failed ({first_line(exc)}) and no "
                f"rank reported a failure: if it timed out, a rank is stuck or too slow (raise "
                f"--dist-timeout / {DIST_TIMEOUT_ENV}); see the other ranks' logs")
        return Failure(rank, EXIT_TRAINING_FAILED, line + _traceback_note(exc, EXIT_TRAINING_FAILED, line))
    code, cause = describe(exc)
    line = f"{job.where(rank)}: {cause}"
    return Failure(rank, code, line + _traceback_note(exc, code, line))


def _join(job: _Job, rank: int, local_rank: int) -> FailureBoard | None:
    """Join the job: rendezvous, process group, failure board (None for a non-tcp URL)."""
    address = job.store_address
    if address is None:
        _init_process_group(job.backend, job.dist_url, rank, job.world_size, local_rank, job.procs_per_machine,
                            job.timeout)
        return None
    host, port = address
    try:
        store = dist.TCPStore(host, port, None, False, timeout=job.rendezvous_timeout)
    except Exception as e:
        raise RunFailure(EXIT_USER_ERROR, (
            f"cannot reach the rendezvous at --dist-url {job.dist_url} within "
            f"{job.rendezvous_timeout.total_seconds():g} s ({first_line(e)}): start machine 0 (which hosts it), "
            f"check the address and that the port is open, or raise --rendezvous-timeout")) from None
    _rendezvous(store, job, rank)
    _init_process_group(job.backend, None, rank, job.world_size, local_rank, job.procs_per_machine,
                        job.timeout, store=store)
    board_store = store.clone()
    board_store.set_timeout(_BOARD_STORE_TIMEOUT)
    board = FailureBoard(board_store, rank, job.world_size, job.procs_per_machine, f"{host}:{port}")
    board.start_heartbeat()
    return board


def _rendezvous(store: dist.Store, job: _Job, rank: int) -> None:
    """Check in as ``rank`` and wait until every rank has; refuse inconsistent machines."""
    agreed = store.compare_set("gn_det/world_size", "", str(job.world_size)).decode()
    if agreed != str(job.world_size):
        raise RunFailure(EXIT_USER_ERROR, (
            f"machines disagree on the job's size: machine {job.machine_rank} has --num-machines "
            f"{job.num_machines} x --num-gpus {job.procs_per_machine} = {job.world_size} processes, another "
            f"machine {agreed}; start every machine with the same --num-machines and --num-gpus"))
    if store.add(f"gn_det/joined/{rank}", 1) > 1:
        raise RunFailure(EXIT_USER_ERROR, (
            f"two processes joined as rank {rank}: two machines were started with --machine-rank "
            f"{job.machine_rank}; give each machine its own rank in [0, {job.num_machines})"))
    keys = [f"gn_det/joined/{r}" for r in range(job.world_size)]
    limit = job.rendezvous_timeout.total_seconds()
    deadline = time.monotonic() + limit
    while not store.check(keys):
        if time.monotonic() > deadline:
            missing = [r for r in range(job.world_size) if not store.check([keys[r]])]
            machines = sorted({r // job.procs_per_machine for r in missing})
            raise RunFailure(EXIT_USER_ERROR, (
                f"rendezvous at {job.dist_url} timed out after {limit:g} s: machine(s) "
                f"{', '.join(map(str, machines))} (rank(s) {', '.join(map(str, missing))}) did not join; start "
                f"them with the same --dist-url and --num-machines {job.num_machines}, or raise "
                f"--rendezvous-timeout / {RENDEZVOUS_TIMEOUT_ENV}"))
        time.sleep(0.05)


def _init_process_group(backend: str, init_method: str | None, rank: int, world_size: int, local_rank: int,
                        local_size: int, timeout: timedelta, store: dist.Store | None = None) -> None:
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend=backend, init_method=init_method, world_size=world_size,
                                rank=rank, timeout=timeout, store=store)
    except Exception as e:
        raise RuntimeError(f"Process group initialization failed at {init_method or 'the rendezvous store'} "
                           f"(rank {rank} of {world_size}): {e}") from e
    comm.set_local_rank(local_rank, local_size)
    comm.synchronize()


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
