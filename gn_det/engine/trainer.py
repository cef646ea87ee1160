"""The task-agnostic training loop.

:class:`Trainer` asks a :class:`~gn_det.engine.task.Task` for the model, the train loader and the
evaluator, and supplies everything else: device placement and DDP, SGD with per-kind param
groups, warmup + step lr schedule, a global batch (``SOLVER.IMS_PER_BATCH``) split into
micro-batches per rank with gradient accumulation, optional AMP (SOLVER.AMP), channels_last
weights (MODEL.CHANNELS_LAST), ``torch.compile`` (MODEL.COMPILE) and gradient clipping,
non-finite loss detection, checkpoints with exact resume, periodic evaluation and logging.

Failures a user can act on (see the README's "When things go wrong"):

* ``--resume`` with a changed config: each difference from the checkpoint's config is applied
  from the resume iteration on, kept, or refused, in one log line each (:mod:`.resume`); the
  lr schedule follows the run's SOLVER keys, so the non-finite-loss advice (lower BASE_LR,
  then ``--resume``) works.
* ``last_checkpoint`` only ever names a good checkpoint: finite weights, losses not exploding
  (:mod:`.divergence`); SOLVER.CHECKPOINT_MAX_TO_KEEP bounds the periodic ones kept.
* metrics.json and TensorBoard read as one run after a resume; temporary files a killed run
  left are removed on start; skipped samples are counted and listed (:mod:`.skipped`).

Batch arithmetic: ``micro-batch per rank = IMS_PER_BATCH / (world size * ACCUM_STEPS)``. Each
micro-batch's loss is scaled by ``1 / ACCUM_STEPS`` and DDP synchronizes gradients only on
the last micro-batch of a step, so one optimizer step sees the gradient of the mean loss over
``IMS_PER_BATCH`` images, exactly, for any model whose loss is a per-image mean and whose
layers do not mix images in a batch (GN, FrozenBN; *not* BN, whose batch statistics depend
on the micro-batch: that is why accumulation does not rescue BN at 1-2 images per GPU).
"""

from __future__ import annotations

import inspect
import logging
import importlib.util
import math
import os
import shutil
import time
from contextlib import nullcontext
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint.io import CheckpointError
from ..checkpoint.model_loading import ModelLoadReport, init_policy, load_weights
from ..config import ConfigError
from ..utils import comm
from ..utils.events import ConsoleWriter, EventStorage, JSONWriter, TensorboardWriter
from ..utils.io import atomic_write_text
from ..utils.progress import progress_bar
from . import hooks as hooks_mod
from .checkpoint import Checkpointer, restore_rng_state, stored_config
from .divergence import DivergenceWatch
from .evaluate import evaluate_task
from .lr_scheduler import build_lr_scheduler
from .optimizer import build_optimizer
from .resume import check_resume_config
from .skipped import SkippedSampleLog
from .task import Task, get_task

__all__ = ["Trainer", "micro_batch_size", "resolve_device", "load_model_weights", "to_channels_last",
           "compile_model"]

logger = logging.getLogger(__name__)


def micro_batch_size(cfg, world_size: int) -> int:
    """Samples per rank per micro-batch: ``IMS_PER_BATCH / (world_size * ACCUM_STEPS)``.

    Raises:
        ConfigError: when that is not a positive whole number.
    """
    ims, accum = cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.ACCUM_STEPS
    if accum < 1:
        raise ConfigError(f"SOLVER.ACCUM_STEPS must be >= 1, got {accum}")
    per_step = world_size * accum
    if ims <= 0 or ims % per_step:
        lower = max(per_step, ims - ims % per_step)
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH ({ims}) must be a positive multiple of world size ({world_size}) "
            f"x SOLVER.ACCUM_STEPS ({accum}) = {per_step}, so that every rank gets a whole number of "
            f"images per micro-batch. Use SOLVER.IMS_PER_BATCH {lower} or {lower + per_step}, or change "
            f"SOLVER.ACCUM_STEPS / --num-gpus.")
    return ims // per_step


