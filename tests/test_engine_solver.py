"""Optimizer param groups, lr schedule and batch arithmetic, checked against plain formulas."""

import bisect

import pytest
import torch
from torch import nn

from gn_det.config import ConfigError, load_config
from gn_det.engine.lr_scheduler import build_lr_scheduler
from gn_det.engine.optimizer import build_optimizer
from gn_det.engine.trainer import micro_batch_size
from gn_det.layers import FrozenBatchNorm, create_norm


def _lrs(cfg, base_lr=1.0):
    """lr used at each iteration 0..MAX_ITER-1 by the built optimizer + scheduler."""
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base_lr)
    sched = build_lr_scheduler(cfg, opt)
    out = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _reference(it, warmup_iters, warmup_factor, steps, gamma, method="linear"):
    decay = gamma ** bisect.bisect_right(steps, it)
    if it >= warmup_iters:
        return decay
    if method == "constant":
        return warmup_factor
    alpha = it / warmup_iters
    return (warmup_factor * (1 - alpha) + alpha) * decay


@pytest.mark.parametrize("warmup,factor,steps,method", [
    (10, 0.001, (50, 80), "linear"),
    (0, 0.1, (30,), "linear"),
    (25, 0.2, (60, 70, 90), "constant"),
])
def test_warmup_multistep_matches_formula(warmup, factor, steps, method):
    cfg = load_config(None, ["SOLVER.MAX_ITER", "100", "SOLVER.WARMUP_ITERS", str(warmup),
                             "SOLVER.WARMUP_FACTOR", str(factor), "SOLVER.STEPS", str(steps),
                             "SOLVER.GAMMA", "0.1", "SOLVER.WARMUP_METHOD", method])
    got = _lrs(cfg, base_lr=0.02)
    want = [0.02 * _reference(i, warmup, factor, steps, 0.1, method) for i in range(100)]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert got[steps[0]] == pytest.approx(0.002)  # decayed exactly at the first step


def test_scheduler_keeps_bias_lr_ratio_and_state_roundtrip():
    cfg = load_config(None, ["SOLVER.MAX_ITER", "20", "SOLVER.WARMUP_ITERS", "5", "SOLVER.STEPS", "(10,)",
                             "SOLVER.BIAS_LR_FACTOR", "2.0"])
    model = nn.Linear(2, 2)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    for _ in range(12):
        opt.step()
        sched.step()
    lrs = {g["names"][0]: g["lr"] for g in opt.param_groups}
    assert lrs["bias"] == pytest.approx(2 * lrs["weight"])
    assert lrs["weight"] == pytest.approx(0.02 * 0.1)
    opt2 = build_optimizer(cfg, model)
    sched2 = build_lr_scheduler(cfg, opt2)
    sched2.load_state_dict(sched.state_dict())
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


def test_steps_past_max_iter_ignored_and_bad_schedules_rejected():
    cfg = load_config(None, ["SOLVER.MAX_ITER", "10", "SOLVER.STEPS", "(5, 20)", "SOLVER.WARMUP_ITERS", "0"])
    assert _lrs(cfg) == pytest.approx([1.0] * 5 + [0.1] * 5)  # a shortened run keeps the steps it reaches
    with pytest.raises(ConfigError, match="increasing"):
        _lrs(load_config(None, ["SOLVER.STEPS", "(20, 5)"]))
    with pytest.raises(ConfigError, match="WARMUP_METHOD 'cosine'"):
        _lrs(load_config(None, ["SOLVER.WARMUP_METHOD", "cosine"]))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)  # weight + bias
        self.gn = create_norm("GN", 8, num_groups=2)
        self.bn = create_norm("BN", 8)
        self.frozen = create_norm("FrozenBN", 8)
        self.ln = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 2)
        self.frozen_fc = nn.Linear(2, 2)
        self.frozen_fc.requires_grad_(False)


def test_param_groups_norm_bias_and_frozen():
    cfg = load_config(None, ["SOLVER.BASE_LR", "0.1", "SOLVER.WEIGHT_DECAY", "1e-4",
                             "SOLVER.WEIGHT_DECAY_NORM", "0.0", "SOLVER.WEIGHT_DECAY_BIAS", "1e-5",
                             "SOLVER.BIAS_LR_FACTOR", "2.0"])
    net = _Net()
    opt = build_optimizer(cfg, net)
    by_name = {n: (g["lr"], g["weight_decay"]) for g in opt.param_groups for n in g["names"]}
    expected = {
        "conv.weight": (0.1, 1e-4), "fc.weight": (0.1, 1e-4),
        "conv.bias": (0.2, 1e-5), "fc.bias": (0.2, 1e-5),
        # norm gamma and beta: WEIGHT_DECAY_NORM (beta still gets the bias lr factor)
        "gn.weight": (0.1, 0.0), "gn.bias": (0.2, 0.0),
        "bn.weight": (0.1, 0.0), "bn.bias": (0.2, 0.0),
        "ln.weight": (0.1, 0.0), "ln.bias": (0.2, 0.0),
    }
    assert by_name == expected
    assert isinstance(net.frozen, FrozenBatchNorm) and not list(net.frozen.parameters())
    n_opt = sum(len(g["params"]) for g in opt.param_groups)
    assert n_opt == len(expected)  # frozen_fc left out, nothing twice
    assert opt.defaults["momentum"] == 0.9


def test_weight_decay_norm_default_zero_and_bias_default():
    opt = build_optimizer(load_config(), _Net())
    by_name = {n: g["weight_decay"] for g in opt.param_groups for n in g["names"]}
    assert by_name["gn.weight"] == 0.0 and by_name["conv.bias"] == 1e-4  # WEIGHT_DECAY_BIAS None


@pytest.mark.parametrize("ims,world,accum,micro", [(16, 8, 1, 2), (16, 8, 2, 1), (4, 1, 4, 1), (6, 2, 1, 3)])
def test_micro_batch_size(ims, world, accum, micro):
    cfg = load_config(None, ["SOLVER.IMS_PER_BATCH", str(ims), "SOLVER.ACCUM_STEPS", str(accum)])
    assert micro_batch_size(cfg, world) == micro


def test_micro_batch_not_divisible_is_clear():
    cfg = load_config(None, ["SOLVER.IMS_PER_BATCH", "10", "SOLVER.ACCUM_STEPS", "2"])
    with pytest.raises(ConfigError, match=r"IMS_PER_BATCH \(10\).*world size \(4\) x SOLVER.ACCUM_STEPS \(2\) = 8"
                                          r".*IMS_PER_BATCH 8 or 16"):
        micro_batch_size(cfg, 4)
