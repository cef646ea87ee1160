"""Run models in eval mode for a while, then give every module back its own train/eval flag."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn

__all__ = ["eval_mode"]


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put ``models`` in eval mode (BN uses, never updates, its statistics) and restore each
    module's flag on exit; ``model.train(old)`` would not, when only some modules were frozen."""
    modes = [(m, m.training) for model in models for m in model.modules()]
    try:
        for module, _ in modes:
            module.training = False
        yield
    finally:
        for module, mode in modes:
            module.training = mode
