"""How close is a converted (GN / GN+WS) classifier to the BN network it came from?

Two figures on held-out images: the cosine similarity of the final pooled features (the
classifier's input) per image, and the top-1 agreement of the two classifiers' predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gn_det.utils.progress import progress_bar

from .modes import eval_mode

__all__ = ["FeaturesAndLogits", "Fidelity", "extract_features", "compare_to_reference"]


@dataclass
class FeaturesAndLogits:
    """Pooled features (the input of the classifier layer) and class logits, one row per image."""

    features: torch.Tensor
    logits: torch.Tensor


@dataclass
class Fidelity:
    """Agreement of a converted network with its reference on the same images.

    ``accuracy`` is top-1 accuracy against labels when labels were given (else None).
    """

    cosine_mean: float
    cosine_min: float
    top1_agreement: float
    accuracy: float | None = None


@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, *, classifier: str = "fc",
                     batch_size: int = 64, progress: bool = False) -> FeaturesAndLogits:
    """Run ``model`` in eval mode and return what goes into and out of its ``classifier`` module.

    Args:
        model: a classifier, e.g. a torchvision ResNet (classifier module ``"fc"``).
        images: (N, C, H, W) batch, normalized as the model expects.
        classifier: module name of the final layer; its input is taken as the pooled features.
        batch_size: images per forward pass.
    """
    modules = dict(model.named_modules())
    if classifier not in modules:
        raise ValueError(f"model has no module named {classifier!r} to read features from; "
                         f"pass the name of its final classifier layer")
    captured: list[torch.Tensor] = []
    handle = modules[classifier].register_forward_pre_hook(
        lambda m, args: captured.append(args[0].flatten(1).float().cpu()))
    device = next(model.parameters()).device
    logits = []
    try:
        with eval_mode(model):
            for batch in progress_bar(images.split(batch_size), desc="features", disable=not progress, leave=False):
                logits.append(model(batch.to(device)).float().cpu())
    finally:
        handle.remove()
    return FeaturesAndLogits(features=torch.cat(captured), logits=torch.cat(logits))


def compare_to_reference(reference: FeaturesAndLogits, other: FeaturesAndLogits,
                         labels: torch.Tensor | None = None) -> Fidelity:
    """Per-image cosine of features and top-1 agreement of ``other`` against ``reference``."""
    if reference.features.shape != other.features.shape:
        raise ValueError(f"feature shapes differ: {tuple(reference.features.shape)} vs "
                         f"{tuple(other.features.shape)}")
    cos = F.cosine_similarity(reference.features.double(), other.features.double(), dim=1)
    pred = other.logits.argmax(1)
    agree = (reference.logits.argmax(1) == pred).double().mean()
    acc = None if labels is None else float((pred == labels.cpu()).double().mean())
    return Fidelity(cosine_mean=float(cos.mean()), cosine_min=float(cos.min()),
                    top1_agreement=float(agree), accuracy=acc)
