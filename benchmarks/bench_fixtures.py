"""Pieces the training benchmarks share: fixed fake batches, fake-data tasks, a step timer,
a Trainer driven step by step, and the machine description stored with every figure.

The fake-data tasks are the real tasks (detection, video) whose train loader repeats one fixed
batch, so the engine's ``Trainer.run_step`` is timed exactly as ``gn-det-train`` runs it, without
data loading.
"""

from __future__ import annotations

import itertools
import os
import platform
import time
from typing import Any

import torch

from gn_det.engine.hooks import HookBase
from gn_det.tasks.detection import DetectionTask
from gn_det.tasks.video import VideoTask
from gn_det.utils.events import EventStorage


def fake_batch(num_images: int, size: int, objects: int, num_classes: int, seed: int = 0) -> list[dict]:
    """Noise images with flat rectangles, and their boxes, labels and masks (gn_det's detection
    sample format: RGB 0-255 ``image`` (3, size, size) and ``instances``)."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for i in range(num_images):
        image = torch.rand(3, size, size, generator=g) * 255
        masks = torch.zeros(objects, size, size, dtype=torch.uint8)
        boxes = []
        for j in range(objects):
            w, h = (size // 6 + torch.randint(0, size // 3, (2,), generator=g)).tolist()
            x = int(torch.randint(0, size - w, (1,), generator=g))
            y = int(torch.randint(0, size - h, (1,), generator=g))
            masks[j, y:y + h, x:x + w] = 1
            image[:, y:y + h, x:x + w] = float(torch.randint(0, 256, (1,), generator=g))
            boxes.append([x, y, x + w, y + h])
        batch.append({"image": image, "image_id": i, "height": size, "width": size,
                      "instances": {"boxes": torch.tensor(boxes, dtype=torch.float32),
                                    "labels": torch.randint(1, num_classes + 1, (objects,), generator=g),
                                    "masks": masks}})
    return batch


def fake_clips(num_clips: int, frames: int, size: int, num_classes: int, seed: int = 0) -> list[dict]:
    """Normalized noise clips (3, frames, size, size) with labels (the video loader's sample format)."""
    g = torch.Generator().manual_seed(seed)
    return [{"video": torch.randn(3, frames, size, size, generator=g),
             "label": int(torch.randint(0, num_classes, (1,), generator=g))} for _ in range(num_clips)]


class FixedBatchDetectionTask(DetectionTask):
    """The detection task whose train loader repeats one fixed batch (nothing else differs)."""

    def __init__(self, batch: list[dict]):
        self.batch = batch

    def build_train_loader(self, cfg, micro_batch_size: int, skip_batches: int = 0):
        return itertools.repeat(self.batch)


class FixedBatchVideoTask(VideoTask):
    """The video task whose train loader repeats one fixed batch of clips (nothing else differs)."""

    def __init__(self, batch: list[dict]):
        self.batch = batch

    def build_train_loader(self, cfg, micro_batch_size: int, skip_batches: int = 0):
        return itertools.repeat(self.batch)


def trainer_opts(output_dir: str, batch_size: int, device: str, max_iter: int = 10**9) -> list[str]:
    """Config overrides for timing ``Trainer.run_step``: ``batch_size`` images per step on one
    device, no accumulation, checkpoints, evaluation or logging, a fixed seed, and lr 1e-12."""
    return ["OUTPUT_DIR", output_dir, "SOLVER.MAX_ITER", str(max_iter), "SOLVER.IMS_PER_BATCH", str(batch_size),
            "SOLVER.ACCUM_STEPS", "1", "SOLVER.CHECKPOINT_PERIOD", str(10**9), "DATASETS.TEST", "()",
            "LOG_PERIOD", str(10**9), "SEED", "0", "MODEL.DEVICE", device,
            # lr ~0 (the config refuses 0): every op of the step runs, but the weights of a randomly
            # initialized model (FrozenBN from scratch has no normalization) cannot blow up and
            # stop the timing with a non-finite loss
            "SOLVER.BASE_LR", "1e-12"]


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued kernels (a no-op on CPU), so a wall-clock reading covers them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(HookBase):
    """Wall time of every ``run_step`` (forward, backward, all-reduce, optimizer, schedule); on a
    GPU the queue is drained before each reading so a step's kernels count in that step."""

    def __init__(self, device: torch.device):
        self.seconds: list[float] = []
        self.device = device
        self.cuda = device.type == "cuda"

    def _now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def before_step(self) -> None:
        self._start = self._now()

    def after_step(self) -> None:
        self.seconds.append(self._now() - self._start)


class SteppedTrainer:
    """Drive a built :class:`~gn_det.engine.trainer.Trainer` one ``run_step`` at a time, as its
    ``train`` loop would (train mode, its loader, an event storage), so several trainers can take
    turns in one process. Hooks are not run: only the step is timed."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.storage = EventStorage(trainer.start_iter)
        trainer.storage = self.storage
        trainer._data_iter = iter(trainer._build_train_loader())
        trainer.model.train()
        trainer.divergence.start(trainer.unwrapped_model)
        trainer.iter = trainer.start_iter - 1

    def step(self) -> None:
        """One ``Trainer.run_step`` (no device sync)."""
        t = self.trainer
        t.iter += 1
        self.storage.iter = t.iter
        with self.storage:
            t.run_step()


def tensor_bytes(*objs: Any) -> int:
    """Bytes of the distinct tensor storages reachable from modules, optimizers, tensors and
    containers of them (each storage counted once)."""
    seen: set[int] = set()
    total = 0

    def add(t: torch.Tensor) -> None:
        nonlocal total
        s = t.untyped_storage()
        if s.data_ptr() not in seen and s.nbytes():
            seen.add(s.data_ptr())
            total += s.nbytes()

    def visit(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            add(o)
            if o.grad is not None:
                add(o.grad)
        elif isinstance(o, torch.nn.Module):
            for t in itertools.chain(o.parameters(), o.buffers()):
                visit(t)
        elif isinstance(o, torch.optim.Optimizer):
            for state in o.state.values():
                visit(state)
        elif isinstance(o, dict):
            for v in o.values():
                visit(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                visit(v)

    for o in objs:
        visit(o)
    return total


def busy_processes(min_cpu: float = 20.0) -> list[str]:
    """Other processes using at least ``min_cpu`` % of a core (ps's lifetime average), as
    "pcpu command": what shared the machine with the benchmark."""
    import subprocess

    try:
        out = subprocess.run(["ps", "-eo", "pid=,pcpu=,args="], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    busy = []
    for line in out.splitlines():
        pid, pcpu, cmd = (line.split(None, 2) + ["", ""])[:3]
        if pid.isdigit() and int(pid) != os.getpid() and float(pcpu or 0) >= min_cpu:
            busy.append(f"{pcpu}% {cmd[:100]}")
    return busy


def machine_info(device: torch.device, threads: int) -> dict:
    """What ran the benchmark: CPU count and model, torch/torchvision versions, device name, torch
    threads, the load average and the busy processes now (record them again at the end)."""
    import torchvision

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu_count": os.cpu_count(), "cpu": cpu,
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
            "threads": threads, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "loadavg_start": list(os.getloadavg()), "busy_processes_start": busy_processes()}


def finish_report(env: dict, rows: list[dict], out: str | None, threads: int) -> None:
    """End a benchmark: print the load line (start and end) and write ``{"env", "results"}`` to ``out``
    (atomically) when given."""
    import json

    from gn_det.utils.io import atomic_write_text

    env.setdefault("loadavg_end", list(os.getloadavg()))
    print(f"load average (1 min) at start {env['loadavg_start'][0]:.2f}, at end {env['loadavg_end'][0]:.2f}; "
          f"{threads} torch thread(s), {env['cpu_count']} CPUs, {env['device_name']}")
    if out:
        atomic_write_text(json.dumps({"env": env, "results": rows}, indent=2), out)
