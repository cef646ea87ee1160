"""Failures a user can act on: an honest --resume, a recoverable divergence, a clean output folder.

Each test reproduces what a user met before (issue 9) and checks the behaviour now:
a changed config on --resume is applied, kept or refused and logged; last_checkpoint only names a
good checkpoint and retention keeps it; metrics.json and TensorBoard read as one run; temporary
files of a killed run are removed; files honour the umask; skipped samples are counted and listed.
"""

import json
import logging
import os
import stat

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from engine_toy_task import CrashAt, ToyModel, ToyTask, make_batch, toy_opts
from gn_det.checkpoint.io import CheckpointError, safe_torch_load
from gn_det.cli.train_net import TRAINING_FAILED, USER_ERROR, main
from gn_det.config import load_config
from gn_det.data.common import SkipBadSamples, SkippedSample
from gn_det.engine.checkpoint import carry_optimizer_state
from gn_det.engine.divergence import DivergenceWatch, parameter_norm
from gn_det.engine.setup import seed_all_rng
from gn_det.engine.trainer import Trainer
from gn_det.utils.events import trim_metrics_file
from gn_det.utils.io import atomic_write_text

torch.set_num_threads(1)
CLASSIFIER = os.path.join(os.path.dirname(__file__), "..", "configs", "classification", "synthetic",
                          "R_18_gn_test.yaml")


