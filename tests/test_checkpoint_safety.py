"""Untrusted checkpoints: malicious pickles run nothing; broken files give clear errors; writes are atomic."""

import os
import pickle

import numpy as np
import pytest
import torch

from gn_det.checkpoint import (CheckpointError, atomic_save, atomic_write_pickle, load_pickle, read_checkpoint,
                               safe_torch_load)


class _Evil:
    """Unpickling this calls os.system, which would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pkl_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps({"model": {"conv1.weight": np.zeros(3)}, "x": _Evil(marker)}))
    pickle.loads(pickle.dumps(_Evil(tmp_path / "control")))  # the payload does work when unrestricted
    assert (tmp_path / "control").exists()
    with pytest.raises(CheckpointError, match=r"model_final\.pkl is not a plain weights pickle.*(posix|os)\.system"):
        load_pickle(path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="system"):
        read_checkpoint(path)
    assert not marker.exists()


def test_malicious_pth_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(3), "x": _Evil(marker)}, path)
    with pytest.raises(CheckpointError, match=r"resnet\.pth holds Python objects that weights_only loading refuses"):
        safe_torch_load(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_restricted_unpickler_reads_numpy_weights(tmp_path, protocol):
    weights = {"conv1_w": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2), "lr": np.float32(0.1),
               "iter": 7, "names": ("a", "b")}
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps({"blobs": weights}, protocol=protocol))
    back = load_pickle(path)["blobs"]
    np.testing.assert_array_equal(back["conv1_w"], weights["conv1_w"])
    assert back["conv1_w"].dtype == np.float32 and back["lr"] == np.float32(0.1) and back["iter"] == 7


def _python2_array_pickle(values: np.ndarray) -> bytes:
    """The bytes Python 2 writes for pickle.dumps(array, 2): array data as a py2 str (opcode U)."""
    def short_str(b):
        return b"U" + bytes([len(b)]) + b
    return (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85q\x02"
            + short_str(b"b") + b"\x87q\x03Rq\x04(K\x01K\x03\x85cnumpy\ndtype\nq\x05" + short_str(b"f8")
            + b"K\x00K\x01\x87Rq\x06(K\x03" + short_str(b"<")
            + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + short_str(values.astype("<f8").tobytes())
            + b"tb.")


def test_python2_pickle_reads_with_latin1(tmp_path):
    values = np.array([1.5, -2.0, 3.25])
    raw = _python2_array_pickle(values)
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(raw)  # Python 3's default (ASCII) cannot read the array bytes
    path = tmp_path / "py2.pkl"
    path.write_bytes(raw)
    np.testing.assert_array_equal(load_pickle(path), values)


def _real_pth(path):
    torch.save({"conv1.weight": torch.randn(64, 3, 7, 7), "fc.bias": torch.randn(10)}, path)
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_broken_pth_gives_clear_error(tmp_path, damage):
    path = tmp_path / "broken.pth"
    data = _real_pth(path)
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(2048), "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=r"broken\.pth (is truncated or corrupt|is corrupt|is empty)"):
        safe_torch_load(path)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_broken_pkl_gives_clear_error(tmp_path, damage):
    path = tmp_path / "broken.pkl"
    data = pickle.dumps({"blobs": {"conv1_w": np.zeros((64, 3, 7, 7), np.float32)}}, protocol=4)
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x80\x04not a pickle at all"}[damage])
    with pytest.raises(CheckpointError, match=r"broken\.pkl is (truncated or corrupt|corrupt)"):
        load_pickle(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint file not found: .*nothere\.pth"):
        safe_torch_load(tmp_path / "nothere.pth")
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nothere.pkl")


def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "ckpt.pth"
    atomic_save({"a": torch.ones(2)}, path)
    with pytest.raises(Exception):
        atomic_save({"a": lambda: None}, path)  # not picklable: fails mid-write
    assert torch.equal(safe_torch_load(path)["a"], torch.ones(2))
    atomic_write_pickle({"b": np.ones(2)}, tmp_path / "x.pkl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth", "x.pkl"]  # no temp files left