def resolve_device(name: str) -> torch.device:
    """MODEL.DEVICE -> device: "auto" is this rank's GPU when CUDA is available, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("MODEL.DEVICE is 'cuda' but CUDA is not available; use 'cpu' or 'auto'")
        return torch.device("cuda", comm.get_local_rank())
    return torch.device(name)


def load_model_weights(cfg, model: nn.Module, path: str, task: Task) -> ModelLoadReport:
    """Initialize ``model`` from ``path`` (MODEL.WEIGHTS) through the one loading path.

    The task's ``weights_transform`` (if any) maps the file into the model's names; the
    policy is :func:`~gn_det.checkpoint.model_loading.init_policy` with the task's
    ``weight_parts`` as required parts and MODEL.WEIGHTS_ALLOW_EMPTY_PARTS as exceptions. Used
    by training, ``--eval-only`` and ``tools/visualize.py`` alike.

    Raises:
        ConfigError: MODEL.WEIGHTS_ALLOW_EMPTY_PARTS names a part the model does not have.
        FileNotFoundError, CheckpointError: see :func:`~gn_det.checkpoint.model_loading.load_weights`.
    """
    parts = task.weight_parts(cfg) if hasattr(task, "weight_parts") else {}
    try:
        policy = init_policy(parts, list(cfg.MODEL.WEIGHTS_ALLOW_EMPTY_PARTS))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    transform = None
    if hasattr(task, "weights_transform"):
        def transform(raw, source):
            return task.weights_transform(cfg, model, raw, source)
    return load_weights(model, path, policy, transform=transform)


def to_channels_last(model: nn.Module) -> int:
    """Store ``model``'s 4-D parameters and buffers channels_last and its 5-D ones channels_last_3d,
    in place (``Module.to(memory_format=...)`` refuses a model holding both). Convolutions then
    produce channels-last outputs from ordinary inputs. Returns the number of tensors converted.
    """
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    converted = 0
    for t in list(model.parameters()) + list(model.buffers()):
        fmt = formats.get(t.dim())
        if fmt is not None:
            t.data = t.data.contiguous(memory_format=fmt)
            converted += 1
    return converted


def compile_model(model: nn.Module, mode: str, scope: str, device: torch.device) -> nn.Module:
    """``torch.compile`` ``model.backbone`` (scope "backbone") or ``model`` (scope "model") in
    place (``Module.compile``: parameter names and checkpoints do not change); returns what
    was compiled. Compilation itself happens on the first forward.

    Raises:
        ConfigError: the model has no backbone, or the compiler toolchain is missing.
    """
    target = model if scope == "model" else getattr(model, "backbone", None)
    if not isinstance(target, nn.Module):
        raise ConfigError(f"MODEL.COMPILE.SCOPE = 'backbone': {type(model).__name__} has no .backbone module; "
                          f"use MODEL.COMPILE.SCOPE model, or MODEL.COMPILE.MODE '' (no compile)")
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        raise ConfigError(f"MODEL.COMPILE.MODE = {mode!r} on CUDA needs the triton package (pip install triton), "
                          f"or set MODEL.COMPILE.MODE ''")
    if device.type == "cpu" and not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")):
        raise ConfigError(f"MODEL.COMPILE.MODE = {mode!r} on CPU needs a C++ compiler (g++ or clang++, or $CXX); "
                          f"install one or set MODEL.COMPILE.MODE ''")
    target.compile(mode=mode)
    return target


def _accepts_kwarg(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class Trainer:
    """Train ``task``'s model as ``cfg`` says.

    Args:
        cfg: a frozen config (:func:`gn_det.config.load_config`), usually after
            :func:`gn_det.engine.setup.default_setup`.
        task: the task; default ``get_task(cfg.TASK)``.

    Typical use, in every process of the job::

        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
    """

    def __init__(self, cfg, task: Task | None = None):
        self.cfg = cfg
        self.task = task if task is not None else get_task(cfg.TASK)
        self.world_size = comm.get_world_size()
        self.accum_steps = cfg.SOLVER.ACCUM_STEPS
        self.micro_batch_size = micro_batch_size(cfg, self.world_size)
        self.device = resolve_device(cfg.MODEL.DEVICE)

        model = self.task.build_model(cfg).to(self.device)
        if cfg.MODEL.CHANNELS_LAST:
            logger.info("MODEL.CHANNELS_LAST: %d weight tensors stored channels-last", to_channels_last(model))
        self.unwrapped_model: nn.Module = model
        self.optimizer = build_optimizer(cfg, model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        self.amp_dtype, self.scaler = self._setup_amp()
        if cfg.MODEL.COMPILE.MODE:
            target = compile_model(model, cfg.MODEL.COMPILE.MODE, cfg.MODEL.COMPILE.SCOPE, self.device)
            logger.info("MODEL.COMPILE: torch.compile(mode=%r) on %s (%s); the first steps compile it",
                        cfg.MODEL.COMPILE.MODE, cfg.MODEL.COMPILE.SCOPE, type(target).__name__)
        if self.world_size > 1:
            model = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=getattr(self.task, "find_unused_parameters", False))
        self.model: nn.Module = model
        keep = cfg.SOLVER.CHECKPOINT_MAX_TO_KEEP
        if keep < 0:
            raise ConfigError(f"SOLVER.CHECKPOINT_MAX_TO_KEEP must be >= 0 (0 keeps all), got {keep}")
        self.checkpointer = Checkpointer(self.unwrapped_model, cfg.OUTPUT_DIR, max_to_keep=keep,
                                         optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler)
        self.start_iter = 0
        self.iter = -1
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.finished = False
        self.last_eval_results: dict | None = None
        self.storage: EventStorage | None = None
        self._rng_to_restore: dict | None = None
        self._data_iter: Iterator | None = None
        self.divergence = DivergenceWatch()
        self.skipped = SkippedSampleLog(cfg.OUTPUT_DIR, bool(cfg.DATALOADER.SKIP_BAD_SAMPLES))
        # The lr logged is that of the largest param group (the plain weights).
        self._lr_group = max(range(len(self.optimizer.param_groups)),
                             key=lambda i: len(self.optimizer.param_groups[i]["params"]))
        self.hooks: list[hooks_mod.HookBase] = []
        self.register_hooks(self.build_hooks())
        removed = self.checkpointer.remove_stale_temporaries()
        if removed:
            logger.info("Removed %d temporary file(s) an interrupted run left in %s: %s", len(removed),
                        cfg.OUTPUT_DIR, ", ".join(f"{n} ({b / 2**20:.1f} MiB)" for n, b in removed))
        logger.info("World size %d, %d image(s) per rank per micro-batch, %d micro-batch(es) per step, "
                    "%d images per step; device %s", self.world_size, self.micro_batch_size,
                    self.accum_steps, cfg.SOLVER.IMS_PER_BATCH, self.device)

    # ----------------------------------------------------------------------------- setup
    def _setup_amp(self) -> tuple[torch.dtype | None, Any]:
        """SOLVER.AMP -> (autocast dtype, GradScaler): float16 with a scaler (CUDA only), or
        bfloat16 without one; "auto" is float16 on CUDA, bfloat16 elsewhere."""
        amp = self.cfg.SOLVER.AMP
        if not amp.ENABLED:
            return None, None
        cuda = self.device.type == "cuda"
        name = amp.DTYPE if amp.DTYPE != "auto" else ("float16" if cuda else "bfloat16")
        if name == "float16":
            if not cuda:
                raise ConfigError(f"SOLVER.AMP.DTYPE = 'float16' needs CUDA (its GradScaler keeps small gradients "
                                  f"representable); use SOLVER.AMP.DTYPE bfloat16 on {self.device.type}")
            logger.info("SOLVER.AMP: float16 autocast with a GradScaler")
            return torch.float16, torch.amp.GradScaler("cuda")
        if cuda and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"SOLVER.AMP.DTYPE = 'bfloat16': {torch.cuda.get_device_name(self.device)} has no "
                              f"bfloat16 support; use SOLVER.AMP.DTYPE float16")
        logger.info("SOLVER.AMP on %s: bfloat16 autocast, no GradScaler (bf16 has fp32's range)",
                    self.device.type)
        return torch.bfloat16, None

    def build_hooks(self) -> list[hooks_mod.HookBase]:
        """Checkpointer, evaluation, then writers (see :mod:`gn_det.engine.hooks` for the order)."""
        cfg = self.cfg
        hooks: list[hooks_mod.HookBase] = [hooks_mod.PeriodicCheckpointer(cfg.SOLVER.CHECKPOINT_PERIOD),
                                           hooks_mod.EvalHook(cfg.TEST.EVAL_PERIOD)]
        if comm.is_main_process():
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            # Writers open their files when training starts (start_iter is known by then); both
            # drop what an earlier run wrote for iterations >= start_iter: the folder is one run.
            hooks.append(hooks_mod.PeriodicWriter(
                lambda: [ConsoleWriter(self.max_iter),
                         JSONWriter(os.path.join(cfg.OUTPUT_DIR, "metrics.json"), self.start_iter),
                         TensorboardWriter(cfg.OUTPUT_DIR, purge_step=self.start_iter)], cfg.LOG_PERIOD))
        return hooks

    def register_hooks(self, hooks: Iterable[hooks_mod.HookBase]) -> None:
        for h in hooks:
            h.trainer = self
            self.hooks.append(h)

    # ---------------------------------------------------------------------- checkpoints
    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume`` and a ``last_checkpoint`` in OUTPUT_DIR: restore the full training state
        and continue after its iteration, under this run's config where it differs from the
        checkpoint's (:func:`~gn_det.engine.resume.check_resume_config`: applied, kept or refused,
        one log line each). Otherwise start at 0 from MODEL.WEIGHTS (if set).

        Raises:
            ConfigError: the config changes the model the checkpoint holds.
            CheckpointError: the checkpoint cannot be read or does not fit the model.
        """
        path = self.checkpointer.get_checkpoint_file() if resume else None
        if path is not None:
            data = self.checkpointer.read(path)
            start_iter = int(data["iteration"]) + 1
            saved = stored_config(data)
            try:
                cfg, changes = check_resume_config(saved, self.cfg, path)
            except ConfigError:
                self._write_config(data.get("config"))  # config.yaml goes back to what the folder holds
                raise
            data = self.checkpointer.apply(data, path)
            self.start_iter = start_iter
            if saved is None:
                logger.warning("%s stores no config: this run's config is used as is, unchecked", path)
            for line in changes.log_lines(self.start_iter):
                logger.info("--resume: %s", line)
            if cfg is not self.cfg:
                self.cfg = cfg
                self._write_config(cfg.dump())
            states = data.get("rng_states") or []
            if len(states) == self.world_size:
                self._rng_to_restore = states[comm.get_rank()]
            else:
                logger.warning("%s was saved by %d processes, this run has %d: RNG states not restored, "
                               "the run will not continue exactly", path, len(states), self.world_size)
            logger.info("Resuming from %s at iteration %d; lr %.5g", path, self.start_iter,
                        self.optimizer.param_groups[self._lr_group]["lr"])
            self.skipped.resume(self.start_iter)
            self.divergence.load_state_dict(data.get("divergence"))
            return
        if resume:
            logger.info("--resume: no checkpoint in %s, starting from iteration 0", self.cfg.OUTPUT_DIR)
        elif self.checkpointer.get_checkpoint_file() is not None:
            logger.warning("%s holds checkpoints of an earlier run; starting fresh (no --resume) overwrites "
                           "them, and its metrics.json and TensorBoard records start again at iteration 0",
                           self.cfg.OUTPUT_DIR)
        self.start_iter = 0
        if self.cfg.MODEL.WEIGHTS:
            load_model_weights(self.cfg, self.unwrapped_model, self.cfg.MODEL.WEIGHTS, self.task)

    def _write_config(self, text: str | None) -> None:
        """Rewrite OUTPUT_DIR/config.yaml (main process) so it says what runs."""
        if text and comm.is_main_process():
            atomic_write_text(text, os.path.join(self.cfg.OUTPUT_DIR, "config.yaml"))

    def save_checkpoint(self, name: str) -> str:
        """Save the full training state as ``{OUTPUT_DIR}/{name}.pth`` (call on every rank).

        ``last_checkpoint`` points at it only if it is good (:mod:`gn_det.engine.divergence`);
        otherwise a warning says why and which checkpoint stays the last good one.
        """
        problem = self.divergence.problem(self.unwrapped_model)
        # The config as run travels with the weights, so a later MODEL.WEIGHTS load knows the
        # facts the tensors alone cannot tell (the norm, WS, the stride placement).
        path = self.checkpointer.save(name, iteration=self.iter, good=problem is None, config=self.cfg.dump(),
                                      divergence=self.divergence.state_dict())
        if problem is None:
            self.divergence.accept(self.unwrapped_model)
        elif comm.is_main_process():
            logger.warning("%s is not a good checkpoint to resume from: %s. last_checkpoint still names %s",
                           path, problem, self._last_good_checkpoint())
        self.skipped.sync()
        self.skipped.write()
        return path

    def _last_good_checkpoint(self) -> str:
        try:
            path = self.checkpointer.get_checkpoint_file()
        except CheckpointError as e:
            return f"none usable ({e})"
        return path if path else f"none yet (no good checkpoint written in {self.cfg.OUTPUT_DIR})"

    # ---------------------------------------------------------------------------- train
    def _build_train_loader(self) -> Iterable:
        # Micro-batches this rank already consumed; a task that accepts it resumes its data order.
        consumed = self.start_iter * self.accum_steps
        build = self.task.build_train_loader
        if _accepts_kwarg(build, "skip_batches"):
            return build(self.cfg, self.micro_batch_size, skip_batches=consumed)
        if consumed:
            logger.warning("%s.build_train_loader has no skip_batches argument: after resume its data "
                           "order restarts, so the run will not continue exactly as if never stopped",
                           type(self.task).__name__)
        return build(self.cfg, self.micro_batch_size)

    def train(self) -> dict | None:
        """Run iterations ``start_iter .. MAX_ITER-1``; returns the last evaluation results."""
        logger.info("Starting training from iteration %d", self.start_iter)
        loader = self._build_train_loader()
        self.skipped.watch(loader)
        self._data_iter = iter(loader)
        if self._rng_to_restore is not None:
            # After the loader is built, so the random stream continues where it was saved.
            restore_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        self.model.train()
        self.divergence.start(self.unwrapped_model)
        self.iter = self.start_iter - 1
        self.finished = False
        bar = progress_bar(total=self.max_iter, initial=self.start_iter, desc="train", dynamic_ncols=True,
                           disable=not comm.is_main_process())
        with EventStorage(self.start_iter) as self.storage:
            try:
                for h in self.hooks:
                    h.before_train()
                for self.iter in range(self.start_iter, self.max_iter):
                    self.storage.iter = self.iter
                    for h in self.hooks:
                        h.before_step()
                    self.run_step()
                    for h in self.hooks:
                        h.after_step()
                    bar.update(1)
                self.finished = True
            finally:
                bar.close()
                for h in self.hooks:
                    h.after_train()
                self._account_skipped()
        return self.last_eval_results

    def _account_skipped(self) -> None:
        """The final count of skipped samples: logged, and written to skipped_samples.json."""
        # After a failure the other ranks may be gone: no collective then, and no error of
        # this bookkeeping may hide the one that stopped training.
        try:
            self.skipped.sync(collective=self.finished)
            self.skipped.write()
        except Exception as e:
            if self.finished:
                raise
            logger.warning("Could not write %s: %s", self.skipped.path, e)
        if self.skipped.active and comm.is_main_process():
            logger.info("%s", self.skipped.summary())

    def _next_batch(self) -> Any:
        try:
            batch = next(self._data_iter)
            self.skipped.poll(self.iter)
            return batch
        except StopIteration:
            raise RuntimeError(f"{type(self.task).__name__}'s train loader ended at iteration {self.iter}; "
                               f"build_train_loader must return an endless iterable") from None

    def run_step(self) -> None:
        """One optimizer step over ``ACCUM_STEPS`` micro-batches."""
        start = time.perf_counter()
        data_time = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        for k in range(self.accum_steps):
            t0 = time.perf_counter()
            batch = self._next_batch()
            data_time += time.perf_counter() - t0
            last = k == self.accum_steps - 1
            # Gradients are all-reduced only once per step, on the last micro-batch.
            sync = self.model.no_sync() if (self.world_size > 1 and not last) else nullcontext()
            with sync:
                with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.amp_dtype is not None):
                    loss_dict = self._check_loss_dict(self.model(batch))
                loss = sum(loss_dict.values()) / self.accum_steps
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            for name, value in loss_dict.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float()

        # One all-reduce and one host sync per step: the rank-mean losses are both what is logged
        # and the non-finite check (a NaN/inf on any rank makes the mean non-finite on every
        # rank), done before the optimizer touches the weights.
        local = {k: v / self.accum_steps for k, v in sums.items()}
        losses = comm.reduce_dict(local)
        scalars = dict(zip(losses, torch.stack(list(losses.values())).tolist()))
        if not all(math.isfinite(v) for v in scalars.values()):
            raise FloatingPointError(self._non_finite_message(local))

        grad_norm = self._clip_gradients()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        lr = self.optimizer.param_groups[self._lr_group]["lr"]
        self.scheduler.step()

        total = sum(scalars.values())
        self.divergence.update(self.iter, total)
        self.storage.put_scalars(total_loss=total, **scalars, lr=lr,
                                 time=time.perf_counter() - start, data_time=data_time)
        if grad_norm is not None:
            self.storage.put_scalar("grad_norm", grad_norm)

    def _check_loss_dict(self, loss_dict: Any) -> dict[str, torch.Tensor]:
        if not isinstance(loss_dict, dict) or not loss_dict or not all(
                isinstance(v, torch.Tensor) and v.numel() == 1 for v in loss_dict.values()):
            raise TypeError(f"In train mode, the model of task {type(self.task).__name__} must return a "
                            f"non-empty dict of scalar loss tensors, got {type(loss_dict).__name__}")
        return {k: v.reshape(()) for k, v in loss_dict.items()}

    def _non_finite_message(self, loss_dict: dict[str, torch.Tensor]) -> str:
        values = ", ".join(f"{k}={v.item():.4g}" for k, v in loss_dict.items())
        lr = self.cfg.SOLVER.BASE_LR
        remedy = (f"a lower SOLVER.BASE_LR (e.g. {lr / 10:g} instead of {lr:g}), a longer SOLVER.WARMUP_ITERS or "
                  f"SOLVER.CLIP_GRADIENTS.ENABLED True")
        good = self._last_good_checkpoint()
        if good.startswith("none"):
            advice = f"Rerun with {remedy} (there is no good checkpoint to continue from)."
        else:
            advice = (f"Rerun the same command with --resume and {remedy}: it continues from that checkpoint "
                      f"under the new SOLVER values.")
        return (f"Loss became non-finite at iteration {self.iter} (on at least one rank; here, mean over "
                f"micro-batches: {values}). Training stopped. Last good checkpoint: {good}. {advice}")

    def _clip_gradients(self) -> float | None:
        clip = self.cfg.SOLVER.CLIP_GRADIENTS
        if not clip.ENABLED:
            return None
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if clip.CLIP_TYPE == "norm":
            return float(torch.nn.utils.clip_grad_norm_(params, clip.CLIP_VALUE, clip.NORM_TYPE))
        if clip.CLIP_TYPE == "value":
            torch.nn.utils.clip_grad_value_(params, clip.CLIP_VALUE)
            return None
        raise ConfigError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be 'norm' or 'value', got {clip.CLIP_TYPE!r}")

    # ----------------------------------------------------------------------------- test
    @staticmethod
    def test(cfg, model: nn.Module, task: Task | None = None) -> dict:
        """Evaluate ``model`` (not DDP-wrapped) on DATASETS.TEST; ``{dataset: {kind: {metric: v}}}``."""
        task = task if task is not None else get_task(cfg.TASK)
        return evaluate_task(cfg, model, task)
