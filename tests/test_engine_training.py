"""The training loop on a toy task: accumulation, resume, checkpoints, non-finite loss, AMP, clipping."""

import json
import os

import pytest
import torch

from engine_toy_task import CrashAt, ToyTask, toy_opts
from gn_det.checkpoint.io import safe_torch_load
from gn_det.config import load_config
from gn_det.engine.checkpoint import Checkpointer
from gn_det.engine.setup import seed_all_rng
from gn_det.engine.trainer import Trainer

torch.set_num_threads(1)


def _trainer(tmp_path, name, task=None, **overrides):
    cfg = load_config(None, toy_opts(str(tmp_path / name), **overrides))
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    seed_all_rng(cfg.SEED)
    return Trainer(cfg, task or ToyTask())


def _losses(output_dir):
    """loss_cls by iteration from metrics.json, each iteration once."""
    with open(os.path.join(output_dir, "metrics.json")) as f:
        records = [json.loads(line) for line in f]
    iters = [r["iteration"] for r in records if "loss_cls" in r]
    assert iters == sorted(set(iters)), iters
    return [r["loss_cls"] for r in records if "loss_cls" in r]


def _one_step_grads(tmp_path, name, norm, accum):
    t = _trainer(tmp_path, name, **{"MODEL.RESNETS.NORM": norm, "SOLVER.ACCUM_STEPS": accum,
                                    "SOLVER.MAX_ITER": 1, "TEST.EVAL_PERIOD": 0, "DATASETS.TEST": ()})
    t.train()
    assert t.task.micro_batch_sizes == [4 // accum]
    # the same 4 samples, in 1 batch of 4 or 4 micro-batches of 1
    assert sum(t.task.seen, []) == [0, 1, 2, 3]
    return {n: p.grad.clone() for n, p in t.unwrapped_model.named_parameters()}


def test_grad_accumulation_equals_full_batch_with_gn_not_bn(tmp_path):
    full = _one_step_grads(tmp_path, "gn4", "GN", accum=1)
    accum = _one_step_grads(tmp_path, "gn1x4", "GN", accum=4)
    for n in full:
        torch.testing.assert_close(accum[n], full[n], rtol=1e-5, atol=1e-6, msg=n)
    # BN normalizes with micro-batch statistics: 4 x 1 image is a different function than 1 x 4
    full_bn = _one_step_grads(tmp_path, "bn4", "BN", accum=1)
    accum_bn = _one_step_grads(tmp_path, "bn1x4", "BN", accum=4)
    rel = (accum_bn["conv1.weight"] - full_bn["conv1.weight"]).norm() / full_bn["conv1.weight"].norm()
    assert rel > 0.05, rel


def test_resume_continues_loss_sequence_exactly(tmp_path):
    # dropout (model RNG), warmup + a step (scheduler), momentum (optimizer state), 2 micro-batches
    opts = {"SOLVER.MAX_ITER": 6, "SOLVER.CHECKPOINT_PERIOD": 3, "SOLVER.WARMUP_ITERS": 4,
            "SOLVER.STEPS": (5,), "SOLVER.ACCUM_STEPS": 2, "TEST.EVAL_PERIOD": 2}
    straight = _trainer(tmp_path, "straight", ToyTask(dropout=0.3), **opts)
    straight.train()
    want = _losses(straight.cfg.OUTPUT_DIR)
    assert len(want) == 6

    first = _trainer(tmp_path, "resumed", ToyTask(dropout=0.3), **opts)
    first.register_hooks([CrashAt(5)])  # 2 iterations after the checkpoint at iteration 2
    with pytest.raises(KeyboardInterrupt):
        first.train()
    out = first.cfg.OUTPUT_DIR
    assert open(os.path.join(out, "last_checkpoint")).read() == "model_0000002.pth"
    assert not os.path.exists(os.path.join(out, "model_final.pth"))
    assert len(_losses(out)) == 5  # iterations 3 and 4 are logged, then lost with the crash

    torch.manual_seed(1234)  # a different fresh-process state: resume must not depend on it
    second = _trainer(tmp_path, "resumed", ToyTask(dropout=0.3), **opts)
    second.resume_or_load(resume=True)
    assert second.start_iter == 3
    second.train()
    assert second.task.seen[0] == [12, 13]  # data continues after 3 steps x 2 micro-batches x 2
    assert _losses(out) == want  # bit-identical, not just close; 3 and 4 replaced, not repeated
    final = {k: v for k, v in second.unwrapped_model.state_dict().items()}
    for k, v in straight.unwrapped_model.state_dict().items():
        assert torch.equal(final[k], v), k


def test_checkpoint_contents_and_weights_only(tmp_path):
    t = _trainer(tmp_path, "ck", **{"SOLVER.MAX_ITER": 2, "SOLVER.CHECKPOINT_PERIOD": 1})
    t.train()
    names = sorted(f for f in os.listdir(t.cfg.OUTPUT_DIR) if f.endswith(".pth"))
    assert names == ["model_0000000.pth", "model_final.pth"]
    data = safe_torch_load(os.path.join(t.cfg.OUTPUT_DIR, "model_final.pth"))  # weights_only
    assert {"model", "optimizer", "scheduler", "iteration", "rng_states"} <= set(data)
    assert data["iteration"] == 1 and data["scheduler"]["last_epoch"] == 2
    assert {"python", "numpy", "torch"} <= set(data["rng_states"][0])
    assert data["optimizer"]["state"]  # momentum buffers


def test_atomic_save_crash_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    ck = Checkpointer(model, str(tmp_path))
    ck.save("model_final", iteration=5)
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)

    real_save = torch.save

    def crash_midway(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        ck.save("model_final", iteration=9)  # overwriting the same name
    with pytest.raises(OSError):
        ck.save("model_0000009", iteration=9)  # a new name
    monkeypatch.setattr(torch, "save", real_save)

    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]  # no temp files
    assert ck.get_checkpoint_file() == str(tmp_path / "model_final.pth")
    fresh = torch.nn.Linear(2, 2)
    data = Checkpointer(fresh, str(tmp_path)).load(ck.get_checkpoint_file())
    assert data["iteration"] == 5
    for k, v in good.items():
        assert torch.equal(fresh.state_dict()[k], v)


