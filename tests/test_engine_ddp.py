"""DDP on 2 CPU processes (gloo), started by the engine's launch: same parameters on every rank,
the global batch split across ranks, and the result equal to one process seeing the whole batch."""

import os
import subprocess
import sys

import torch

from engine_toy_task import ToyTask, ddp_worker, toy_opts
from gn_det.config import load_config
from gn_det.engine.launch import find_free_port, launch
from gn_det.engine.setup import seed_all_rng
from gn_det.engine.trainer import Trainer


def test_ddp_two_cpu_processes(tmp_path):
    torch.set_num_threads(1)
    # 8 images per step = 2 ranks x 2 micro-batches (accumulation, DDP no_sync) x 2 images
    opts = toy_opts(str(tmp_path / "ddp"), **{"SOLVER.IMS_PER_BATCH": 8, "SOLVER.ACCUM_STEPS": 2,
                                               "SOLVER.MAX_ITER": 3, "SOLVER.CHECKPOINT_PERIOD": 2})
    launch(ddp_worker, 2, dist_url="auto", args=(opts, str(tmp_path)))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))

    assert r0["world"] == r1["world"] == 2
    assert r0["micro"] == r1["micro"] == [2]
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k  # DDP kept the replicas identical

    for step in range(3):
        ids0 = sum(r0["seen"][2 * step: 2 * step + 2], [])
        ids1 = sum(r1["seen"][2 * step: 2 * step + 2], [])
        assert len(set(ids0)) == len(set(ids1)) == 4  # IMS_PER_BATCH / world distinct samples each
        assert not set(ids0) & set(ids1)
        assert sorted(ids0 + ids1) == list(range(8 * step, 8 * step + 8))

    # the test set is sharded and gathered: the main process reports all 32 samples
    assert r0["eval"]["toy_test"]["cls"]["num_samples"] == 32.0
    assert r1["eval"]["toy_test"] == {}
    out = tmp_path / "ddp"
    assert (out / "model_0000001.pth").exists() and (out / "model_final.pth").exists()
    assert (out / "log.txt").exists() and (out / "log.txt.rank1").exists()

    # one process with the whole batch of 8 reaches the same weights (GN: no cross-sample terms)
    cfg = load_config(None, toy_opts(str(tmp_path / "single"), **{"SOLVER.IMS_PER_BATCH": 8,
                                                                   "SOLVER.MAX_ITER": 3, "DATASETS.TEST": ()}))
    os.makedirs(cfg.OUTPUT_DIR)
    seed_all_rng(0)
    single = Trainer(cfg, ToyTask())
    single.train()
    for k, v in single.unwrapped_model.state_dict().items():
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_torchrun_runs_train_net_distributed(tmp_path):
    """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; train_net joins that job instead of spawning."""
    out = tmp_path / "torchrun"
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(find_free_port()), "-m", "gn_det.cli.train_net",
           *toy_opts(str(out), **{"SOLVER.MAX_ITER": 2, "DATASETS.TEST": ()})]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Rank 0 of 2" in (out / "log.txt").read_text()
    assert "Rank 1 of 2" in (out / "log.txt.rank1").read_text()
    assert "2 image(s) per rank per micro-batch" in (out / "log.txt").read_text()  # 4 images / 2 ranks
    assert (out / "model_final.pth").exists()
