"""ResNet image classifier (``MODEL.META_ARCHITECTURE "ResNetClassifier"``) and its MODEL.WEIGHTS
transform.

The model is gn_det's ResNet (any depth, any norm: BN, GN, GN+WS, ...) with ``avgpool`` + ``fc``,
held as ``resnet``: its state-dict keys are torchvision's behind the fixed prefix ``resnet.``
(``resnet.conv1.weight`` ... ``resnet.fc.bias``), so a torchvision state dict maps by adding the
prefix, and the trunk of a classification checkpoint is a torchvision-named ResNet after removing
it (:func:`classifier_resnet_state_dict`). Pixel mean/std are non-persistent buffers: checkpoints
hold the ResNet only.

Input: a list of samples ``{"image": Tensor[3, S, S] RGB 0-255 (uint8 or float), "label": int}``
(gn_det's loader format). With INPUT.FORMAT "BGR" the channels are reversed before normalizing, and
MODEL.PIXEL_MEAN/STD are in that order (detectron2's convention). Train mode returns
``{"loss_cls": cross-entropy}``; eval mode the logits (N, K).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from gn_det.checkpoint.formats import Checkpoint, make_meta, parse_checkpoint
from gn_det.checkpoint.loading import resnet_weights_for
from gn_det.checkpoint.model_loading import WeightsForModel
from gn_det.config import ConfigError
from gn_det.modeling.backbone.resnet import ResNet, build_resnet_from_cfg

logger = logging.getLogger(__name__)

__all__ = ["ResNetClassifier", "build_classifier", "classifier_weights_transform", "classifier_resnet_state_dict",
           "classifier_resnet_checkpoint", "trunk_prefixes", "RESNET_PREFIX", "META_ARCHITECTURE"]

META_ARCHITECTURE = "ResNetClassifier"
RESNET_PREFIX = "resnet."  # the ResNet's keys in the classifier's state dict: RESNET_PREFIX + torchvision name
INPUT_FORMATS = ("RGB", "BGR")


class ResNetClassifier(nn.Module):
    """Normalize a list of samples, run the ResNet, return the loss (train) or the logits (eval).

    Args:
        resnet: a :class:`~gn_det.modeling.backbone.resnet.ResNet` built with ``num_classes``.
        pixel_mean, pixel_std: per channel, 0-255 range, in ``input_format`` order.
        input_format: "RGB" or "BGR": the channel order the ResNet's weights expect (samples are RGB).
    """

    def __init__(self, resnet: ResNet, pixel_mean: Sequence[float], pixel_std: Sequence[float],
                 input_format: str = "RGB"):
        super().__init__()
        if not hasattr(resnet, "fc"):
            raise ValueError("ResNetClassifier needs a ResNet built with num_classes (avgpool + fc)")
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"INPUT.FORMAT must be one of {INPUT_FORMATS}, got {input_format!r}")
        if len(pixel_mean) != 3 or len(pixel_std) != 3 or min(pixel_std) <= 0:
            raise ValueError(f"MODEL.PIXEL_MEAN/STD need 3 values each (std > 0), got {list(pixel_mean)} and "
                             f"{list(pixel_std)}")
        self.resnet = resnet
        self.input_format = input_format
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1), False)

    @property
    def num_classes(self) -> int:
        return self.resnet.fc.out_features

    def preprocess(self, batch: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """Stack the samples' images into a normalized float batch (N, 3, S, S) on the model's device."""
        if not isinstance(batch, (list, tuple)) or not batch or not all(isinstance(d, Mapping) for d in batch):
            raise TypeError("ResNetClassifier expects a non-empty list of dicts with an 'image' key (gn_det's data "
                            f"loader format), got {type(batch).__name__}")
        sizes = {tuple(d["image"].shape) for d in batch}
        if len(sizes) > 1:
            raise ValueError(f"images of one batch must share one size (the loader crops them), got {sorted(sizes)}")
        return self.normalize(torch.stack([d["image"] for d in batch]))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """RGB 0-255 images (N, 3, H, W) -> the ResNet's input: channel order, then (x - mean) / std.

        Tensors only, so an exported model (:mod:`gn_det.export`) runs the same preprocessing."""
        images = images.to(self.pixel_mean.device, torch.float32)
        if self.input_format == "BGR":
            images = images.flip(1)
        return (images - self.pixel_mean) / self.pixel_std

    def forward(self, batch: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor] | torch.Tensor:
        logits = self.resnet(self.preprocess(batch))
        if not self.training:
            return logits
        labels = [int(d["label"]) for d in batch]
        if max(labels) >= logits.shape[1] or min(labels) < 0:  # checked on the host: no device sync
            raise ValueError(f"labels {labels} do not index the {logits.shape[1]} outputs; "
                             f"check MODEL.CLASSIFIER.NUM_CLASSES")
        return {"loss_cls": F.cross_entropy(logits, torch.tensor(labels, device=logits.device))}


def build_classifier(cfg) -> ResNetClassifier:
    """The classifier cfg describes (MODEL.RESNETS.*, MODEL.BACKBONE.FREEZE_AT,
    MODEL.CLASSIFIER.NUM_CLASSES, MODEL.PIXEL_MEAN/STD, INPUT.FORMAT), randomly initialized.

    MODEL.WEIGHTS is loaded by the engine through the task's weights transform
    (:func:`classifier_weights_transform`), not here.

    Raises:
        ConfigError: MODEL.META_ARCHITECTURE is not "ResNetClassifier", or NUM_CLASSES < 1.
    """
    if cfg.MODEL.META_ARCHITECTURE != META_ARCHITECTURE:
        raise ConfigError(f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r}: the classification task "
                          f"builds {META_ARCHITECTURE!r} only")
    num_classes = int(cfg.MODEL.CLASSIFIER.NUM_CLASSES)
    if num_classes < 1:
        raise ConfigError(f"MODEL.CLASSIFIER.NUM_CLASSES must be >= 1, got {num_classes}")
    resnet = build_resnet_from_cfg(cfg, num_classes=num_classes)
    return ResNetClassifier(resnet, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, cfg.INPUT.FORMAT)


def trunk_prefixes(model: ResNetClassifier) -> tuple[str, ...]:
    """State-dict prefixes of the ResNet without its classifier: ``("resnet.conv1.", "resnet.bn1.",
    "resnet.layer1.", ...)``; MODEL.WEIGHTS must fill all of them."""
    tops = dict.fromkeys(k.split(".", 1)[0] for k in model.resnet.state_dict())
    return tuple(f"{RESNET_PREFIX}{t}." for t in tops if t != "fc")


def classifier_resnet_state_dict(raw: Any) -> dict[str, torch.Tensor] | None:
    """The ResNet of a gn_det classification checkpoint (a training checkpoint, model_final.pth or
    a bare state dict with ``resnet.`` keys) in torchvision names, fc included; None for other
    content. What a detection or video task needs to start from a fine-tuned classifier."""
    state = raw.get("model", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        return None
    keys = [k.removeprefix("module.") for k in state if isinstance(k, str)]
    if not keys or not all(k.startswith(RESNET_PREFIX) for k in keys):
        return None
    return {k.removeprefix("module.").removeprefix(RESNET_PREFIX): v for k, v in state.items()
            if isinstance(v, torch.Tensor)}


def classifier_resnet_checkpoint(raw: Any, source: str, *, stride_in_1x1: bool) -> Checkpoint | None:
    """The ResNet of a gn_det classification checkpoint as a :class:`~gn_det.checkpoint.formats.Checkpoint`
    (torchvision names, fc included), ready for :func:`~gn_det.checkpoint.loading.resnet_weights_for`;
    None for other content.

    The norm (with WS) and the stride placement come from the config the training run saved in
    the checkpoint (``"config"``), so GN+WS weights are refused by a model without WS and a stride
    mismatch is caught. A file without it (a bare state dict) is taken as ``stride_in_1x1`` (the
    loading model's) with the norm "BN" when it holds running statistics, else "GN", and WS unknown.
    """
    state = classifier_resnet_state_dict(raw)
    if state is None:
        return None
    saved = _saved_resnet_config(raw)
    if saved is not None:
        norm, stride = saved
        meta = make_meta("gn_det", norm, ws=norm.upper().endswith("+WS"), stride_in_1x1=stride,
                         stride_source="the training run's config saved in the checkpoint")
    else:
        norm = "BN" if any(k.endswith(".running_var") for k in state) else "GN"
        logger.warning("%s records no config: its norm is taken as %s and its stride placement as the model's; "
                       "WS weights cannot be told apart from plain ones", source, norm)
        meta = make_meta("gn_det", norm, stride_in_1x1=stride_in_1x1, stride_source="gn_det classification "
                         "checkpoint without a saved config: the loading model's MODEL.RESNETS.STRIDE_IN_1X1")
    return Checkpoint(state, meta, path=source)


def _saved_resnet_config(raw: Any) -> tuple[str, bool] | None:
    """(MODEL.RESNETS.NORM, STRIDE_IN_1X1) of the config a training checkpoint carries, or None."""
    text = raw.get("config") if isinstance(raw, dict) else None
    if not isinstance(text, str):
        return None
    try:
        resnets = (yaml.safe_load(text) or {}).get("MODEL", {}).get("RESNETS", {})
        return str(resnets["NORM"]), bool(resnets["STRIDE_IN_1X1"])
    except (yaml.YAMLError, AttributeError, KeyError):
        return None


def classifier_weights_transform(cfg, model: ResNetClassifier, raw: Any, source: str) -> WeightsForModel:
    """Map the content of a MODEL.WEIGHTS file into the classifier's names (the classification task's
    ``weights_transform``; the file was read once, by :func:`gn_det.checkpoint.load_weights`).

    - A gn_det classification checkpoint (``resnet.`` keys) loads by name.
    - Any ResNet checkpoint the converter reads (torchvision ``.pth`` with or without ``fc``, gn_det
      converter output, detectron2 ``.pkl``, Detectron/Caffe2) goes under ``resnet.``, with the
      stride placement checked against MODEL.RESNETS.STRIDE_IN_1X1, WS weights refused by a model
      without WS, and a BN -> GN norm change logged as a warning.

    Either way the trunk (everything but ``fc``) must be filled completely; an ``fc`` with another
    class count is reported shape-mismatched and left at its init (fine-tuning to new classes).

    Raises:
        gn_det.checkpoint.CheckpointError: content none of these, or weights that would load wrong.
    """
    trunk = trunk_prefixes(model)
    own = classifier_resnet_state_dict(raw)
    if own is not None:
        state = {RESNET_PREFIX + k: v for k, v in own.items()}
        return WeightsForModel(state, complete=trunk, notes=["gn_det classification checkpoint: loaded by name"])
    ckpt = parse_checkpoint(raw, source)
    weights = resnet_weights_for(ckpt, model.resnet, RESNET_PREFIX,
                                 stride_in_1x1=bool(cfg.MODEL.RESNETS.STRIDE_IN_1X1), body_norm=cfg.MODEL.RESNETS.NORM)
    # The classifier layer belongs to the ResNet here, but a new class count must not block loading.
    return dataclasses.replace(weights, complete=trunk)
