"""The CPU thread policy of gn_det's command-line tools, set before torch starts its thread pool.

On a small machine whose cores are shared (data workers, evaluation, other jobs), OpenMP's default
of spinning while it waits for work makes torch's threads fight the other processes for the cores.
``benchmarks/bench_cpu_threads.py`` (the demo's training step on a shared 2-core machine, median of
interleaved runs) measured torch's default (2 threads, spinning) at 16.0 s/step and 27.7 s/step with
one ``yes`` beside it, one thread at 1.6 / 3.0 s, and 2 threads with ``OMP_WAIT_POLICY=PASSIVE`` at
0.9 / 1.5 s: the fastest in both cases. So every CLI, before it imports torch:

* sets ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep instead of spinning), unless it is set already;
* gives each local process ``usable cores // local processes`` threads (``--num-gpus N`` CPU workers
  share the cores instead of each taking all of them), unless ``OMP_NUM_THREADS`` is set already.

Override with the environment: ``OMP_NUM_THREADS=4`` (threads per process), ``OMP_WAIT_POLICY=ACTIVE``
(spin), or ``GN_DET_THREAD_POLICY=off`` (leave torch's and OpenMP's own defaults alone).

This module imports nothing heavy: it must run before torch.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Mapping, MutableMapping

__all__ = ["POLICY_ENV", "ThreadPolicy", "apply_thread_policy", "choose_thread_policy", "usable_cores",
           "thread_policy_line"]

POLICY_ENV = "GN_DET_THREAD_POLICY"  # "off": leave OMP_NUM_THREADS / OMP_WAIT_POLICY to torch and OpenMP
# Set to the thread count gn_det chose, so a worker process it starts (which inherits
# OMP_NUM_THREADS) can tell gn_det's choice from the user's and divide the cores again.
_CHOSEN_ENV = "GN_DET_CHOSEN_THREADS"
_CHOSEN_WAIT_ENV = "GN_DET_CHOSEN_WAIT_POLICY"  # likewise for OMP_WAIT_POLICY


@dataclass(frozen=True)
class ThreadPolicy:
    """Threads per process and OpenMP's wait policy, and where each came from.

    Attributes:
        threads: intra-op threads per process (None: torch's default, policy off).
        wait_policy: ``OMP_WAIT_POLICY`` (None: OpenMP's default, policy off).
        threads_from: ``"OMP_NUM_THREADS"`` (the user's), ``"auto"`` or ``"off"``.
        wait_from: ``"OMP_WAIT_POLICY"`` (the user's), ``"auto"`` or ``"off"``.
        cores: usable physical cores of this process (:func:`usable_cores`).
        procs: local processes sharing them.
    """

    threads: int | None
    wait_policy: str | None
    threads_from: str
    wait_from: str
    cores: int
    procs: int = 1


def usable_cores() -> int:
    """Physical cores this process may run on: the CPUs of its affinity mask (``taskset``, a
    container's cpuset), hyper-threads of one core counted once, as torch's own default counts."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(topology + "physical_package_id") as f, open(topology + "core_id") as g:
                cores.add((f.read().strip(), g.read().strip()))
        except OSError:  # no topology (some containers): every CPU a core
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def _user_threads(environ: Mapping[str, str]) -> int | None:
    """The user's OMP_NUM_THREADS as a positive int (None: unset, gn_det's own, or not a count)."""
    value = environ.get("OMP_NUM_THREADS", "").strip()
    if not value or value == environ.get(_CHOSEN_ENV):
        return None
    try:
        threads = int(value.split(",")[0])  # OpenMP allows a per-level list: "4,2"
    except ValueError:
        return None
    return threads if threads > 0 else None


def choose_thread_policy(environ: Mapping[str, str], cores: int, procs: int = 1) -> ThreadPolicy:
    """The policy for a process of a job with ``procs`` local processes on ``cores`` usable cores.

    Args:
        environ: the environment (``os.environ``); the user's ``OMP_NUM_THREADS`` and
            ``OMP_WAIT_POLICY`` win, ``GN_DET_THREAD_POLICY=off`` turns the policy off.
        cores: usable physical cores (:func:`usable_cores`).
        procs: local processes of the job (``--num-gpus``), each getting ``cores // procs`` threads.
    """
    cores, procs = max(1, cores), max(1, procs)
    if environ.get(POLICY_ENV, "").strip().lower() in ("off", "0", "no", "false"):
        return ThreadPolicy(None, environ.get("OMP_WAIT_POLICY"), "off", "off", cores, procs)
    user = _user_threads(environ)
    threads, threads_from = (user, "OMP_NUM_THREADS") if user else (max(1, cores // procs), "auto")
    wait = environ.get("OMP_WAIT_POLICY", "").strip()
    if wait and wait == environ.get(_CHOSEN_WAIT_ENV):  # gn_det's choice, inherited from its launcher
        wait = ""
    wait_policy, wait_from = (wait, "OMP_WAIT_POLICY") if wait else ("PASSIVE", "auto")
    return ThreadPolicy(threads, wait_policy, threads_from, wait_from, cores, procs)


def apply_thread_policy(procs: int = 1, environ: MutableMapping[str, str] | None = None) -> ThreadPolicy:
    """Choose the policy and set it: in the environment (read by torch and OpenMP when they start,
    and inherited by worker processes) and, if torch is already imported, its thread count.

    Call it before importing torch: OpenMP reads ``OMP_WAIT_POLICY`` once, when it starts.

    Args:
        procs: local processes of the job, sharing the usable cores.
        environ: the environment to read and set (default ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    policy = choose_thread_policy(environ, usable_cores(), procs)
    if policy.threads_from == "off":
        return policy
    if policy.threads_from == "auto":
        environ["OMP_NUM_THREADS"] = environ[_CHOSEN_ENV] = str(policy.threads)
    environ["OMP_WAIT_POLICY"] = policy.wait_policy
    if policy.wait_from == "auto":
        environ[_CHOSEN_WAIT_ENV] = policy.wait_policy
    torch = sys.modules.get("torch")
    if torch is not None and environ is os.environ and torch.get_num_threads() != policy.threads:
        torch.set_num_threads(policy.threads)
    return policy


def thread_policy_line(policy: ThreadPolicy) -> str:
    """One log line: what runs and how to change it."""
    if policy.threads_from == "off":
        return f"CPU threads: {POLICY_ENV}=off, torch's and OpenMP's defaults"
    how = ("OMP_NUM_THREADS" if policy.threads_from == "OMP_NUM_THREADS"
           else f"{policy.cores} usable cores / {policy.procs} local process{'es' if policy.procs > 1 else ''}; "
                f"set OMP_NUM_THREADS to change")
    wait = "set by OMP_WAIT_POLICY" if policy.wait_from == "OMP_WAIT_POLICY" else "OMP_WAIT_POLICY=ACTIVE to spin"
    return (f"CPU threads: {policy.threads} per process ({how}), OMP_WAIT_POLICY={policy.wait_policy} ({wait}; "
            f"{POLICY_ENV}=off for torch's defaults)")
