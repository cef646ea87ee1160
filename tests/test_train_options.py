"""The speed options through config and Trainer: AMP dtype, channels_last, torch.compile,
and their config checks. Numbers: bf16 loss against fp32 loss, channels_last outputs against
the default layout, each bad value refused naming its key."""

import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine_toy_task import ToyTask, toy_opts
from gn_det.config import ConfigError, load_config
from gn_det.engine.resume import is_structural
from gn_det.engine.trainer import Trainer, compile_model, to_channels_last

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from bench_fixtures import FixedBatchDetectionTask, fake_batch  # noqa: E402

torch.set_num_threads(1)
TEST_CONFIG = "configs/synthetic/mask_rcnn_R_18_FPN_test.yaml"
_BATCH = fake_batch(2, 96, 3, 5, seed=1)


def _detection_trainer(tmp_path, name, *opts):
    cfg = load_config(TEST_CONFIG, ["OUTPUT_DIR", str(tmp_path / name), "SOLVER.IMS_PER_BATCH", "2",
                                    "MODEL.DEVICE", "cpu", "DATASETS.TEST", "()", *opts])
    torch.manual_seed(0)
    return Trainer(cfg, FixedBatchDetectionTask(_BATCH))


def _losses(trainer):
    """The training losses of one forward on the fixed batch, proposals sampled from seed 0."""
    torch.manual_seed(0)
    trainer.model.train()
    with torch.autocast("cpu", dtype=trainer.amp_dtype or torch.float32, enabled=trainer.amp_dtype is not None):
        with torch.no_grad():
            return {k: float(v) for k, v in trainer.model(_BATCH).items()}


def test_amp_bf16_loss_close_to_fp32_and_step_runs(tmp_path):
    fp32 = _detection_trainer(tmp_path, "fp32")
    bf16 = _detection_trainer(tmp_path, "bf16", "SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "bfloat16",
                              "SOLVER.WARMUP_ITERS", "0")
    assert bf16.amp_dtype == torch.bfloat16 and bf16.scaler is None
    ref = _losses(fp32)
    before = {n: p.detach().clone() for n, p in bf16.unwrapped_model.named_parameters()}
    bf16.max_iter = 1
    torch.manual_seed(0)  # the same proposal sampling as the fp32 forward
    bf16.train()  # a full step: autocast forward, backward, SGD
    got = {k: bf16.storage.history(k).latest() for k in ref}
    assert len(ref) >= 5
    for k in ref:  # same weights, same batch, same sampling: bf16 rounding only
        assert math.isfinite(got[k]) and got[k] == pytest.approx(ref[k], rel=0.05, abs=0.02), k
    moved = [n for n, p in bf16.unwrapped_model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) > len(before) / 2, len(moved)
    assert all(p.dtype == torch.float32 for p in bf16.unwrapped_model.parameters())  # master weights stay fp32


def test_channels_last_model_gives_same_losses_and_features(tmp_path):
    plain = _detection_trainer(tmp_path, "plain")
    nhwc = _detection_trainer(tmp_path, "nhwc", "MODEL.CHANNELS_LAST", "True")
    convs = [m for m in nhwc.unwrapped_model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    for (n, a), b in zip(plain.unwrapped_model.state_dict().items(), nhwc.unwrapped_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)  # same values, other layout
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        ref, got = plain.unwrapped_model.backbone(x), nhwc.unwrapped_model.backbone(x)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-4, msg=k)
    ref_l, got_l = _losses(plain), _losses(nhwc)
    for k in ref_l:
        assert got_l[k] == pytest.approx(ref_l[k], rel=1e-4, abs=1e-5), k


