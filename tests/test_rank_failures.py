"""FailureBoard in one process: three "ranks" (two per machine) on a real TCP store; which rank a
broken collective is blamed on, from reports and heartbeats."""

import time
from datetime import timedelta

import pytest
import torch.distributed as dist

from gn_det.engine.launch import find_free_port
from gn_det.engine.rank_failures import Failure, FailureBoard, is_peer_error


def _boards(port: int, world: int = 3) -> list[FailureBoard]:
    clients = [dist.TCPStore("127.0.0.1", port, None, False, timeout=timedelta(seconds=5)) for _ in range(world)]
    return [FailureBoard(c, r, world, 2, f"127.0.0.1:{port}") for r, c in enumerate(clients)]


def _server(port: int) -> dist.TCPStore:
    return dist.TCPStore("127.0.0.1", port, None, True, timeout=timedelta(seconds=5), wait_for_workers=False)


@pytest.fixture
def boards():
    port = find_free_port()
    server = _server(port)
    made = _boards(port)
    yield made
    for b in made:
        b.stop_heartbeat()
    del server


def test_own_report_of_another_rank_is_found_first(boards):
    b0, b1, b2 = boards
    b1.report(Failure(culprit=2, code=3, line="second hand", own=False))
    b2.report(Failure(culprit=2, code=1, line="rank 2 of 3 (machine 1): ValueError: x"))
    found = b0.diagnose(silence_s=5)
    assert (found.culprit, found.code, found.line, found.own) == (2, 1, "rank 2 of 3 (machine 1): ValueError: x", True)
    assert set(b0.reports()) == {1, 2} and b2.reports().keys() == {1}  # a rank never reads its own


def test_silent_rank_is_lost_and_beating_ranks_are_not(boards):
    b0, b1, b2 = boards
    b1.start_heartbeat(interval_s=0.05)  # rank 2 never beats: killed
    start = time.monotonic()
    found = b0.diagnose(silence_s=0.5)
    assert 0.5 <= time.monotonic() - start < 3
    assert found.culprit == 2 and found.code == 3 and not found.own
    assert found.line.startswith("lost rank 2 of 3 (machine 1): no heartbeat for 0.5 s") and "log.txt.rank2" in found.line


def test_no_culprit_when_every_rank_beats_and_none_reports(boards):
    b0, b1, b2 = boards
    b1.start_heartbeat(interval_s=0.05)
    b2.start_heartbeat(interval_s=0.05)
    assert b0.diagnose(silence_s=0.3, grace_s=0.2) is None


def test_unreachable_store_means_machine_0_is_lost():
    port = find_free_port()
    server = _server(port)
    b0, b1, b2 = _boards(port)
    del server  # machine 0's launcher, which hosts the store, is gone
    found = b2.diagnose(silence_s=0.3)
    assert found.culprit == 0 and found.code == 3
    assert found.line.startswith(f"lost machine 0 (ranks 0-1 of 3; its launcher hosts the rendezvous at "
                                 f"127.0.0.1:{port}): its processes ended")


def test_peer_errors_are_told_from_a_rank_s_own():
    gloo = RuntimeError("[../gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:26520: Connection reset by peer")
    try:
        try:
            raise gloo
        except RuntimeError as e:
            raise RuntimeError("DDP reducer failed") from e
    except RuntimeError as wrapped:
        assert is_peer_error(wrapped)
    assert is_peer_error(dist.DistNetworkError("socket closed"))
    assert not is_peer_error(ValueError("sample 14 is corrupt"))
    assert not is_peer_error(RuntimeError("CUDA out of memory"))