def test_non_finite_loss_names_iteration_and_last_checkpoint(tmp_path):
    t = _trainer(tmp_path, "nan", ToyTask(poison_batch=4), **{"SOLVER.MAX_ITER": 10,
                                                                "SOLVER.CHECKPOINT_PERIOD": 2})
    with pytest.raises(FloatingPointError) as e:
        t.train()
    msg = str(e.value)
    assert "non-finite at iteration 4" in msg and "loss_cls=nan" in msg
    assert os.path.join(t.cfg.OUTPUT_DIR, "model_0000003.pth") in msg
    assert not os.path.exists(os.path.join(t.cfg.OUTPUT_DIR, "model_final.pth"))
    # before any checkpoint exists the message says so
    t = _trainer(tmp_path, "nan0", ToyTask(poison_batch=0))
    with pytest.raises(FloatingPointError, match="iteration 0.*none yet"):
        t.train()


def test_training_learns_and_writes_outputs(tmp_path):
    t = _trainer(tmp_path, "learn", **{"SOLVER.MAX_ITER": 60, "SOLVER.IMS_PER_BATCH": 8, "SOLVER.BASE_LR": 0.2,
                                       "TEST.EVAL_PERIOD": 30, "LOG_PERIOD": 10})
    results = t.train()
    acc = results["toy_test"]["cls"]["acc"]
    assert acc >= 70.0, acc  # chance is 25%
    out = t.cfg.OUTPUT_DIR
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    assert [r["iteration"] for r in records if "loss_cls" in r] == [9, 19, 29, 39, 49, 59]
    evals = [r for r in records if "cls/acc" in r]
    assert [r["iteration"] for r in evals] == [29, 59] and evals[-1]["cls/acc"] == acc
    assert {"lr", "time", "data_time", "total_loss"} <= set(records[0])
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))


def test_amp_bf16_on_cpu_and_grad_clipping(tmp_path):
    t = _trainer(tmp_path, "amp", **{"SOLVER.AMP.ENABLED": True, "SOLVER.MAX_ITER": 2,
                                     "SOLVER.CLIP_GRADIENTS.ENABLED": True, "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 1e-3,
                                     "DATASETS.TEST": ()})
    assert t.amp_dtype == torch.bfloat16 and t.scaler is None
    t.train()
    total = torch.norm(torch.stack([p.grad.norm() for p in t.unwrapped_model.parameters()]))
    assert total == pytest.approx(1e-3, rel=1e-3)  # clipped to CLIP_VALUE
    assert t.storage.history("grad_norm").latest() > 1e-3  # the norm before clipping was larger


def test_grad_scaler_path_saved_and_gradients_unscaled(tmp_path, monkeypatch):
    # The fp16 + GradScaler path used on CUDA, exercised on CPU with a CPU GradScaler.
    monkeypatch.setattr(Trainer, "_setup_amp",
                        lambda self: (torch.bfloat16, torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)))
    opts = {"SOLVER.MAX_ITER": 2, "SOLVER.ACCUM_STEPS": 2, "SOLVER.CLIP_GRADIENTS.ENABLED": True,
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 1e6, "DATASETS.TEST": ()}
    scaled = _trainer(tmp_path, "scaler", **opts)
    scaled.train()
    data = safe_torch_load(os.path.join(scaled.cfg.OUTPUT_DIR, "model_final.pth"))
    assert data["scaler"]["scale"] == 2.0 ** 10
    monkeypatch.undo()
    plain = _trainer(tmp_path, "plain_bf16", **opts, **{"SOLVER.AMP.ENABLED": True})
    plain.train()
    # same bf16 forward; gradients were unscaled before clipping and stepping
    for (n, a), b in zip(scaled.unwrapped_model.named_parameters(), plain.unwrapped_model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-5, msg=n)