def test_to_channels_last_handles_2d_and_3d_in_one_model():
    torch.manual_seed(0)
    net = nn.ModuleDict({"c2": nn.Conv2d(3, 4, 3), "c3": nn.Conv3d(3, 4, 3), "fc": nn.Linear(4, 2)})
    x2, x3 = torch.randn(1, 3, 6, 6), torch.randn(1, 3, 4, 6, 6)
    ref2, ref3 = net["c2"](x2), net["c3"](x3)
    assert to_channels_last(net) == 2  # the two conv weights; biases and the linear stay as they are
    assert net["c2"].weight.is_contiguous(memory_format=torch.channels_last)
    assert net["c3"].weight.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(net["c2"](x2), ref2)
    torch.testing.assert_close(net["c3"](x3), ref3)


def test_group_norm_under_cpu_bf16_autocast_keeps_fp32_statistics():
    # torch's CPU autocast leaves group_norm in bf16 (CUDA's runs it in fp32), but the kernel
    # sums in fp32: with a mean of 100, a bf16 running sum (8 bits) would shift every output.
    x = (torch.randn(2, 8, 6, 6) * 4 + 100).bfloat16()
    gn = nn.GroupNorm(4, 8)
    with torch.no_grad():
        gn.weight.copy_(torch.rand(8) + 0.5)
        gn.bias.copy_(torch.randn(8))
    ref = gn(x.float())  # fp32 on the same (bf16-representable) values
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = gn(x)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref, rtol=0.01, atol=0.02)


@pytest.mark.parametrize("key,value", [("SOLVER.AMP.DTYPE", "fp16"), ("SOLVER.AMP.DTYPE", "half"),
                                       ("MODEL.COMPILE.MODE", "fast"), ("MODEL.COMPILE.MODE", "True"),
                                       ("MODEL.COMPILE.SCOPE", "heads"), ("MODEL.CHANNELS_LAST", "sometimes")])
def test_bad_option_values_refused_naming_key(tmp_path, key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        load_config(None, toy_opts(str(tmp_path), **{key: value}))
    assert "\n" not in str(e.value)


def test_float16_on_cpu_and_backbone_less_compile_refused(tmp_path):
    cfg = load_config(None, toy_opts(str(tmp_path / "fp16"), **{"SOLVER.AMP.ENABLED": True,
                                                                 "SOLVER.AMP.DTYPE": "float16"}))
    with pytest.raises(ConfigError, match=r"SOLVER\.AMP\.DTYPE = 'float16' needs CUDA"):
        Trainer(cfg, ToyTask())
    cfg = load_config(None, toy_opts(str(tmp_path / "compile"), **{"MODEL.COMPILE.MODE": "default"}))
    with pytest.raises(ConfigError, match=r"MODEL\.COMPILE\.SCOPE = 'backbone': ToyModel has no \.backbone"):
        Trainer(cfg, ToyTask())


def test_speed_options_may_change_on_resume():
    assert not any(is_structural(k) for k in ("MODEL.CHANNELS_LAST", "MODEL.COMPILE.MODE", "MODEL.COMPILE.SCOPE"))
    assert is_structural("MODEL.RESNETS.NORM")


def test_compile_wraps_in_place_keeping_weight_names(tmp_path, monkeypatch):
    # Only the wiring, with Module.compile recorded: importing dynamo alone takes 7-20 s on this
    # shared CPU and compiling far longer, so compiled steps are run by benchmarks/bench_options.py.
    compiled = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, **kw: compiled.append((self, kw)))
    cfg = load_config(None, toy_opts(str(tmp_path), **{"MODEL.COMPILE.MODE": "max-autotune",
                                                       "MODEL.COMPILE.SCOPE": "model"}))
    t = Trainer(cfg, ToyTask())
    assert compiled == [(t.unwrapped_model, {"mode": "max-autotune"})]  # in place: weight names unchanged
    net = nn.Module()
    net.backbone, net.head = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1)
    assert compile_model(net, "default", "backbone", torch.device("cpu")) is net.backbone
    assert compiled[-1] == (net.backbone, {"mode": "default"}) and len(compiled) == 2
