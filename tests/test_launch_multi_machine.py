"""Multi-machine runs for real, on one machine: two ``gn-det-train`` launchers as machines 0 and 1
(``--num-machines 2 --machine-rank 0/1 --dist-url tcp://127.0.0.1:PORT --num-gpus 1``, gloo on CPU),
and how a distributed job ends when a rank fails: one line naming the rank and the cause, never a
hang, the traceback only in the rank's log file.

Each test starts real processes (about 10-25 s on a loaded 2-core machine: most of it is importing
torch in the launchers and their workers).
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine_toy_task import toy_opts
from gn_det.config import load_config
from gn_det.engine.launch import find_free_port
from gn_det.engine.replicas import parameter_fingerprint
from gn_det.engine.setup import default_setup
from gn_det.engine.task import get_task
from gn_det.engine.trainer import Trainer

TESTS_DIR = Path(__file__).resolve().parent
CLS_CONFIG = str(TESTS_DIR.parent / "configs" / "classification" / "synthetic" / "R_18_gn_test.yaml")
_SCRIPT = Path(sys.executable).with_name("gn-det-train")  # the installed console script
GN_DET_TRAIN = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "gn_det.cli.train_net"]
START_TIMEOUT_S = 240  # starting processes on a loaded CI machine


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))


def _start(argv, log_dir: Path, name: str) -> subprocess.Popen:
    """``gn-det-train argv`` in its own session (so that a test can kill a whole "machine"),
    stdout and stderr to files (a full pipe would block it)."""
    out = open(log_dir / f"{name}.out", "w")
    err = open(log_dir / f"{name}.err", "w")
    proc = subprocess.Popen([*GN_DET_TRAIN, *argv], env=_env(), stdout=out, stderr=err, start_new_session=True)
    proc.stderr_path = log_dir / f"{name}.err"  # type: ignore[attr-defined]
    return proc


def _machines(opts, log_dir: Path, flags=()) -> list[subprocess.Popen]:
    url = f"tcp://127.0.0.1:{find_free_port()}"
    return [_start(["--num-machines", "2", "--machine-rank", str(r), "--num-gpus", "1", "--dist-url", url,
                    *flags, *opts], log_dir, f"machine{r}") for r in (0, 1)]


def _wait(proc: subprocess.Popen, timeout: float = START_TIMEOUT_S) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        pytest.fail(f"{proc.args} still running after {timeout} s: {_stderr(proc)[-2000:]}")


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process and its whole session (launcher and workers: a machine lost)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _stderr(proc) -> str:
    return proc.stderr_path.read_text()


def _error_line(proc) -> str:
    """The last line of stderr, which must be the only error line: ``gn-det-train: error: ...``."""
    err = _stderr(proc)
    assert "Traceback" not in err, err[-3000:]
    lines = [s for s in err.splitlines() if s.strip()]
    errors = [s for s in lines if "error:" in s]
    assert errors == [lines[-1]], err[-3000:]
    return lines[-1]


def _wait_for(path: Path, procs, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            for p in procs:
                _kill(p)
            pytest.fail(f"{path} never appeared: " + " | ".join(_stderr(p)[-1500:] for p in procs))
        time.sleep(0.1)


def _fingerprints(log: Path) -> list[str]:
    return [line.split("fingerprint ")[1].rstrip(")") for line in log.read_text().splitlines()
            if "Parameters identical on all 2 ranks" in line]


def _model_fingerprint(cfg, state: dict) -> str:
    model = get_task(cfg.TASK).build_model(cfg)
    model.load_state_dict(state)
    return parameter_fingerprint(model.named_parameters())


def test_two_machines_train_as_one_process_and_resume_exactly(tmp_path):
    """Classification (ResNet-18 GN, the synthetic test set): 2 machines x 1 process, 4 images per
    step, 3 steps, a checkpoint after step 2."""
    opts = ["--config-file", CLS_CONFIG, "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "3",
            "SOLVER.CHECKPOINT_PERIOD", "2", "DATASETS.TEST", "()", "MODEL.DEVICE", "cpu", "LOG_PERIOD", "1"]
    out = tmp_path / "two"
    procs = _machines([*opts, "OUTPUT_DIR", str(out)], tmp_path)
    assert [_wait(p) for p in procs] == [0, 0], [_stderr(p)[-3000:] for p in procs]
    log0, log1 = (out / "log.txt").read_text(), (out / "log.txt.rank1").read_text()
    assert "Rank 0 of 2" in log0 and "Rank 1 of 2" in log1
    # the global batch of 4 is split into 2 images on each of the 2 ranks
    assert "World size 2, 2 image(s) per rank per micro-batch, 1 micro-batch(es) per step, 4 images per step" in log0

    cfg = load_config(CLS_CONFIG, [*opts[2:], "OUTPUT_DIR", str(tmp_path / "one")])
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["iteration"] == 2 and len(final["rng_states"]) == 2
    # parameters identical across the ranks: each rank logged the fingerprint of its own replica
    fingerprint = _model_fingerprint(cfg, final["model"])
    assert _fingerprints(out / "log.txt") == _fingerprints(out / "log.txt.rank1") == [fingerprint]

    # one process with the whole batch of 4 reaches the same weights: each rank saw its own half of
    # every global batch (GN: no term mixes images, so only the summation order differs)
    one = Trainer(default_setup(cfg), get_task("classification"))
    one.train()
    single = one.unwrapped_model.state_dict()
    assert set(single) == set(final["model"])
    for k, v in single.items():
        torch.testing.assert_close(final["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    first = torch.load(out / "model_0000001.pth", weights_only=True)["model"]
    assert any(not torch.equal(first[k], final["model"][k]) for k in first)  # step 3 did change weights

    # --resume of the two-machine run from the step-2 checkpoint: bit-identical final weights
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(out / "model_0000001.pth", resumed)
    (resumed / "last_checkpoint").write_text("model_0000001.pth")
    procs = _machines(["--resume", *opts, "OUTPUT_DIR", str(resumed)], tmp_path)
    assert [_wait(p) for p in procs] == [0, 0], [_stderr(p)[-3000:] for p in procs]
    assert "Resuming from" in (resumed / "log.txt").read_text()
    again = torch.load(resumed / "model_final.pth", weights_only=True)["model"]
    for k, v in final["model"].items():
        assert torch.equal(again[k], v), k
    assert _fingerprints(resumed / "log.txt.rank1") == [fingerprint]


def _toy_long_run(out: Path) -> list[str]:
    return toy_opts(str(out), **{"SOLVER.MAX_ITER": 10**6, "DATASETS.TEST": (), "LOG_PERIOD": 1,
                                 "SOLVER.CHECKPOINT_PERIOD": 10**6})


def test_killing_one_machines_launcher_ends_the_other_naming_the_lost_rank(tmp_path):
    out = tmp_path / "run"
    procs = _machines(_toy_long_run(out), tmp_path, flags=["--dist-timeout", "60"])
    _wait_for(out / "metrics.json", procs)  # both machines joined and train
    killed = time.monotonic()
    os.kill(procs[1].pid, signal.SIGKILL)  # machine 1's launcher; its worker is told by the kernel
    code = _wait(procs[0], timeout=60)
    took = time.monotonic() - killed
    try:
        assert code == 3  # training failed
        line = _error_line(procs[0])
        assert line == ("gn-det-train: error: rank 1 of 2 (machine 1): interrupted (SIGINT: Ctrl-C, or this "
                        "machine's launcher ended)"), line
        assert took < 20, took  # seconds (1-10 here), not the 60 s collective timeout
        log = (out / "log.txt").read_text()
        assert "stopped by another rank: rank 1 of 2 (machine 1)" in log and "Traceback" in log  # only in the log
        procs[1].wait()  # reap the killed launcher
        deadline = time.monotonic() + 10
        while _group_alive(procs[1].pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group_alive(procs[1].pid)  # the orphaned worker of machine 1 ended too
    finally:
        _kill(procs[1])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_stuck_machine_ends_after_the_collective_timeout(tmp_path):
    """A machine that stops answering (SIGSTOP: as a machine cut off the network) ends the job after
    --dist-timeout, naming the rank whose heartbeat stopped."""
    out = tmp_path / "run"
    procs = _machines(_toy_long_run(out), tmp_path, flags=["--dist-timeout", "4"])
    _wait_for(out / "metrics.json", procs)
    os.killpg(procs[1].pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        code = _wait(procs[0], timeout=60)
        took = time.monotonic() - stopped
    finally:
        _kill(procs[1])
    assert code == 3
    line = _error_line(procs[0])
    assert line.startswith("gn-det-train: error: lost rank 1 of 2 (machine 1): no heartbeat for 3 s, so its process "
                           "or machine is gone"), line
    assert 4 < took < 25, took  # the 4 s collective timeout, then 3 s without heartbeat


def test_rendezvous_times_out_naming_the_missing_machine(tmp_path):
    url = f"tcp://127.0.0.1:{find_free_port()}"
    proc = _start(["--num-machines", "2", "--machine-rank", "0", "--num-gpus", "1", "--dist-url", url,
                   "--rendezvous-timeout", "2", *toy_opts(str(tmp_path / "run"))], tmp_path, "alone")
    assert _wait(proc) == 2  # a machine not started: the fix is in how the job was started
    line = _error_line(proc)
    assert f"rendezvous at {url} timed out after 2 s: machine(s) 1 (rank(s) 1) did not join" in line, line
    assert "--rendezvous-timeout" in line


def test_a_rank_that_raises_ends_the_job_naming_it_and_the_cause(tmp_path):
    out = tmp_path / "run"
    proc = _start(["--num-gpus", "2", *toy_opts(str(out), TASK="launch_fault_tasks:RaisingRankToyTask",
                                                **{"DATASETS.TEST": ()})], tmp_path, "job")
    assert _wait(proc) == 1  # an unexpected error (here, the task's own)
    line = _error_line(proc)
    assert line.startswith("gn-det-train: error: rank 1 of 2 (machine 0): ValueError: sample 14 is corrupt "
                           "(raised on purpose by rank 1) (full traceback in "), line
    assert line.endswith(f"{out / 'log.txt.rank1'})")
    rank1_log = (out / "log.txt.rank1").read_text()
    assert "Traceback" in rank1_log and "in __iter__" in rank1_log


def test_a_killed_rank_ends_the_job_naming_it_and_the_signal(tmp_path):
    out = tmp_path / "run"
    proc = _start(["--num-gpus", "2", *_toy_long_run(out)], tmp_path, "job")
    _wait_for(out / "metrics.json", [proc])
    worker = _process_with_open_file(proc.pid, out / "log.txt.rank1")
    os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()
    assert _wait(proc, timeout=60) == 3
    assert time.monotonic() - killed < 15
    line = _error_line(proc)
    assert line.startswith(f"gn-det-train: error: rank 1 of 2 (machine 0), pid {worker}, was killed by SIGKILL"), line


def _process_with_open_file(parent: int, path: Path) -> int:
    """The child of ``parent`` that has ``path`` open (rank 1's worker holds log.txt.rank1)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    for pid in children:
        try:
            if any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return int(pid)
        except OSError:
            continue
    pytest.fail(f"no child of {parent} has {path} open")


def test_timeouts_come_from_the_flag_else_the_environment(monkeypatch, capsys):
    from datetime import timedelta

    from gn_det.cli.train_net import main
    from gn_det.engine.launch import DEFAULT_TIMEOUT, timeout_setting

    monkeypatch.delenv("GN_DET_DIST_TIMEOUT", raising=False)
    assert timeout_setting(None, "GN_DET_DIST_TIMEOUT") == DEFAULT_TIMEOUT == timedelta(minutes=30)
    monkeypatch.setenv("GN_DET_DIST_TIMEOUT", "45")
    assert timeout_setting(None, "GN_DET_DIST_TIMEOUT") == timedelta(seconds=45)
    assert timeout_setting(7.5, "GN_DET_DIST_TIMEOUT") == timedelta(seconds=7.5)  # the flag wins
    for argv, message in ((["--dist-timeout", "0"], "--dist-timeout must be a positive number of seconds, got 0"),
                          (["--rendezvous-timeout", "-3"], "--rendezvous-timeout must be a positive number"),
                          ([], "GN_DET_DIST_TIMEOUT='soon' is not a number of seconds")):
        monkeypatch.setenv("GN_DET_DIST_TIMEOUT", "soon" if not argv else "45")
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err
