"""Inflate 2D ResNet weights into a 3D (I3D) model: every 2D conv kernel gains a temporal axis.

Input: 2D tensors already in the 3D model's state-dict names (the video task's MODEL.WEIGHTS
transform renames them, see :func:`gn_det.modeling.video_resnet.video_weights_transform`). A 4D
conv weight whose model tensor is 5D with the same (out, in, kh, kw) is inflated to the model's
temporal size T; every other tensor of matching shape (norm gamma/beta, BN statistics, fc) is
copied; tensors of other shapes are passed on unchanged, so the one loading path reports them
(an ``fc`` with another class count is shape-mismatched and left at init).

Modes (MODEL.INFLATE):

``"mean"`` (default, I3D / PySlowFast / mmaction2): ``w3d = w2d.unsqueeze(2).repeat(1, 1, T, 1, 1) / T``.
    On a clip of identical frames the 3D conv sums T equal taps, so it computes the 2D conv.
``"center"``: ``w2d`` at the centre tap ``T // 2``, zeros elsewhere: the 3D conv starts as the 2D
    conv applied frame by frame.

Why "identical frames give the 2D features": with identical frames every feature map is constant
in time, so a conv of either mode computes the 2D conv, norms compute what they compute in 2D
(GN's mean/variance over C/G x T x H x W equal those over C/G x H x W; BN in eval mode is per
position), the (1, 3, 3) max pool and the temporal max pool keep the constant, and the global
average over T, H, W is the 2D average over H, W. One caveat: convs pad time with zeros, so at the
first and last time steps a mean-inflated kernel sees the zero padding and sums fewer than T
frames. With BN (eval) that only changes positions within the temporal receptive field of the
clip's ends; GN's statistics pool over T, so those positions shift every output a little. Centre
inflation has no such effect (its off-centre taps are zero). The exactness tests therefore pad time
by replicating the edge frames (a test-only change; the model pads with zeros, as PySlowFast does).

Weight-Standardized convs (``+WS``): WS re-standardizes the 3D kernel over (in, kt, kh, kw) on every
forward, which undoes the ``1 / T`` of mean inflation, and the authors' unbiased std changes with the
element count. So a WS kernel is inflated as ``w3d[:, :, k] = m + alpha * p_k * (w2d - m)`` with
``m`` its per-output-channel mean, ``p`` the mode's temporal pattern (all ones for "mean", one-hot
at ``T // 2`` for "center") and ``alpha`` chosen so that ``w3d``'s per-channel std under the conv's
WS estimator equals ``w2d``'s: ``alpha = sqrt((n T - c) / (sum(p^2) (n - c)))``, ``n`` = in x kh x kw,
``c`` = 1 for the unbiased estimator, 0 otherwise. Then the standardized 3D kernel is exactly
``alpha * p_k * standardize(w2d)`` (eps included), and on identical frames the conv computes the 2D
WS conv times ``s = alpha * sum(p)`` (T for "mean" with a biased estimator), the same factor for every
channel. A following GN removes it except through its eps: ``GN(s z)`` uses ``eps / s^2`` where 2D
used ``eps``, a relative change of at most ``eps / (2 var)`` of a group's variance ``var`` (the
tests measure 2e-6 on the pooled features of a random-weight ResNet-50 in float64, and below 1e-11
with eps 0). With BN after a WS conv the running mean and variance are scaled by ``s`` and ``s^2``
(same eps caveat).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from ..layers.ws_conv import WSConv3d, get_ws_config
from .model_loading import WeightsForModel

__all__ = ["INFLATE_MODES", "InflationReport", "temporal_pattern", "inflate_conv_weight", "inflate_state_dict",
           "inflate_weights"]

INFLATE_MODES = ("mean", "center")


@dataclass
class InflationReport:
    """What :func:`inflate_state_dict` did, key by key (the model's names).

    Attributes:
        mode: "mean" or "center".
        inflated: conv weights made 3D.
        ws_inflated: those among them feeding a WS conv (inflated WS-aware).
        temporal_sizes: temporal kernel size -> number of convs inflated to it.
        copied: tensors passed on unchanged with the model's shape (norms, BN statistics, fc).
        rescaled_stats: BN running statistics rescaled after a WS conv.
        passed_on: tensors whose shape fits no model tensor, or keys the model does not have (the
            loading path reports them as shape-mismatched or unexpected).
        output_scale: per inflated WS conv, the factor ``s`` of its output on identical frames.
    """

    mode: str
    inflated: list[str] = field(default_factory=list)
    ws_inflated: list[str] = field(default_factory=list)
    temporal_sizes: Counter = field(default_factory=Counter)
    copied: list[str] = field(default_factory=list)
    rescaled_stats: list[str] = field(default_factory=list)
    passed_on: list[str] = field(default_factory=list)
    output_scale: dict[str, float] = field(default_factory=dict)

    def notes(self) -> list[str]:
        """One line per kind of change, for the loading report."""
        how = {"mean": "2D kernel repeated over T and divided by T",
               "center": "2D kernel at the centre time step, zeros elsewhere"}[self.mode]
        sizes = ", ".join(f"{n} x T={t}" for t, n in sorted(self.temporal_sizes.items(), reverse=True))
        lines = [f"inflated {len(self.inflated)} conv weights 2D -> 3D ({self.mode}: {how}; {sizes})",
                 f"copied {len(self.copied)} tensors unchanged (norm parameters and statistics, fc)"]
        if self.ws_inflated:
            lines.append(f"{len(self.ws_inflated)} of them feed Weight-Standardized convs: inflated so that WS gives "
                         f"the 2D standardized kernel (see gn_det.checkpoint.inflate)")
        if self.rescaled_stats:
            lines.append(f"rescaled {len(self.rescaled_stats)} BN running statistics after WS convs")
        if self.passed_on:
            lines.append(f"{len(self.passed_on)} tensors fit no model tensor as they are (reported below): "
                         f"{', '.join(self.passed_on[:5])}{' ...' if len(self.passed_on) > 5 else ''}")
        return lines


def temporal_pattern(t: int, mode: str) -> torch.Tensor:
    """The weights ``p`` of the time steps: ones ("mean") or one-hot at ``t // 2`` ("center")."""
    if mode not in INFLATE_MODES:
        raise ValueError(f"unknown inflation mode {mode!r}; choose one of {list(INFLATE_MODES)}")
    if t < 1:
        raise ValueError(f"temporal size must be >= 1, got {t}")
    if mode == "mean":
        return torch.ones(t, dtype=torch.float64)
    p = torch.zeros(t, dtype=torch.float64)
    p[t // 2] = 1.0
    return p


def inflate_conv_weight(weight: torch.Tensor, t: int, mode: str = "mean", ws_mode: str | None = None
                        ) -> tuple[torch.Tensor, float]:
    """Inflate a 2D conv kernel (out, in, kh, kw) to (out, in, t, kh, kw).

    Args:
        weight: the 2D kernel.
        t: temporal size of the 3D kernel.
        mode: "mean" or "center" (module docstring).
        ws_mode: the 3D conv's WS convention ("authors", "paper", "timm") when it is
            Weight-Standardized, else None.

    Returns:
        ``(w3d, s)``: the 3D kernel (dtype of ``weight``) and the factor by which the 3D conv's
        output on identical frames exceeds the 2D conv's (1 without WS).
    """
    if weight.dim() != 4:
        raise ValueError(f"expected a 2D conv kernel (out, in, kh, kw), got shape {tuple(weight.shape)}")
    p = temporal_pattern(t, mode)
    if ws_mode is None:
        w2d = weight.detach()
        if mode == "mean":
            return w2d.unsqueeze(2).repeat(1, 1, t, 1, 1) / t, 1.0
        w3d = w2d.new_zeros(w2d.shape[:2] + (t,) + w2d.shape[2:])
        w3d[:, :, t // 2] = w2d
        return w3d, 1.0
    p_sum, p_sq = float(p.sum()), float((p ** 2).sum())  # on the host: no device sync
    w = weight.detach().to(torch.float64)
    correction = 1 if get_ws_config(ws_mode).unbiased else 0
    n = w[0].numel()
    # Keep each channel's std (under the conv's own estimator) equal to the 2D one: WS then
    # divides by the same number, eps included.
    alpha = math.sqrt((n * t - correction) / (p_sq * (n - correction))) if n > correction else 1.0
    mean = w.mean(dim=(1, 2, 3), keepdim=True)
    w3d = mean.unsqueeze(2) + alpha * p.to(w.device).view(1, 1, t, 1, 1) * (w - mean).unsqueeze(2)
    return w3d.to(weight.dtype), alpha * p_sum


def _following_norm(conv_weight_key: str) -> str | None:
    """The norm module a ResNet conv feeds: ``...convK.weight -> ...bnK``, ``downsample.0 -> .1``,
    ``head.conv -> head.norm``."""
    module = conv_weight_key.rsplit(".", 1)[0]
    parent, _, leaf = module.rpartition(".")
    prefix = f"{parent}." if parent else ""
    if leaf.startswith("conv") and leaf[4:].isdigit():
        return f"{prefix}bn{leaf[4:]}"
    if leaf == "0" and parent.endswith("downsample"):
        return f"{parent}.1"
    if leaf == "conv":
        return f"{prefix}norm"
    return None


def inflate_state_dict(state: Mapping[str, torch.Tensor], model: nn.Module, mode: str = "mean"
                       ) -> tuple[dict[str, torch.Tensor], InflationReport]:
    """Inflate the 2D tensors of ``state`` (already in ``model``'s names) to fit the 3D ``model``.

    Returns:
        The new state dict (same keys) and the :class:`InflationReport`.
    """
    temporal_pattern(1, mode)  # checks the mode
    own = model.state_dict()
    ws = {f"{name}.weight": m.ws_mode for name, m in model.named_modules() if isinstance(m, WSConv3d)}
    report = InflationReport(mode)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = own.get(key)
        if (target is not None and value.dim() == 4 and target.dim() == 5
                and value.shape == target.shape[:2] + target.shape[3:]):
            t = int(target.shape[2])
            out[key], scale = inflate_conv_weight(value, t, mode, ws.get(key))
            report.inflated.append(key)
            report.temporal_sizes[t] += 1
            if key in ws:
                report.ws_inflated.append(key)
                report.output_scale[key] = scale
        else:
            out[key] = value
            (report.copied if target is not None and target.shape == value.shape else report.passed_on).append(key)
    # A BN after a WS conv sees its input scaled by s on identical frames: scale its statistics too.
    for key, scale in report.output_scale.items():
        norm = _following_norm(key)
        for stat, power in (("running_mean", 1), ("running_var", 2)):
            name = f"{norm}.{stat}" if norm else None
            if name in out and name in own and out[name].shape == own[name].shape and scale != 1.0:
                out[name] = out[name] * scale ** power
                report.rescaled_stats.append(name)
    return out, report


def inflate_weights(weights: WeightsForModel, model: nn.Module, mode: str = "mean") -> WeightsForModel:
    """:func:`inflate_state_dict` on a transform's result, its notes extended with the report."""
    state, report = inflate_state_dict(weights.state_dict, model, mode)
    return dataclasses.replace(weights, state_dict=state, notes=list(weights.notes) + report.notes())
