"""Which rank of a distributed job failed, and why, in one line.

When one process of a job dies, the others only see a broken connection ("Connection reset by
peer") in their next collective, or a timeout when the peer is alive but silent. To end every
machine's part of the job with one line naming the rank and the cause, the processes share a
:class:`FailureBoard` through the rendezvous store (a TCP key-value store hosted by machine 0's
launcher):

* a rank that fails writes its one-line cause under ``gn_det/failed/<rank>`` before it exits;
* every rank bumps a heartbeat counter ``gn_det/heartbeat/<rank>`` a few times a second, from a
  thread of its own;
* a rank whose collective breaks reads the board (:meth:`FailureBoard.diagnose`): another rank's
  report if one arrives within a few seconds; otherwise the ranks whose heartbeat stopped
  (killed, out of memory, machine or network gone); otherwise, when the store itself cannot be
  reached, machine 0 (which hosts it).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Iterator

from ..utils.lazy import lazy_module

dist = lazy_module("torch.distributed")  # imported on first use: the CLIs read this module's exit codes first

__all__ = ["Failure", "FailureBoard", "is_peer_error", "first_line", "exception_chain", "HEARTBEAT_INTERVAL_S",
           "SILENCE_S", "EXIT_UNEXPECTED", "EXIT_USER_ERROR", "EXIT_TRAINING_FAILED", "EXIT_INTERRUPTED"]

logger = logging.getLogger(__name__)

# Exit codes of a failed run (``gn-det-train`` documents them).
EXIT_UNEXPECTED = 1  # a bug
EXIT_USER_ERROR = 2  # the fix is in the command line, config or files
EXIT_TRAINING_FAILED = 3  # non-finite loss, disk full, a rank lost
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C

HEARTBEAT_INTERVAL_S = 0.5
SILENCE_S = 3.0  # a rank whose heartbeat did not move for this long is gone
_PREFIX = "gn_det/"
# Words of torch.distributed / gloo / NCCL errors that a lost or stuck peer causes.
_PEER_ERROR_WORDS = ("connection reset", "connection closed", "connection refused", "broken pipe",
                     "timed out", "timeout", "gloo", "nccl", "processgroup", "socket", "peer")


@dataclass
class Failure:
    """Why a job ended, as one rank saw it.

    Attributes:
        culprit: the rank whose failure ended the job (None: unknown).
        code: the exit code to end with.
        line: one line naming the rank and the cause.
        own: the reporting rank failed by itself (False: it stopped because ``culprit`` failed).
    """

    culprit: int | None
    code: int
    line: str
    own: bool = True


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception (its most useful part)."""
    text = str(exc).strip()
    lines = [s.strip() for s in text.splitlines() if s.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc``, then the exceptions it was raised from or while handling (``__cause__`` /
    ``__context__``), each once: a library often wraps the informative one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_peer_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it chains to) may come from another rank's failure: a
    torch.distributed error, or a RuntimeError of the communication library."""
    return any(isinstance(e, dist.DistError)
               or (isinstance(e, RuntimeError) and any(w in str(e).lower() for w in _PEER_ERROR_WORDS))
               for e in exception_chain(exc))


class FailureBoard:
    """Failure reports and heartbeats of the ranks of one job, kept in the rendezvous store.

    Args:
        store: this process's client of the job's store.
        rank: this process's global rank.
        world_size: processes in the job.
        procs_per_machine: processes per machine (rank r runs on machine r // procs_per_machine).
        store_address: "host:port" of the store, for messages.
    """

    def __init__(self, store: dist.Store, rank: int, world_size: int, procs_per_machine: int,
                 store_address: str):
        self.store = store
        self.rank = rank
        self.world_size = world_size
        self.procs_per_machine = procs_per_machine
        self.store_address = store_address
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def where(self, rank: int) -> str:
        """``rank 3 of 4 (machine 1)``."""
        return f"rank {rank} of {self.world_size} (machine {rank // self.procs_per_machine})"

    # -------------------------------------------------------------------- heartbeat
    def start_heartbeat(self, interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        """Bump this rank's heartbeat every ``interval_s`` from a daemon thread (own connection)."""
        client = self.store.clone()
        key = f"{_PREFIX}heartbeat/{self.rank}"

        def beat() -> None:
            while not self._stop.is_set():
                try:
                    client.add(key, 1)
                except Exception:  # the store is gone: the others will notice without us
                    return
                self._stop.wait(interval_s)

        self._thread = threading.Thread(target=beat, name="gn_det-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()

    # ---------------------------------------------------------------------- reports
    def report(self, failure: Failure) -> None:
        """Publish this rank's failure (best effort: the store may be gone)."""
        try:
            self.store.set(f"{_PREFIX}failed/{self.rank}", json.dumps(asdict(failure)))
        except Exception as e:
            logger.debug("could not publish the failure of rank %d: %s", self.rank, e)

    def reports(self) -> dict[int, Failure]:
        """The failures the other ranks published so far, by reporting rank."""
        found = {}
        for r in range(self.world_size):
            key = f"{_PREFIX}failed/{r}"
            if r != self.rank and self.store.check([key]):
                found[r] = Failure(**json.loads(self.store.get(key)))
        return found

    def _heartbeats(self) -> dict[int, int]:
        return {r: self.store.add(f"{_PREFIX}heartbeat/{r}", 0) for r in range(self.world_size) if r != self.rank}

    # -------------------------------------------------------------------- diagnosis
    def diagnose(self, silence_s: float = SILENCE_S, grace_s: float = 1.0, poll_s: float = 0.1) -> Failure | None:
        """After a broken collective: which other rank ended the job, or None if none did.

        Waits for another rank's own report; after ``silence_s``, ranks whose heartbeat did not
        move since the call are declared lost; if none is, the others get ``grace_s`` more to
        report. A store that cannot be reached means machine 0 is gone.
        """
        start = time.monotonic()
        try:
            before = self._heartbeats()
            while True:
                reports = self.reports()
                own = [f for f in reports.values() if f.own]
                if own:
                    return min(own, key=lambda f: f.culprit if f.culprit is not None else self.world_size)
                elapsed = time.monotonic() - start
                if elapsed >= silence_s:
                    after = self._heartbeats()
                    lost = [r for r in after if after[r] == before[r]]
                    if lost:  # silent that long: gone, and no report will come
                        return self._lost(lost, silence_s)
                if elapsed >= silence_s + grace_s:
                    # Only second-hand reports (a rank that stopped because of another): pass them on.
                    return next(iter(reports.values()), None)
                time.sleep(poll_s)
        except Exception as e:  # the store is unreachable: its host, machine 0, is gone
            logger.debug("rendezvous store unreachable during diagnosis: %s", e)
            n = min(self.procs_per_machine, self.world_size)
            ranks = "rank 0" if n == 1 else f"ranks 0-{n - 1}"
            return Failure(culprit=0, code=EXIT_TRAINING_FAILED, own=False, line=(
                f"lost machine 0 ({ranks} of {self.world_size}; its launcher hosts the rendezvous at "
                f"{self.store_address}): its processes ended or the network to it is down; see machine "
                f"0's output and its log.txt"))

    def _lost(self, ranks: list[int], silence_s: float) -> Failure:
        names = ", ".join(self.where(r) for r in ranks)
        logs = ", ".join("log.txt" if r == 0 else f"log.txt.rank{r}" for r in ranks)
        return Failure(culprit=ranks[0], code=EXIT_TRAINING_FAILED, own=False, line=(
            f"lost {names}: no heartbeat for {silence_s:g} s, so its process or machine is gone "
            f"(killed, out of memory, or network down); see {logs} in its OUTPUT_DIR and the "
            f"system log (dmesg) of that machine"))
