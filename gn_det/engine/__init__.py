"""The task-agnostic engine: it trains and evaluates whatever a :class:`~gn_det.engine.task.Task`
supplies (model, data loaders, evaluator) and knows nothing about detection or video.

Modules (imported on use, so importing :mod:`gn_det.engine.task` stays light):

- :mod:`~gn_det.engine.task`: the engine <-> task contract and the task registry;
- :mod:`~gn_det.engine.trainer`: :class:`Trainer` (DDP, micro-batches and gradient accumulation,
  AMP, clipping, non-finite loss stop, resume);
- :mod:`~gn_det.engine.optimizer`, :mod:`~gn_det.engine.lr_scheduler`: SGD param groups, warmup +
  multi-step schedule (fvcore param schedulers);
- :mod:`~gn_det.engine.checkpoint`: atomic checkpoints with RNG states, ``last_checkpoint``;
- :mod:`~gn_det.engine.resume`, :mod:`~gn_det.engine.divergence`, :mod:`~gn_det.engine.skipped`: what
  ``--resume`` does with a changed config, when a checkpoint counts as good, skipped-sample accounting;
- :mod:`~gn_det.engine.hooks`, :mod:`~gn_det.engine.evaluate`: periodic checkpoint/eval/writers,
  the inference loop;
- :mod:`~gn_det.engine.launch`: local spawn, torchrun and multi-machine process groups;
- :mod:`~gn_det.engine.setup`: output folder, logging, seeding, ``config.yaml``.
"""
