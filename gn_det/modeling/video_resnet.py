"""I3D video classifiers (``MODEL.META_ARCHITECTURE "I3D"``): gn_det's one ResNet in 3D plus a
PySlowFast-style head, and the MODEL.WEIGHTS transform that inflates 2D checkpoints into it.

The model is :class:`VideoClassifier`: ``resnet`` is :class:`~gn_det.modeling.backbone.resnet.ResNet`
built with ``dim=3`` (any norm of the factory: BN, SyncBN, FrozenBN, GN, GN+WS, ...), so its
state-dict keys are torchvision's names behind the fixed prefix ``resnet.`` and a 2D ResNet
checkpoint maps key for key (:func:`video_weights_transform` inflates its convs). ``head`` is
:class:`VideoHead`: PySlowFast's I3D head (global average pool over T, H, W, dropout, fc) with an
optional 1x1x1 conv + norm + ReLU in front (``MODEL.VIDEO_HEAD.CONV_DIM`` > 0, norm
``MODEL.VIDEO_HEAD.NORM``), which PySlowFast does not have; a 2D checkpoint's ``fc`` maps onto
``head.fc`` when the class count (and input width) match, else it is reported and left at init.

Temporal layout (``I3D_TEMPORAL_KERNELS``, PySlowFast's ``_TEMPORAL_KERNEL_BASIS["i3d"]``): the stem
conv is 5x7x7; the temporal size of each block's first conv cycles through ``[3]`` in res2,
``[3, 1]`` in res3 and res4 and ``[1, 3]`` in res5. In a bottleneck (ResNet-50/101) that conv is
the first 1x1 (giving 3x1x1 or 1x1x1), as in I3D; in a basic block (ResNet-18/34, for small
machines) it is the first 3x3 (3x3x3 or 1x3x3; the second 3x3 stays 1x3x3), so the basic-block
nets alternate full 3D and 2D+1-style blocks exactly where the bottleneck nets do. After res2 a
max pool halves T (PySlowFast's ``pool1`` [2, 1, 1]); there is no other temporal stride, so a
32-frame clip leaves res5 with 16 time steps.

Input: a list of samples (``{"video": float (3, T, H, W), "label": int, ...}``, gn_det's loader
format) or a batch dict from :func:`gn_det.data.video.collate_video_samples`. Videos arrive
normalized (DATA.MEAN/STD); with INPUT.FORMAT "BGR" the channels are reversed for the network.
``MODEL.VIDEO.INPUT_MODALITY "rgb_diff"`` feeds the network the differences of consecutive frames
instead (T - 1 of them; TSN's "RGB difference" modality): static appearance cancels, motion stays.
It is for training from scratch on data where only motion tells the classes apart (the synthetic
demo set); ImageNet checkpoints expect "rgb". Train mode returns ``{"loss_cls": cross-entropy}``;
eval mode the logits (N, K).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gn_det.checkpoint.formats import Checkpoint, make_meta, parse_checkpoint
from gn_det.checkpoint.inflate import INFLATE_MODES, inflate_weights
from gn_det.checkpoint.loading import resnet_weights_for
from gn_det.checkpoint.model_loading import WeightsForModel, default_weights_transform
from gn_det.config import ConfigError
from gn_det.layers.norm import NormSpec, create_conv, create_norm, parse_norm
from gn_det.modeling.backbone.resnet import RESNET_SPECS, ResNet, build_resnet, build_resnet_from_cfg
from gn_det.modeling.cfg_norm import norm_from_cfg

__all__ = ["META_ARCHITECTURE", "RESNET_PREFIX", "HEAD_PREFIX", "I3D_STEM_TEMPORAL_KERNEL", "I3D_TEMPORAL_POOL",
           "I3D_TEMPORAL_KERNELS", "i3d_temporal_kernels", "VideoHead", "VideoClassifier", "i3d_resnet",
           "build_video_model", "video_weights_transform"]


META_ARCHITECTURE = "I3D"
RESNET_PREFIX = "resnet."  # the 3D ResNet's keys: RESNET_PREFIX + torchvision name
HEAD_PREFIX = "head."
I3D_STEM_TEMPORAL_KERNEL = 5
I3D_TEMPORAL_POOL = 2
# Per stage, the temporal kernel sizes the stage's blocks cycle through (PySlowFast's "i3d" basis).
I3D_TEMPORAL_KERNELS: tuple[tuple[int, ...], ...] = ((3,), (3, 1), (3, 1), (1, 3))
INPUT_FORMATS = ("RGB", "BGR")
INPUT_MODALITIES = ("rgb", "rgb_diff")


def i3d_temporal_kernels(depth: int, basis: Sequence[Sequence[int]] = I3D_TEMPORAL_KERNELS) -> list[list[int]]:
    """The temporal kernel size of every block's first conv, per stage, for a ResNet of ``depth``.

    Block ``i`` of a stage takes ``basis[stage][i % len(basis[stage])]``: for ResNet-50
    ``[[3, 3, 3], [3, 1, 3, 1], [3, 1, 3, 1, 3, 1], [1, 3, 1]]``.

    Raises:
        ValueError: unknown depth, or a basis without one non-empty entry per stage.
    """
    if depth not in RESNET_SPECS:
        raise ValueError(f"Unsupported ResNet depth {depth}; choose one of {sorted(RESNET_SPECS)}")
    layers = RESNET_SPECS[depth][1]
    if len(basis) != len(layers) or any(len(b) == 0 for b in basis):
        raise ValueError(f"the temporal kernel basis needs one non-empty list per stage ({len(layers)}), got {basis!r}")
    return [[int(b[i % len(b)]) for i in range(n)] for b, n in zip(basis, layers)]


class VideoHead(nn.Module):
    """[1x1x1 conv + norm + ReLU] -> global average pool (T, H, W) -> dropout -> fc.

    Args:
        in_channels: channels of res5.
        num_classes: outputs of ``fc``.
        dropout: dropout rate before ``fc`` (PySlowFast's MODEL.DROPOUT_RATE).
        conv_dim: > 0 adds the 1x1x1 conv with this many channels, followed by ``norm`` (a
            Weight-Standardized conv with "+WS"; with no norm the conv has a bias). 0: PySlowFast's head.
        norm: norm name or spec of the optional conv.
    """

    def __init__(self, in_channels: int, num_classes: int, *, dropout: float = 0.5, conv_dim: int = 0,
                 norm: str | NormSpec = ""):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        spec = parse_norm(norm)
        self.conv: nn.Module | None = None
        if conv_dim > 0:
            self.conv = create_conv(in_channels, conv_dim, 1, bias=spec.name == "", dim=3, norm=spec)
            self.norm = create_norm(spec, conv_dim, 3, layer_name="head.norm")
            nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
            in_channels = conv_dim
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)
        # PySlowFast initializes the classifier with std 0.01: early logits stay near uniform.
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled feature (N, C) ``fc`` sees (before dropout)."""
        if self.conv is not None:
            x = F.relu(self.norm(self.conv(x)), inplace=True)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))


