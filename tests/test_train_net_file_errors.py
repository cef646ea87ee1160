"""File-system failures of a real ``gn-det-train`` run end with one line naming the file and what to
do, exit code 2 for a user error and 3 for a failed training, the traceback only in log.txt.

A full disk and a read-only OUTPUT_DIR are real: a size-limited tmpfs and a read-only bind mount,
made in a private mount namespace (``unshare -rm``: no root needed where user namespaces are
enabled). The four runs start together to share their start-up time.
"""

import json
import os
import pickle
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine_toy_task import toy_opts

TESTS_DIR = Path(__file__).resolve().parent
CLS_CONFIG = str(TESTS_DIR.parent / "configs" / "classification" / "synthetic" / "R_18_gn_test.yaml")
_SCRIPT = Path(sys.executable).with_name("gn-det-train")
GN_DET_TRAIN = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "gn_det.cli.train_net"]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /tmp"],
                           capture_output=True)
    return probe.returncode == 0


def _in_namespace(setup: str, argv: list[str], after: str = "") -> list[str]:
    """``sh -c`` in a private mount namespace: ``setup`` (mounts), then gn-det-train, then ``after``
    (copy files out of a tmpfs that ends with the namespace); exits with gn-det-train's code."""
    cmd = shlex.join([*GN_DET_TRAIN, *argv])
    return ["unshare", "-rm", "sh", "-c", f"{setup} && {{ {cmd}; rc=$?; {after or 'true'}; exit $rc; }}"]


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [s for s in stderr.splitlines() if s.strip()]
    assert [s for s in lines if "error:" in s] == [lines[-1]], stderr[-3000:]
    return lines[-1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start the four runs at once; {name: (exit code, stderr, folder)}."""
    tmp = tmp_path_factory.mktemp("file_errors")
    cases = {}

    # MODEL.WEIGHTS names a directory (an OUTPUT_DIR) instead of the checkpoint in it
    weights_dir = tmp / "earlier_run"
    weights_dir.mkdir()
    (weights_dir / "model_final.pth").write_bytes(b"x")
    (weights_dir / "model_0000999.pth").write_bytes(b"x")
    cases["weights_dir"] = [*GN_DET_TRAIN, *toy_opts(str(tmp / "out_dir"), **{"MODEL.WEIGHTS": str(weights_dir)})]

    # a detectron2-style .pkl whose one entry is a numpy object array
    bad = np.empty(2, dtype=object)
    bad[0], bad[1] = np.ones(3, np.float32), "x"
    model = {"stem.conv1.weight": np.random.RandomState(0).rand(64, 3, 7, 7).astype(np.float32),
             "stem.conv1.norm.weight": bad}
    with open(tmp / "objects.pkl", "wb") as f:
        pickle.dump({"model": model, "__author__": "someone", "matching_heuristics": True}, f)
    cases["object_array"] = [*GN_DET_TRAIN, "--config-file", CLS_CONFIG, "MODEL.DEVICE", "cpu",
                             "OUTPUT_DIR", str(tmp / "out_pkl"), "MODEL.WEIGHTS", str(tmp / "objects.pkl")]

    if _can_unshare():
        # OUTPUT_DIR on a read-only mount
        ro = tmp / "readonly"
        (ro / "out").mkdir(parents=True)
        q = shlex.quote(str(ro))
        cases["read_only"] = _in_namespace(f"mount --bind {q} {q} && mount -o remount,bind,ro {q}",
                                           toy_opts(str(ro / "out")))
        # a 1 MiB disk: config.yaml and the logs fit, the first checkpoint (90 MB) does not
        full = tmp / "small_disk"
        full.mkdir()
        keep = tmp / "small_disk_after"
        cases["disk_full"] = _in_namespace(
            f"mount -t tmpfs -o size=1m tmpfs {shlex.quote(str(full))}",
            ["--config-file", CLS_CONFIG, "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(full / "out"),
             "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "2",
             "DATASETS.TEST", "()", "LOG_PERIOD", "1"],
            after=f"cp -r {shlex.quote(str(full / 'out'))} {shlex.quote(str(keep))}")
    elif os.geteuid() != 0:  # no namespaces: a folder without write permission does it for a user
        ro = tmp / "readonly"
        (ro / "out").mkdir(parents=True)
        os.chmod(ro / "out", 0o555)
        cases["read_only"] = [*GN_DET_TRAIN, *toy_opts(str(ro / "out"))]

    procs = {name: subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for name, argv in cases.items()}
    results = {}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        results[name] = (proc.returncode, err, tmp)
    return results


def test_weights_directory_is_named_as_a_directory(runs):
    code, err, tmp = runs["weights_dir"]
    assert code == 2
    line = _one_error_line(err)
    folder = tmp / "earlier_run"
    assert line == (f"gn-det-train: error: {folder} is a directory, not a checkpoint file: give the file inside it, "
                    f"e.g. {folder / 'model_final.pth'} (it holds model_0000999.pth, model_final.pth)")


def test_pickle_with_an_object_array_is_one_line(runs):
    code, err, tmp = runs["object_array"]
    assert code == 2
    line = _one_error_line(err)
    assert line.startswith(f"gn-det-train: error: {tmp / 'objects.pkl'}: entry 'model/stem.conv1.norm.weight' is "
                           f"a numpy array of Python objects (dtype=object)"), line
    assert "TypeError" not in err


def test_read_only_output_dir_is_one_line_exit_2(runs):
    if "read_only" not in runs:
        pytest.skip("needs user namespaces (unshare -rm) or a non-root user")
    code, err, tmp = runs["read_only"]
    assert code == 2
    line = _one_error_line(err)
    out = tmp / "readonly" / "out"
    reason = "Read-only file system" if "disk_full" in runs else "Permission denied"
    assert line == (f"gn-det-train: error: OUTPUT_DIR '{out}' is not writable ({reason}); set OUTPUT_DIR to a "
                    f"folder you can write")


def test_disk_full_during_training_names_the_file_exit_3(runs):
    if "disk_full" not in runs:
        pytest.skip("needs user namespaces (unshare -rm) to mount a small tmpfs")
    code, err, tmp = runs["disk_full"]
    assert code == 3  # training failed: not a user error, not a bug
    line = _one_error_line(err)
    out = tmp / "small_disk" / "out"
    assert line.startswith(f"gn-det-train: error: No space left on device while writing {out / 'model_0000001.pth'}: "
                           "free space on that disk"), line
    assert "rerun with --resume" in line and "enforce fail" not in err
    after = tmp / "small_disk_after"
    log = (after / "log.txt").read_text()
    assert "Traceback" in log and "No space left on device" in log  # the full story is in the log
    assert [json.loads(s)["iteration"] for s in (after / "metrics.json").read_text().splitlines()] == [0, 1]
    assert not [p for p in os.listdir(after) if p.endswith(".tmp")]  # the partial file was removed
