"""A tiny classification task for the engine's tests (not a test module itself).

Samples are generated from their position in an endless stream (sample ``p`` is drawn from a
generator seeded with ``p``), so every rank, micro-batch size and resume point sees exactly
determined data. Micro-batch ``b`` of rank ``r`` in a world of ``w`` holds stream positions
``[(b * w + r) * m, (b * w + r + 1) * m)``: the ranks of one step together cover a contiguous
block of the global batch, which a single process with a ``w`` times larger batch sees at once.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from gn_det.engine.hooks import HookBase
from gn_det.layers import create_norm
from gn_det.utils import comm

NUM_CLASSES = 4
IMAGE_SIZE = 6
TEST_OFFSET = 10**6  # test samples come from a different part of the stream


def make_sample(position: int) -> tuple[torch.Tensor, int]:
    """A 3 x 6 x 6 image whose class shifts the mean of one channel (learnable in a few steps)."""
    g = torch.Generator().manual_seed(position)
    label = int(torch.randint(NUM_CLASSES, (1,), generator=g))
    x = torch.randn(3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    x[label % 3] += 1.5 if label < 3 else -1.5
    return x, label


def make_batch(positions: list[int], poison: bool = False) -> dict:
    samples = [make_sample(p) for p in positions]
    return {"image": torch.stack([s[0] for s in samples]), "label": torch.tensor([s[1] for s in samples]),
            "ids": list(positions), "poison": poison}


class ToyModel(nn.Module):
    """conv-norm-relu x2, global pool, dropout, linear; the norm comes from the norm factory."""

    def __init__(self, norm: str = "GN", dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.norm1 = create_norm(norm, 8, num_groups=4)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.norm2 = create_norm(norm, 8, num_groups=4)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(8, NUM_CLASSES)

    def forward(self, batch: dict):
        device = self.fc.weight.device
        x = batch["image"].to(device)
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.relu(self.norm2(self.conv2(x)))
        logits = self.fc(self.dropout(x.mean(dim=(2, 3))))
        if not self.training:
            return logits.argmax(dim=1)
        loss = F.cross_entropy(logits, batch["label"].to(device))  # mean over the micro-batch
        if batch["poison"]:
            loss = loss * float("nan")
        return {"loss_cls": loss}


class ToyLoader:
    """Endless micro-batches for this rank, optionally starting after ``skip_batches`` of them."""

    def __init__(self, micro_batch_size: int, skip_batches: int, seen: list, poison_batch: int | None):
        self.m = micro_batch_size
        self.start = skip_batches
        self.seen = seen
        self.poison_batch = poison_batch

    def __iter__(self):
        b = self.start
        w, r = comm.get_world_size(), comm.get_rank()
        while True:
            first = (b * w + r) * self.m
            positions = list(range(first, first + self.m))
            self.seen.append(positions)
            yield make_batch(positions, poison=b == self.poison_batch)
            b += 1


class AccuracyEvaluator:
    """Top-1 accuracy, gathered over ranks; {"cls": {"acc": percent}} on the main process."""

    def reset(self) -> None:
        self.correct = 0
        self.total = 0

    def process(self, inputs: dict, outputs: torch.Tensor) -> None:
        self.correct += int((outputs.cpu() == inputs["label"]).sum())
        self.total += len(inputs["label"])

    def evaluate(self) -> dict:
        parts = comm.all_gather((self.correct, self.total))
        if not comm.is_main_process():
            return {}
        correct, total = sum(p[0] for p in parts), sum(p[1] for p in parts)
        return {"cls": {"acc": 100.0 * correct / max(total, 1), "num_samples": float(total)}}


class ToyTask:
    """The engine's Task contract, implemented for :class:`ToyModel` (norm from MODEL.RESNETS.NORM)."""

    def __init__(self, dropout: float = 0.0, poison_batch: int | None = None, num_test: int = 32):
        self.dropout = dropout
        self.poison_batch = poison_batch
        self.num_test = num_test
        self.seen: list[list[int]] = []
        self.micro_batch_sizes: list[int] = []

    def build_model(self, cfg) -> nn.Module:
        return ToyModel(cfg.MODEL.RESNETS.NORM, self.dropout)

    def build_train_loader(self, cfg, micro_batch_size: int, skip_batches: int = 0):
        self.micro_batch_sizes.append(micro_batch_size)
        return ToyLoader(micro_batch_size, skip_batches, self.seen, self.poison_batch)

    def build_test_loader(self, cfg, dataset_name: str):
        w, r = comm.get_world_size(), comm.get_rank()
        positions = list(range(TEST_OFFSET, TEST_OFFSET + self.num_test))[r::w]
        return [make_batch(positions[i:i + 8]) for i in range(0, len(positions), 8)]

    def build_evaluator(self, cfg, dataset_name: str, output_dir: str) -> AccuracyEvaluator:
        return AccuracyEvaluator()


class PoisonedToyTask(ToyTask):
    """Its second micro-batch makes the loss NaN."""

    def __init__(self):
        super().__init__(poison_batch=1)


class CrashAt(HookBase):
    """A hook that stops training before iteration ``iteration`` runs, as a kill would."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def before_step(self) -> None:
        if self.trainer.iter == self.iteration:
            raise KeyboardInterrupt("simulated crash")


def toy_opts(output_dir: str, exclude: tuple = (), **overrides) -> list[str]:
    """KEY VALUE overrides for a fast CPU run of the toy task (minus the ``exclude`` keys)."""
    base = {"TASK": "engine_toy_task:ToyTask", "OUTPUT_DIR": output_dir, "MODEL.DEVICE": "cpu",
            "MODEL.RESNETS.NORM": "GN", "SOLVER.IMS_PER_BATCH": 4, "SOLVER.BASE_LR": 0.1,
            "SOLVER.MAX_ITER": 6, "SOLVER.STEPS": (), "SOLVER.WARMUP_ITERS": 0,
            "SOLVER.CHECKPOINT_PERIOD": 1000, "LOG_PERIOD": 1, "SEED": 0,
            "DATASETS.TRAIN": ("toy_train",), "DATASETS.TEST": ("toy_test",), "TEST.EVAL_PERIOD": 0}
    base.update(overrides)
    for k in exclude:
        del base[k]
    opts: list[str] = []
    for k, v in base.items():
        opts += [k, str(v) if not isinstance(v, str) else v]
    return opts


def ddp_worker(opts: list[str], result_dir: str) -> None:
    """Entry point of each DDP test process: train, then dump this rank's parameters and data ids."""
    torch.set_num_threads(1)
    from gn_det.config import load_config
    from gn_det.engine.setup import default_setup
    from gn_det.engine.trainer import Trainer

    cfg = default_setup(load_config(None, opts))
    task = ToyTask()
    trainer = Trainer(cfg, task)
    trainer.resume_or_load(resume=False)
    trainer.train()
    state = {k: v.detach().clone() for k, v in trainer.unwrapped_model.state_dict().items()}
    torch.save({"state": state, "seen": task.seen, "micro": task.micro_batch_sizes,
                "world": comm.get_world_size(), "eval": trainer.last_eval_results},
               os.path.join(result_dir, f"rank{comm.get_rank()}.pt"))
