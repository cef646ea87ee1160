"""The CLIs' CPU thread policy (gn_det.utils.threads): the user's settings win, the cores are divided
among local processes, and a CLI process really runs with the chosen thread count."""

import json
import os
import subprocess
import sys

import pytest

from gn_det.utils.threads import (POLICY_ENV, apply_thread_policy, choose_thread_policy, thread_policy_line,
                                  usable_cores)

DEMO = "configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("cores,procs,threads", [(2, 1, 2), (8, 1, 8), (8, 2, 4), (8, 3, 2), (2, 4, 1), (1, 1, 1)])
def test_auto_threads_divide_the_cores_among_local_processes(cores, procs, threads):
    policy = choose_thread_policy({}, cores, procs)
    assert (policy.threads, policy.threads_from) == (threads, "auto")
    assert (policy.wait_policy, policy.wait_from) == ("PASSIVE", "auto")


def test_the_users_settings_win():
    policy = choose_thread_policy({"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}, 8, 2)
    assert (policy.threads, policy.threads_from) == (3, "OMP_NUM_THREADS")
    assert (policy.wait_policy, policy.wait_from) == ("ACTIVE", "OMP_WAIT_POLICY")
    # OpenMP's per-level list: the first level counts
    assert choose_thread_policy({"OMP_NUM_THREADS": "5,2"}, 8).threads == 5


@pytest.mark.parametrize("value", ["", "0", "-1", "many"])
def test_an_unusable_omp_num_threads_is_not_a_choice(value):
    policy = choose_thread_policy({"OMP_NUM_THREADS": value}, 6, 2)
    assert (policy.threads, policy.threads_from) == (3, "auto")


def test_policy_off_leaves_everything_to_torch():
    policy = choose_thread_policy({POLICY_ENV: "off", "OMP_WAIT_POLICY": "ACTIVE"}, 8)
    assert (policy.threads, policy.threads_from, policy.wait_policy) == (None, "off", "ACTIVE")
    env = {POLICY_ENV: "off"}
    apply_thread_policy(environ=env)
    assert env == {POLICY_ENV: "off"}
    assert "off" in thread_policy_line(policy)


def test_apply_sets_the_environment_and_a_worker_divides_again():
    env: dict[str, str] = {}
    first = apply_thread_policy(procs=1, environ=env)
    assert env["OMP_NUM_THREADS"] == str(first.threads) == str(usable_cores())
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    # A worker inherits gn_det's OMP_NUM_THREADS: it is gn_det's choice, not the user's, so a job of
    # 2 local processes divides the cores again instead of keeping the launcher's count.
    worker = apply_thread_policy(procs=2, environ=env)
    assert worker.threads_from == "auto" and worker.threads == max(1, usable_cores() // 2)
    assert (worker.wait_policy, worker.wait_from) == ("PASSIVE", "auto")
    assert env["OMP_NUM_THREADS"] == str(worker.threads)
    # ... while the user's count is kept through the same steps
    user = {"OMP_NUM_THREADS": "7", "OMP_WAIT_POLICY": "ACTIVE"}
    policy = apply_thread_policy(procs=2, environ=user)
    assert (policy.threads, policy.wait_policy, policy.wait_from) == (7, "ACTIVE", "OMP_WAIT_POLICY")
    assert user["OMP_NUM_THREADS"] == "7" and user["OMP_WAIT_POLICY"] == "ACTIVE"


def test_log_line_names_the_policy_and_the_override():
    line = thread_policy_line(choose_thread_policy({}, 4, 2))
    assert line.startswith("CPU threads: 2 per process (4 usable cores / 2 local processes")
    assert "OMP_NUM_THREADS" in line and "OMP_WAIT_POLICY=PASSIVE" in line


_PROBE = """
import json, os, sys, types
from gn_det.cli import train_net
def fake_launch(*args, **kwargs):  # stands for the run: report what torch uses by then
    import torch
    print(json.dumps({"threads": torch.get_num_threads(), "wait": os.environ.get("OMP_WAIT_POLICY")}))
train_net.launch = fake_launch
# the config is not what is tested here (and building the trainer's checks imports torchvision)
train_net.setup_cfg = lambda args: types.SimpleNamespace(OUTPUT_DIR=args.opts[-1])
sys.exit(train_net.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("user_threads,num_gpus", [(None, 2), ("1", 1)])
def test_train_cli_runs_torch_with_the_chosen_threads(tmp_path, user_threads, num_gpus):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", POLICY_ENV)}
    env.update(GN_DET_CHOSEN_THREADS="", GN_DET_CHOSEN_WAIT_POLICY="")
    if user_threads:
        env["OMP_NUM_THREADS"] = user_threads
    out = subprocess.run([sys.executable, "-c", _PROBE, "--config-file", DEMO, "--num-gpus", str(num_gpus),
                          "OUTPUT_DIR", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    expected = int(user_threads) if user_threads else max(1, usable_cores() // num_gpus)
    assert seen == {"threads": expected, "wait": "PASSIVE"}