@pytest.fixture()
def log_lines():
    """The gn_det log records of the test, as strings (the logger may not propagate)."""
    records: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("gn_det")
    handler, level = _Keep(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def _trainer(out, task=None, **overrides):
    cfg = load_config(None, toy_opts(str(out), **overrides))
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    seed_all_rng(cfg.SEED)
    return Trainer(cfg, task or ToyTask())


def _records(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return [json.loads(line) for line in f]


def _run_expect_exit(argv, capsys, code):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip()


# ----------------------------------------------------------------- 1. a changed config on --resume
def test_resume_follows_the_changed_solver_keys_and_logs_each(tmp_path):
    out = tmp_path / "run"
    assert main(toy_opts(str(out), **{"SOLVER.MAX_ITER": 4})) == 0
    new = {"SOLVER.MAX_ITER": 8, "SOLVER.BASE_LR": 0.001, "SOLVER.STEPS": (6,), "SOLVER.GAMMA": 0.5,
           "SOLVER.MOMENTUM": 0.5}
    assert main(["--resume"] + toy_opts(str(out), **new)) == 0

    lr = {r["iteration"]: r["lr"] for r in _records(out) if "lr" in r}
    assert sorted(lr) == list(range(8))
    assert [lr[i] for i in range(4)] == [0.1] * 4  # the first run
    # before: 0.1 for every resumed iteration (the checkpoint's BASE_LR, no decay at 6)
    assert [lr[i] for i in range(4, 8)] == pytest.approx([0.001 * 0.5 ** (i >= 6) for i in range(4, 8)])
    assert safe_torch_load(out / "model_final.pth")["optimizer"]["param_groups"][0]["momentum"] == 0.5

    log = (out / "log.txt").read_text()
    for line in ["SOLVER.BASE_LR: 0.1 in the checkpoint -> 0.001 now, from iteration 4",
                 "SOLVER.MAX_ITER: 4 in the checkpoint -> 8 now, from iteration 4",
                 "SOLVER.STEPS: [] in the checkpoint -> [6] now, from iteration 4",
                 "SOLVER.MOMENTUM: 0.9 in the checkpoint -> 0.5 now, from iteration 4"]:
        assert line in log, line
    saved = yaml.safe_load((out / "config.yaml").read_text())["SOLVER"]
    assert (saved["BASE_LR"], saved["MAX_ITER"], saved["STEPS"]) == (0.001, 8, [6])


def test_resume_carries_momentum_by_name_when_groups_change(tmp_path):
    first = _trainer(tmp_path / "run", **{"SOLVER.MAX_ITER": 2})
    first.train()
    want = {n: first.optimizer.state[p]["momentum_buffer"] for n, p in first.unwrapped_model.named_parameters()}
    assert len(first.optimizer.param_groups) == 2  # norm parameters: WEIGHT_DECAY_NORM 0
    # WEIGHT_DECAY_NORM equal to WEIGHT_DECAY merges the groups (before: torch's "different number of
    # parameter groups" ValueError, as a traceback)
    second = _trainer(tmp_path / "run", **{"SOLVER.MAX_ITER": 4, "SOLVER.WEIGHT_DECAY_NORM": 1e-4})
    assert len(second.optimizer.param_groups) == 1
    second.resume_or_load(resume=True)
    assert second.start_iter == 2 and second.optimizer.param_groups[0]["weight_decay"] == 1e-4
    for n, p in second.unwrapped_model.named_parameters():
        assert torch.equal(second.optimizer.state[p]["momentum_buffer"], want[n]), n
    # positional groups of other sizes: a one-line error, not torch's
    saved = first.optimizer.state_dict()
    for g in saved["param_groups"]:
        del g["names"]
    with pytest.raises(CheckpointError, match="param groups of sizes"):
        carry_optimizer_state(second.optimizer, saved)


def test_resume_refuses_a_model_change_and_keeps_the_seed(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(toy_opts(str(out), **{"SOLVER.MAX_ITER": 2})) == 0
    before = (out / "config.yaml").read_text()
    err = _run_expect_exit(["--resume"] + toy_opts(str(out), **{"SOLVER.MAX_ITER": 4,
                                                                  "MODEL.PIXEL_MEAN": "[1.0, 2.0, 3.0]"}), capsys,
                           USER_ERROR)
    errors = [line for line in err.splitlines() if line.startswith("gn-det-train: error:")]
    assert len(errors) == 1 and err.endswith(errors[0])
    err = errors[0]
    assert "MODEL.PIXEL_MEAN is [123.675, 116.28, 103.53] in the checkpoint, [1.0, 2.0, 3.0] now" in err
    assert "cannot change on resume" in err and "MODEL.WEIGHTS" in err
    assert (out / "config.yaml").read_text() == before  # config.yaml still describes the folder's run
    assert [r["iteration"] for r in _records(out) if "lr" in r] == [0, 1]  # nothing trained

    weights = str(tmp_path / "other.pth")
    assert main(["--resume"] + toy_opts(str(out), **{"SOLVER.MAX_ITER": 4, "SEED": 7, "MODEL.WEIGHTS": weights})) == 0
    log = (out / "log.txt").read_text()
    assert "SEED: 0 in the checkpoint, 7 given: kept at 0" in log
    assert f"MODEL.WEIGHTS: '' in the checkpoint, '{weights}' given: kept at ''" in log
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["SEED"], saved["MODEL"]["WEIGHTS"], saved["SOLVER"]["MAX_ITER"]) == (0, "", 4)


# --------------------------------------------------------------- 2. divergence and the last good one
def _diverging(out, **extra):
    # lr 0.1 during a constant warmup, then 1000: the weights blow up at iteration 6, NaN soon after
    return toy_opts(str(out), **{"SOLVER.BASE_LR": 1000.0, "SOLVER.WARMUP_ITERS": 6, "SOLVER.WARMUP_FACTOR": 1e-4,
                                 "SOLVER.WARMUP_METHOD": "constant", "SOLVER.MAX_ITER": 14,
                                 "SOLVER.CHECKPOINT_PERIOD": 2, **extra})


def test_divergence_names_a_good_checkpoint_and_its_advice_works(tmp_path, capsys):
    out = tmp_path / "run"
    err = _run_expect_exit(_diverging(out, **{"SOLVER.CHECKPOINT_MAX_TO_KEEP": 1}), capsys, TRAINING_FAILED)
    assert "Loss became non-finite at iteration" in err
    # before: model_0000009.pth (weights' norm 1e13) was named, and resuming from it failed again
    assert f"Last good checkpoint: {out / 'model_0000005.pth'}" in err
    assert "Rerun the same command with --resume and a lower SOLVER.BASE_LR (e.g. 100 instead of 1000)" in err
    assert (out / "last_checkpoint").read_text() == "model_0000005.pth"
    log = (out / "log.txt").read_text()
    assert "model_0000007.pth is not a good checkpoint to resume from: the weights blew up" in log
    # retention (1 kept): the newest periodic one, and the last good one, which is never deleted
    assert sorted(f for f in os.listdir(out) if f.endswith(".pth")) == ["model_0000005.pth", "model_0000009.pth"]
    good = safe_torch_load(out / "model_0000005.pth")["model"]
    bad = safe_torch_load(out / "model_0000009.pth")["model"]
    norm = lambda sd: float(torch.stack([v.double().norm() for k, v in sd.items() if "weight" in k]).norm())
    assert norm(bad) > 1e3 * norm(good)

    # the advice, followed: the same command with --resume and a lower BASE_LR
    assert main(["--resume"] + _diverging(out, **{"SOLVER.BASE_LR": 0.1})) == 0
    records = [r for r in _records(out) if "total_loss" in r]
    assert [r["iteration"] for r in records] == list(range(14))
    assert all(r["lr"] == pytest.approx(0.1) for r in records if r["iteration"] >= 6)
    assert max(r["total_loss"] for r in records) < 10
    assert (out / "last_checkpoint").read_text() == "model_final.pth"


def test_divergence_watch_rules():
    model = torch.nn.Linear(3, 2)
    watch = DivergenceWatch(window=4, factor=10.0)
    watch.start(model)
    for i, loss in enumerate([3.0, 2.0, 1.0, 1.0, 1.2]):
        watch.update(i, loss)
    assert watch.problem(model) is None
    assert watch.best == pytest.approx(1.1) and watch.best_iter == 4  # median of 2, 1, 1, 1.2
    assert watch.start_level == pytest.approx(1.5)  # median of the first 4: 3, 2, 1, 1
    watch.update(5, 16.0)  # window median 1.1, but the latest loss alone is more than 10x the best
    assert "total_loss of iteration 5 is 16, above both 10x the best window median 1.1 (iteration 4) and the " \
           "start level 1.5" in watch.problem(model)
    watch.update(6, 1.0)
    assert watch.problem(model) is None and watch.best == pytest.approx(1.1)  # median of 1, 1.2, 16, 1
    for i in (7, 8):
        watch.update(i, 9.0 if i == 8 else 20.0)  # median of 16, 1, 20, 9 = 12.5 > 11, latest 9 < 11
    assert "median total_loss of iterations 5-8 is 12.5" in watch.problem(model)

    # a loss fallen near 0: a noisy batch 30x the best is still far below where training began
    low = DivergenceWatch(window=4, factor=10.0)
    for i, loss in enumerate([2.0] * 4 + [0.01] * 5 + [0.3]):
        low.update(i, loss)
    assert low.best == pytest.approx(0.01) and low.start_level == pytest.approx(2.0)
    assert low.problem(model) is None
    resumed = DivergenceWatch(window=4, factor=10.0)  # a resumed run judges as the first one did
    resumed.load_state_dict(low.state_dict())
    resumed.update(10, 0.3)
    assert resumed.problem(model) is None
    resumed.update(11, 2.5)
    assert "total_loss of iteration 11 is 2.5, above both 10x the best window median 0.01" in resumed.problem(model)

    calm = DivergenceWatch(window=4, factor=10.0)
    calm.start(model)
    with torch.no_grad():
        model.weight.mul_(11.0)
        model.bias.mul_(11.0)
    assert parameter_norm(model) == pytest.approx(11 * calm.reference_norm)
    assert "weights blew up" in calm.problem(model)
    calm.accept(model)
    assert calm.problem(model) is None
    with torch.no_grad():
        model.bias[0] = float("inf")
    assert "1 model tensor(s) hold NaN or inf (first: bias)" in calm.problem(model)


def test_resumed_run_judges_losses_against_the_same_levels(tmp_path):
    opts = {"SOLVER.MAX_ITER": 24, "SOLVER.CHECKPOINT_PERIOD": 22, "DATASETS.TEST": ()}
    first = _trainer(tmp_path / "run", **opts)
    first.register_hooks([CrashAt(23)])  # after the checkpoint of iteration 21: 22 losses seen
    with pytest.raises(KeyboardInterrupt):
        first.train()
    second = _trainer(tmp_path / "run", **opts)
    second.resume_or_load(resume=True)
    assert second.start_iter == 22
    # before: not saved; a resumed run would measure its "start level" on its own first losses
    assert second.divergence.start_level == first.divergence.start_level
    saved = safe_torch_load(tmp_path / "run" / "model_0000021.pth")["divergence"]
    assert saved["start_complete"] and saved["best_iter"] <= 21
    assert (second.divergence.best, second.divergence.best_iter) == (saved["best"], saved["best_iter"])


def test_retention_keeps_the_newest_periodic_checkpoints(tmp_path):
    t = _trainer(tmp_path / "keep2", **{"SOLVER.MAX_ITER": 6, "SOLVER.CHECKPOINT_PERIOD": 1,
                                        "SOLVER.CHECKPOINT_MAX_TO_KEEP": 2, "DATASETS.TEST": ()})
    t.train()
    names = sorted(f for f in os.listdir(t.cfg.OUTPUT_DIR) if f.endswith(".pth"))
    assert names == ["model_0000003.pth", "model_0000004.pth", "model_final.pth"]
    t = _trainer(tmp_path / "all", **{"SOLVER.MAX_ITER": 4, "SOLVER.CHECKPOINT_PERIOD": 1, "DATASETS.TEST": ()})
    t.train()  # 0: keep all (the default)
    assert len([f for f in os.listdir(t.cfg.OUTPUT_DIR) if f.startswith("model_0")]) == 3


# ------------------------------------------------------------------------ 3. metrics.json as one run
def _tensorboard_steps(out, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def _age_event_files(out):
    """Make the event files written so far look 1000 s older, as those of an earlier process: TensorBoard
    reads a folder's files in name order, and names start with the (whole-second) creation time."""
    for name in os.listdir(out):
        if name.startswith("events.out.tfevents."):
            parts = name.split(".")
            parts[3] = f"{int(parts[3]) - 1000:010d}"
            os.rename(out / name, out / ".".join(parts))


def test_metrics_and_tensorboard_read_as_one_run_after_a_kill(tmp_path):
    out = tmp_path / "run"
    first = _trainer(out, **{"DATASETS.TEST": ()})
    first.register_hooks([CrashAt(3)])  # before any checkpoint (CHECKPOINT_PERIOD 1000)
    with pytest.raises(KeyboardInterrupt):
        first.train()
    with open(out / "metrics.json", "a") as f:
        f.write('{"iteration": 3, "loss_c')  # killed in the middle of a line
    _age_event_files(out)
    second = _trainer(out, **{"DATASETS.TEST": ()})
    second.resume_or_load(resume=True)
    assert second.start_iter == 0
    second.train()
    # before: iterations 0-2 twice, and line 4 glued to the cut-off one
    lines = (out / "metrics.json").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == list(range(6))
    assert _tensorboard_steps(out, "loss_cls") == list(range(6))
    _age_event_files(out)

    # killed after a checkpoint: records from the resume iteration on are dropped
    third = _trainer(out, **{"DATASETS.TEST": (), "SOLVER.MAX_ITER": 9, "SOLVER.CHECKPOINT_PERIOD": 3})
    third.resume_or_load(resume=True)
    assert third.start_iter == 6
    third.register_hooks([CrashAt(7)])
    with pytest.raises(KeyboardInterrupt):
        third.train()
    _age_event_files(out)
    fourth = _trainer(out, **{"DATASETS.TEST": (), "SOLVER.MAX_ITER": 9, "SOLVER.CHECKPOINT_PERIOD": 3})
    fourth.resume_or_load(resume=True)
    fourth.train()
    assert [r["iteration"] for r in _records(out)] == list(range(9))
    assert _tensorboard_steps(out, "loss_cls") == list(range(9))


def test_trim_keeps_complete_lines_and_repairs_the_last(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"iteration": 0, "a": 1}\nnot json but complete\n{"iteration": 1, "a": 2}\n{"iteration": 2}')
    assert trim_metrics_file(str(path), 2) == (1, False)  # a complete last line without \n is a record
    assert path.read_text() == '{"iteration": 0, "a": 1}\nnot json but complete\n{"iteration": 1, "a": 2}\n'
    path.write_text('{"iteration": 0}\n{"iteration": 1, "lo')
    assert trim_metrics_file(str(path), 5) == (0, True)
    assert path.read_text() == '{"iteration": 0}\n'


# --------------------------------------------------------------------------------- 4. leftovers
def test_stale_temporaries_of_the_run_are_removed_on_start(tmp_path, log_lines):
    out = tmp_path / "run"
    out.mkdir()
    stale = [".model_0000002.pth.k3j_x9a1.tmp", ".last_checkpoint.0f3a9c2d.tmp", ".metrics.json.ab12cd34.tmp",
             ".config.yaml.zz99yy88.tmp"]
    others = [".notes.txt.0f3a9c2d.tmp", "model_0000002.pth.tmp", ".model_0000002.pth", "data.tmp"]
    for name in stale + others:
        (out / name).write_bytes(b"x" * 2048)
    _trainer(out)
    assert sorted(os.listdir(out)) == sorted(others)  # before: all of them stayed
    line = [m for m in log_lines if "temporary file(s)" in m]
    assert len(line) == 1 and line[0].startswith("Removed 4 temporary file(s) an interrupted run left in")
    assert all(name in line[0] for name in stale)


# ----------------------------------------------------------------------------------- 5. file modes
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        out = tmp_path / "run"
        assert main(toy_opts(str(out), **{"SOLVER.MAX_ITER": 2, "SOLVER.CHECKPOINT_PERIOD": 1})) == 0
        trim_metrics_file(str(out / "metrics.json"), 1)  # a rewrite, as on resume
        atomic_write_text("x", tmp_path / "plain.txt")
    finally:
        os.umask(old)
    want = 0o666 & ~umask  # before: 0o600 whatever the umask
    for name in ["model_0000000.pth", "model_final.pth", "last_checkpoint", "config.yaml", "metrics.json"]:
        assert stat.S_IMODE(os.stat(out / name).st_mode) == want, name
    assert stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode) == want


# ----------------------------------------------------------------------- 6. skipped samples
class _ListModel(ToyModel):
    def forward(self, positions):
        return super().forward(make_batch(positions))


class _ListLoader:
    """Endless micro-batches of stream positions; every position p with p % 7 == 3 is a bad file."""

    def __init__(self, m, start):
        self.m, self.start = m, start

    def __iter__(self):
        b = self.start
        while True:
            yield [SkippedSample(f"img_{p}.jpg", "corrupt") if p % 7 == 3 else p
                   for p in range(b * self.m, (b + 1) * self.m)]
            b += 1


class SkippingToyTask(ToyTask):
    def build_model(self, cfg):
        return _ListModel(cfg.MODEL.RESNETS.NORM)

    def build_train_loader(self, cfg, micro_batch_size, skip_batches=0):
        return SkipBadSamples(_ListLoader(micro_batch_size, skip_batches))


def test_skipped_samples_are_counted_listed_and_survive_resume(tmp_path, log_lines):
    opts = {"SOLVER.MAX_ITER": 8, "SOLVER.CHECKPOINT_PERIOD": 3, "DATASETS.TEST": (),
            "DATALOADER.SKIP_BAD_SAMPLES": True}
    straight = _trainer(tmp_path / "straight", SkippingToyTask(), **opts)
    straight.train()
    want = [{"file_name": f"img_{p}.jpg", "iteration": p // 4} for p in range(32) if p % 7 == 3]
    listed = json.loads((tmp_path / "straight" / "skipped_samples.json").read_text())  # before: no file
    assert [{k: s[k] for k in ("file_name", "iteration")} for s in listed["samples"]] == want
    assert (listed["num_skipped"], listed["num_files"]) == (len(want), len(want))
    assert f"DATALOADER.SKIP_BAD_SAMPLES: {len(want)} sample(s) skipped in training, {len(want)} distinct" in \
        log_lines[-1]

    out = tmp_path / "resumed"
    first = _trainer(out, SkippingToyTask(), **opts)
    first.register_hooks([CrashAt(7)])  # after the checkpoint of iteration 5
    with pytest.raises(KeyboardInterrupt):
        first.train()
    assert json.loads((out / "skipped_samples.json").read_text())["num_skipped"] == \
        len([s for s in want if s["iteration"] < 7])
    second = _trainer(out, SkippingToyTask(), **opts)
    second.resume_or_load(resume=True)
    second.train()
    assert json.loads((out / "skipped_samples.json").read_text()) == listed  # one run, no double count


def test_skipped_image_of_a_real_dataset_through_train_net(tmp_path):
    root = tmp_path / "set"
    for c in ["a", "b", "c"]:
        (root / c).mkdir(parents=True)
        for i in range(2):
            pixels = np.random.default_rng(i).integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    assert main(["--config-file", CLASSIFIER, "OUTPUT_DIR", str(out), "MODEL.DEVICE", "cpu",
                 "DATASETS.REGISTER", json.dumps([["tiny", str(root)]]), "DATASETS.TRAIN", '("tiny",)',
                 "DATASETS.TEST", "()", "MODEL.CLASSIFIER.NUM_CLASSES", "3", "SOLVER.IMS_PER_BATCH", "7",
                 "SOLVER.MAX_ITER", "2", "DATALOADER.SKIP_BAD_SAMPLES", "True"]) == 0
    listed = json.loads((out / "skipped_samples.json").read_text())
    # 7 files, 7 per step: every step meets broken.jpg once
    assert listed["files"] == [str(root / "b" / "broken.jpg")] and listed["num_skipped"] == 2
    assert [s["iteration"] for s in listed["samples"]] == [0, 1]
    assert "2 sample(s) skipped in training, 1 distinct file(s)" in (out / "log.txt").read_text()