class VideoClassifier(nn.Module):
    """A 3D ResNet and a :class:`VideoHead`: loss in train mode, logits in eval mode.

    Args:
        resnet: a :class:`~gn_det.modeling.backbone.resnet.ResNet` with ``dim=3`` and no classifier.
        head: the head over its last stage.
        input_format: "RGB" or "BGR", the channel order the network's weights expect (samples are RGB).
        input_modality: "rgb" (the frames) or "rgb_diff" (differences of consecutive frames).
    """

    def __init__(self, resnet: ResNet, head: VideoHead, input_format: str = "RGB", input_modality: str = "rgb"):
        super().__init__()
        if resnet.dim != 3 or hasattr(resnet, "fc") or resnet.out_features is not None:
            raise ValueError("VideoClassifier needs a 3D ResNet body (dim=3, no num_classes, no out_features)")
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"INPUT.FORMAT must be one of {INPUT_FORMATS}, got {input_format!r}")
        self.resnet = resnet
        self.head = head
        if input_modality not in INPUT_MODALITIES:
            raise ValueError(f"MODEL.VIDEO.INPUT_MODALITY must be one of {INPUT_MODALITIES}, got {input_modality!r}")
        self.input_format = input_format
        self.input_modality = input_modality

    @property
    def num_classes(self) -> int:
        return self.head.fc.out_features

    @property
    def device(self) -> torch.device:
        return self.head.fc.weight.device

    def preprocess(self, batch: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> tuple[torch.Tensor, list[int]]:
        """``(videos (N, 3, T, H, W) on the model's device, labels)`` from a list of samples or a batch dict."""
        if isinstance(batch, Mapping):
            videos, labels = batch["video"], [int(v) for v in batch["label"]]
        elif isinstance(batch, (list, tuple)) and batch and all(isinstance(s, Mapping) for s in batch):
            shapes = {tuple(s["video"].shape) for s in batch}
            if len(shapes) > 1:
                raise ValueError(f"clips of one batch must share one shape (the loader crops them), got {sorted(shapes)}")
            videos, labels = torch.stack([s["video"] for s in batch]), [int(s["label"]) for s in batch]
        else:
            raise TypeError("VideoClassifier expects a non-empty list of samples with 'video' and 'label', or a batch "
                            f"dict from collate_video_samples; got {type(batch).__name__}")
        if videos.dim() != 5 or videos.shape[1] != 3 or videos.shape[0] == 0:
            raise ValueError(f"expected videos of shape (N, 3, T, H, W) with N > 0, got {tuple(videos.shape)}")
        if self.input_modality == "rgb_diff" and videos.shape[2] < 2:
            raise ValueError("MODEL.VIDEO.INPUT_MODALITY 'rgb_diff' needs clips of at least 2 frames (DATA.NUM_FRAMES)")
        return self.network_input(videos), labels

    def network_input(self, videos: torch.Tensor) -> torch.Tensor:
        """Normalized RGB clips (N, 3, T, H, W) -> what the ResNet reads: channel order, then the
        modality (frame differences for "rgb_diff"). Tensors only, so an exported model
        (:mod:`gn_det.export`) runs the same steps."""
        videos = videos.to(self.device, torch.float32)
        if self.input_format == "BGR":
            videos = videos.flip(1)
        if self.input_modality == "rgb_diff":
            videos = videos[:, :, 1:] - videos[:, :, :-1]
        return videos

    def features(self, videos: torch.Tensor) -> torch.Tensor:
        """The pooled feature (N, C) before dropout and ``fc``, of already preprocessed videos."""
        return self.head.features(self.resnet(videos))

    def forward(self, batch) -> dict[str, torch.Tensor] | torch.Tensor:
        videos, labels = self.preprocess(batch)
        logits = self.head(self.resnet(videos))
        if not self.training:
            return logits
        if max(labels) >= logits.shape[1] or min(labels) < 0:  # checked on the host: no device sync
            raise ValueError(f"labels {labels} do not index the {logits.shape[1]} outputs; check MODEL.NUM_CLASSES")
        return {"loss_cls": F.cross_entropy(logits, torch.tensor(labels, device=logits.device))}


def i3d_resnet(depth: int = 50, norm: str | NormSpec = "BN", *, num_classes: int = 400, dropout: float = 0.5,
               head_conv_dim: int = 0, head_norm: str | NormSpec = "", stem_temporal_kernel: int = I3D_STEM_TEMPORAL_KERNEL,
               temporal_kernels: Sequence[Sequence[int]] | None = None, temporal_pool: int = I3D_TEMPORAL_POOL,
               temporal_strides: Sequence[int] | None = None, stride_in_1x1: bool = False,
               zero_init_residual: bool = True, freeze_at: int = 0, input_format: str = "RGB",
               input_modality: str = "rgb") -> VideoClassifier:
    """Constructs an I3D video classifier: a 3D ResNet of ``depth`` with PySlowFast's I3D temporal layout.

    Args:
        depth (int): 18, 34 (basic blocks), 50, 101 or 152 (bottlenecks). Default: 50.
        norm (str or NormSpec): the ResNet's norm: "BN", "SyncBN", "FrozenBN", "GN", ... with
            optional "+WS". GN normalizes over channels-in-group x T x H x W. Default: "BN".
        num_classes (int): outputs (400 for Kinetics-400). Default: 400.
        dropout (float): before ``fc``. Default: 0.5 (PySlowFast).
        head_conv_dim (int): > 0 adds a 1x1x1 conv + ``head_norm`` + ReLU to the head. Default: 0.
        head_norm (str or NormSpec): norm of that conv. Default: "" (none).
        stem_temporal_kernel (int): temporal size of the stem conv. Default: 5 (5x7x7).
        temporal_kernels: per stage, the temporal sizes of each block's first conv; None: the I3D
            layout of the module docstring (:func:`i3d_temporal_kernels`).
        temporal_pool (int): max pool over time after res2. Default: 2 (PySlowFast's pool1).
        temporal_strides: temporal stride of each stage. Default: None (all 1).
        stride_in_1x1 (bool): spatial stride on the bottleneck's 1x1 (MSRA weights). Default: False.
        zero_init_residual (bool): last norm gamma of each block starts at 0. Default: True.
        freeze_at (int): stages to freeze (0: none). Default: 0.
        input_format (str): "RGB" or "BGR". Default: "RGB".
        input_modality (str): "rgb" or "rgb_diff" (frame differences). Default: "rgb".

    Example::

        >>> model = i3d_resnet(50, "GN", num_classes=400).eval()
        >>> model([{"video": torch.zeros(3, 32, 224, 224), "label": 0}]).shape
        torch.Size([1, 400])
    """
    kernels = i3d_temporal_kernels(depth) if temporal_kernels is None else temporal_kernels
    resnet = build_resnet(depth, norm, 3, stride_in_1x1=stride_in_1x1, zero_init_residual=zero_init_residual,
                          freeze_at=freeze_at, stem_temporal_kernel=stem_temporal_kernel, temporal_kernels=kernels,
                          temporal_strides=temporal_strides, temporal_pool=temporal_pool)
    head = VideoHead(resnet.stage_channels["layer4"], num_classes, dropout=dropout, conv_dim=head_conv_dim,
                     norm=head_norm)
    return VideoClassifier(resnet, head, input_format, input_modality)


def _temporal_kernels_from_cfg(cfg) -> list | None:
    """MODEL.VIDEO.TEMPORAL_KERNELS: [] -> the I3D layout; else per stage an int or a list per block."""
    given = list(cfg.MODEL.VIDEO.TEMPORAL_KERNELS)
    if not given:
        return i3d_temporal_kernels(int(cfg.MODEL.RESNETS.DEPTH))
    return [int(k) if isinstance(k, int) else [int(v) for v in k] for k in given]


def build_video_model(cfg) -> VideoClassifier:
    """The I3D classifier ``cfg`` describes (MODEL.RESNETS.*, MODEL.VIDEO.*, MODEL.VIDEO_HEAD.*,
    MODEL.NUM_CLASSES, MODEL.DROPOUT_RATE, MODEL.BACKBONE.FREEZE_AT, INPUT.FORMAT), randomly initialized.

    MODEL.WEIGHTS is loaded by the engine through :func:`video_weights_transform`, not here.

    Raises:
        ConfigError: MODEL.META_ARCHITECTURE is not "I3D", a bad class count, dropout or temporal
            layout (the message names the key).
    """
    m = cfg.MODEL
    if m.META_ARCHITECTURE != META_ARCHITECTURE:
        raise ConfigError(f"MODEL.META_ARCHITECTURE {m.META_ARCHITECTURE!r}: the video task builds "
                          f"{META_ARCHITECTURE!r} only (PySlowFast's MODEL.ARCH 'i3d')")
    if int(m.NUM_CLASSES) < 1:
        raise ConfigError(f"MODEL.NUM_CLASSES must be >= 1, got {m.NUM_CLASSES}")
    if not 0.0 <= float(m.DROPOUT_RATE) < 1.0:
        raise ConfigError(f"MODEL.DROPOUT_RATE must be in [0, 1), got {m.DROPOUT_RATE}")
    v = m.VIDEO
    try:
        resnet = build_resnet_from_cfg(cfg, dim=3, stem_temporal_kernel=int(v.STEM_TEMPORAL_KERNEL),
                                       temporal_kernels=_temporal_kernels_from_cfg(cfg),
                                       temporal_strides=[int(t) for t in v.TEMPORAL_STRIDES],
                                       temporal_pool=int(v.TEMPORAL_POOL))
    except ValueError as e:
        raise ConfigError(f"MODEL.VIDEO / MODEL.RESNETS: {e}") from None
    h = m.VIDEO_HEAD
    head = VideoHead(resnet.stage_channels["layer4"], int(m.NUM_CLASSES), dropout=float(m.DROPOUT_RATE),
                     conv_dim=int(h.CONV_DIM), norm=norm_from_cfg(cfg, h.NORM, "MODEL.VIDEO_HEAD.NORM"))
    try:
        return VideoClassifier(resnet, head, cfg.INPUT.FORMAT, v.INPUT_MODALITY)
    except ValueError as e:
        raise ConfigError(str(e)) from None


# ------------------------------------------------------------------------------------- weights
def _is_video_checkpoint(state: Mapping[str, Any]) -> bool:
    """A video model's own state dict (this task's checkpoints): ``head.`` keys or a 5D stem."""
    conv1 = state.get(RESNET_PREFIX + "conv1.weight")
    return any(isinstance(k, str) and k.startswith(HEAD_PREFIX) for k in state) or (
        isinstance(conv1, torch.Tensor) and conv1.dim() == 5)


def _with_fc(weights: WeightsForModel, fc: Mapping[str, torch.Tensor]) -> WeightsForModel:
    """Route a 2D classifier's ``fc.*`` to ``head.fc.*`` (the loader reports a class-count mismatch)."""
    state = dict(weights.state_dict)
    for name, value in fc.items():
        state[HEAD_PREFIX + name] = value
    unused = [k for k in weights.unused if k not in fc]
    return dataclasses.replace(weights, state_dict=state, unused=unused)


def video_weights_transform(cfg, model: VideoClassifier, raw: Any, source: str) -> WeightsForModel:
    """Map the content of a MODEL.WEIGHTS file into the video classifier (the video task's
    ``weights_transform``; the file was read once by :func:`gn_det.checkpoint.load_weights`).

    - A video checkpoint of this task (``head.`` keys, 5D convs) loads by name.
    - A gn_det classification checkpoint (``resnet.`` keys, 2D convs) is inflated
      (:func:`gn_det.checkpoint.inflate.inflate_weights`, mode MODEL.INFLATE).
    - Any 2D ResNet checkpoint the converter reads (torchvision ``.pth``, the converter's GN / GN+WS
      outputs, detectron2 ``.pkl``, Detectron/Caffe2) goes through
      :func:`~gn_det.checkpoint.loading.resnet_weights_for` (stride placement and WS checks, deeper
      ResNets refused), then is inflated.

    The 3D ResNet must be filled completely; the 2D ``fc`` goes to ``head.fc`` and, for another
    class count, is reported shape-mismatched and left at init.

    Raises:
        gn_det.checkpoint.CheckpointError: content none of these, or weights that would load wrong.
        ConfigError: MODEL.INFLATE is not one of :data:`~gn_det.checkpoint.inflate.INFLATE_MODES`.
    """
    mode = str(cfg.MODEL.INFLATE)
    if mode not in INFLATE_MODES:
        raise ConfigError(f"MODEL.INFLATE {mode!r}: choose one of {list(INFLATE_MODES)}")
    state = raw.get("model", raw) if isinstance(raw, dict) else None
    if isinstance(state, dict) and _is_video_checkpoint({k.removeprefix("module."): v for k, v in state.items()
                                                         if isinstance(k, str)}):
        weights = default_weights_transform(raw, source)
        return dataclasses.replace(weights, complete=(RESNET_PREFIX,),
                                   notes=["video checkpoint (3D): loaded by name, no inflation"])
    from gn_det.modeling.classifier import classifier_resnet_state_dict

    trained = classifier_resnet_state_dict(raw)
    if trained is not None:
        # gn_det's own ResNet, built with this option: no file metadata to check the stride against.
        norm = "BN" if any(k.endswith(".running_var") for k in trained) else "GN"
        ckpt = Checkpoint(trained, make_meta("gn_det", norm, stride_in_1x1=bool(cfg.MODEL.RESNETS.STRIDE_IN_1X1),
                                             stride_source="gn_det classification checkpoint"), path=source)
    else:
        ckpt = parse_checkpoint(raw, source)
    weights = resnet_weights_for(ckpt, model.resnet, RESNET_PREFIX, stride_in_1x1=bool(cfg.MODEL.RESNETS.STRIDE_IN_1X1),
                                 body_norm=cfg.MODEL.RESNETS.NORM)
    if trained is not None:
        weights.notes.insert(0, "gn_det classification checkpoint (resnet.* keys)")
    weights = _with_fc(weights, {k: v for k, v in ckpt.state_dict.items() if k in ("fc.weight", "fc.bias")})
    return inflate_weights(weights, model, mode)
