"""Calibrate a BN -> GN converted network against the original BN network.

Naive transfer copies each BN layer's gamma/beta into the GN layer that replaces it. That
ignores that GN normalizes with per-sample group statistics instead of BN's running
statistics, so every layer's output drifts, and the drift compounds with depth.

:func:`calibrate` fixes the affine of every GN layer so that, on a set of calibration
images, each channel's output mean and std equal those of the reference BN network (in
eval mode) at the same layer. GN's output per channel c is ``gamma_c * xhat_c + beta_c``
where ``xhat`` is the group-normalized input, so given the statistics of ``xhat_c`` over
all calibration images the matching affine is closed-form::

    gamma_c = sign_c * ref_std_c / std(xhat_c)
    beta_c  = ref_mean_c - gamma_c * mean(xhat_c)

Layers must be calibrated from the input up, because a layer's ``xhat`` depends on every
GN layer before it. One forward pass does this: a pre-hook on each GN layer computes the
statistics of its normalized input and sets its affine before the layer runs, so every
downstream layer sees the already-calibrated upstream. The statistics of ``xhat`` come
from per-sample, per-channel moments of the input (one reduction, no normalized copy).

Passes (the first two in chunks of ``batch_size``, exact statistics merged over chunks):

1. the reference network, recording each BN layer's output moments;
2. (optional, ``measure_before``) the converted network as it is, for the "before" mismatch;
3. the converted network on all calibration images as one batch, calibrating as it goes.
   Pass 3 holds one inference batch of all calibration images in memory (ResNet-50,
   64 images at 224 px: about 1 GB).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import torch
from torch import nn

from gn_det.layers.conv_norm import BATCH_NORM_TYPES, batch_norm_channels
from gn_det.utils.progress import progress_bar
from gn_det.utils.table import format_table

from .modes import eval_mode

__all__ = ["CalibrationError", "LayerCalibration", "CalibrationReport", "calibrate", "match_norm_layers",
           "measure_match"]


# A reference channel whose std is below this fraction of the layer's largest std is treated as
# constant (e.g. BN gamma = 0): the GN channel becomes constant too (gamma 0, beta = its mean).
_CONSTANT_REL_TOL = 1e-5
# A normalized GN input channel with a std below this cannot be rescaled meaningfully (it is flat
# on all calibration images); it gets gamma 0 and the reference mean rather than a huge gain.
_FLAT_ABS_TOL = 1e-4


class CalibrationError(ValueError):
    """The models or images cannot be calibrated (mismatched layers, bad input)."""


@dataclass
class LayerCalibration:
    """Per-layer result. Errors are mean absolute differences over channels between the GN
    layer's and the reference BN layer's per-channel output mean (``*_mean_err``) or std
    (``*_std_err``), divided by the layer's average reference std, so 0.1 means "off by a tenth
    of a typical channel's spread"."""

    name: str
    num_channels: int
    ref_std: float  # average over channels of the reference output std
    before_mean_err: float | None  # None when measure_before=False
    before_std_err: float | None
    after_mean_err: float
    after_std_err: float
    constant_channels: int  # reference std ~ 0: GN channel set constant
    flat_channels: int  # GN normalized input ~ constant: gain cannot be matched


@dataclass
class CalibrationReport:
    """What :func:`calibrate` did: one :class:`LayerCalibration` per GN layer in execution
    order, the norm layers it left alone (name, reason), image count and wall time."""

    layers: list[LayerCalibration] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    num_images: int = 0
    seconds: float = 0.0

    def summary(self) -> dict:
        """Mean of each per-layer error over the calibrated layers."""
        def avg(key: str) -> float | None:
            vals = [getattr(layer, key) for layer in self.layers]
            return None if not vals or any(v is None for v in vals) else sum(vals) / len(vals)

        return {"num_layers": len(self.layers), "num_skipped": len(self.skipped),
                "num_images": self.num_images, "seconds": round(self.seconds, 3),
                **{key: avg(key) for key in ("before_mean_err", "before_std_err",
                                             "after_mean_err", "after_std_err")}}

    def to_dict(self) -> dict:
        """JSON-ready form: summary, layers and skipped layers."""
        return {"summary": self.summary(), "layers": [asdict(layer) for layer in self.layers],
                "skipped": [{"name": n, "reason": r} for n, r in self.skipped]}

    def format_table(self) -> str:
        """A markdown table of the per-layer mismatch before and after calibration."""
        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.4f}"

        headers = ["layer", "C", "before mean err", "before std err", "after mean err", "after std err",
                   "const ch", "flat ch"]
        rows = [[layer.name, layer.num_channels, layer.before_mean_err, layer.before_std_err,
                 layer.after_mean_err, layer.after_std_err, layer.constant_channels, layer.flat_channels]
                for layer in self.layers]
        lines = [format_table(rows, headers, float_fmt=".4f")]
        s = self.summary()
        lines.append(f"\n{s['num_layers']} GN layers calibrated on {self.num_images} images in "
                     f"{self.seconds:.1f} s; mean errors before {fmt(s['before_mean_err'])} / "
                     f"{fmt(s['before_std_err'])}, after {fmt(s['after_mean_err'])} / "
                     f"{fmt(s['after_std_err'])} (mean / std).")
        for name, reason in self.skipped:
            lines.append(f"skipped {name}: {reason}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


def match_norm_layers(reference: nn.Module, converted: nn.Module
                      ) -> tuple[list[tuple[str, nn.Module, nn.GroupNorm]], list[tuple[str, str]]]:
    """Pair every GN layer of ``converted`` with the BN-type layer of the same name in ``reference``.

    Returns ``(pairs, skipped)``: pairs ``(name, reference_bn, converted_gn)`` in module order, and
    ``(name, reason)`` for norm layers that cannot be paired. Raises :class:`CalibrationError`
    when nothing pairs up, or when a pair disagrees on the channel count or the GN has no affine.
    """
    ref_modules = dict(reference.named_modules())
    conv_modules = dict(converted.named_modules())
    pairs, skipped = [], []
    for name, module in conv_modules.items():
        if not isinstance(module, nn.GroupNorm):
            continue
        ref = ref_modules.get(name)
        if ref is None:
            skipped.append((name, "no module of this name in the reference network"))
            continue
        if not isinstance(ref, BATCH_NORM_TYPES):
            skipped.append((name, f"reference module is {type(ref).__name__}, not a BatchNorm"))
            continue
        ref_channels = batch_norm_channels(ref)
        if ref_channels != module.num_channels:
            raise CalibrationError(f"Layer {name!r}: reference {type(ref).__name__} has {ref_channels} "
                                   f"channels but the converted GroupNorm has {module.num_channels}; "
                                   "the two networks must have the same architecture")
        if not module.affine:
            raise CalibrationError(f"Layer {name!r}: GroupNorm has affine=False, so there is no "
                                   "gamma/beta to calibrate; build it with affine=True")
        pairs.append((name, ref, module))
    for name, ref in ref_modules.items():
        if isinstance(ref, BATCH_NORM_TYPES) and not isinstance(conv_modules.get(name), nn.GroupNorm):
            found = type(conv_modules[name]).__name__ if name in conv_modules else "nothing"
            skipped.append((name, f"reference BatchNorm has no GroupNorm counterpart (found {found})"))
    if not pairs:
        n_gn = sum(isinstance(m, nn.GroupNorm) for m in conv_modules.values())
        n_bn = sum(isinstance(m, BATCH_NORM_TYPES) for m in ref_modules.values())
        examples = "; ".join(f"{n}: {r}" for n, r in skipped[:3])
        raise CalibrationError(f"No GroupNorm layer of the converted network matches a BatchNorm layer "
                               f"of the reference by module name (converted has {n_gn} GroupNorm "
                               f"layers, reference has {n_bn} BatchNorm layers"
                               + (f"; e.g. {examples}" if examples else "") + "). Pass the original BN "
                               "network and the network convert_model() made from it.")
    return pairs, skipped


class _ChannelMoments:
    """Exact per-channel mean and (biased) variance merged over chunks, in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        dims = [0] + list(range(2, x.dim()))
        var, mean = torch.var_mean(x.detach().float(), dim=dims, correction=0)
        n = x.numel() // x.shape[1]
        mean, m2 = mean.double().cpu(), var.double().cpu() * n
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean  # Chan et al.'s parallel merge: no sum-of-squares cancellation
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean, (self.m2 / self.count).clamp_min(0).sqrt()


def _normalized_channel_moments(x: torch.Tensor, num_groups: int, eps: float
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std, over samples and positions, of ``group_norm(x)`` without affine.

    Uses only per-sample, per-channel moments of ``x`` (float64 after one reduction), so no
    normalized copy of the activation is made. Exact, because every sample has the same number
    of positions per channel.
    """
    n, c = x.shape[:2]
    var_c, mean_c = torch.var_mean(x.detach().float().reshape(n, c, -1), dim=2, correction=0)
    var_c, mean_c = var_c.double().cpu(), mean_c.double().cpu()  # (N, C)
    g_mean = mean_c.reshape(n, num_groups, -1).mean(dim=2)  # (N, G)
    # law of total variance: within-channel variance plus spread of channel means (no cancellation)
    g_var = (var_c.reshape(n, num_groups, -1).mean(dim=2)
             + (mean_c.reshape(n, num_groups, -1) - g_mean[:, :, None]).square().mean(dim=2))
    inv = (g_var + eps).rsqrt().repeat_interleave(c // num_groups, dim=1)  # (N, C)
    g_mean = g_mean.repeat_interleave(c // num_groups, dim=1)
    sample_mean = (mean_c - g_mean) * inv  # mean of xhat_c within each sample
    mean = sample_mean.mean(dim=0)
    var = (var_c * inv.square()).mean(dim=0) + (sample_mean - mean).square().mean(dim=0)
    return mean, var.clamp_min(0).sqrt()


def _mismatch(mean: torch.Tensor, std: torch.Tensor, ref_mean: torch.Tensor, ref_std: torch.Tensor
              ) -> tuple[float, float]:
    scale = ref_std.mean().clamp_min(1e-12)
    return (float((mean - ref_mean).abs().mean() / scale), float((std - ref_std).abs().mean() / scale))


def _reference_sign(ref: nn.Module) -> torch.Tensor:
    """Sign of each channel's BN scale: GN's xhat grows with the input, BN's output with sign(gamma)."""
    weight = getattr(ref, "weight", None)
    if weight is None:
        return torch.ones(ref.num_features, dtype=torch.float64)
    sign = torch.sign(weight.detach().double().cpu())
    return torch.where(sign == 0, torch.ones_like(sign), sign)


def _as_batches(images: torch.Tensor | Iterable, batch_size: int) -> list[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        if images.dim() < 3:
            raise CalibrationError(f"images must be a batch (N, C, ...), got a tensor of shape "
                                   f"{tuple(images.shape)}")
        batches = list(images.split(batch_size))
    else:
        batches = []
        for i, item in enumerate(images):
            if isinstance(item, (tuple, list)) and item:  # (images, labels) from a DataLoader
                item = item[0]
            if not isinstance(item, torch.Tensor) or item.dim() < 3:
                raise CalibrationError(f"calibration batch {i} is not an image tensor (N, C, ...): "
                                       f"got {type(item).__name__}")
            batches.append(item)
    if not batches or sum(b.shape[0] for b in batches) == 0:
        raise CalibrationError("no calibration images were given")
    shapes = {tuple(b.shape[1:]) for b in batches}
    if len(shapes) > 1:
        raise CalibrationError(f"calibration batches have different image shapes {sorted(shapes)}; "
                               "resize/crop them to one size")
    return batches


def _device_of(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _record_output_moments(model: nn.Module, layers: Sequence[tuple[str, nn.Module]],
                           batches: list[torch.Tensor], desc: str, progress: bool
                           ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Run ``model`` over ``batches`` and return each layer's per-channel output (mean, std)."""
    moments = {name: _ChannelMoments() for name, _ in layers}
    calls: dict[str, int] = {}

    def make_hook(name: str):
        def hook(module, args, output):
            calls[name] = calls.get(name, 0) + 1
            if calls[name] > 1:
                raise CalibrationError(f"Layer {name!r} runs more than once per forward pass; "
                                       "calibration needs each norm layer to be called once")
            moments[name].update(output)
        return hook

    handles = [module.register_forward_hook(make_hook(name)) for name, module in layers]
    device = _device_of(model)
    try:
        for batch in progress_bar(batches, desc=desc, disable=not progress, leave=False):
            calls.clear()
            model(batch.to(device))
    finally:
        for h in handles:
            h.remove()
    missing = [name for name, m in moments.items() if m.mean is None]
    if missing:
        raise CalibrationError(f"{len(missing)} norm layer(s) never ran in the forward pass, e.g. "
                               f"{missing[:3]}; calibrate only models whose norm layers all run")
    return {name: m.mean_std() for name, m in moments.items()}


@torch.no_grad()
def calibrate(reference: nn.Module, converted: nn.Module, images: torch.Tensor | Iterable, *,
              batch_size: int = 16, measure_before: bool = True, progress: bool = True
              ) -> CalibrationReport:
    """Set every GN layer's gamma/beta so its outputs match the BN reference, layer by layer.

    For each GroupNorm in ``converted`` whose module name names a BatchNorm-type layer in
    ``reference`` (BatchNorm1d/2d/3d, SyncBatchNorm, FrozenBN), choose gamma/beta so that each
    channel's output mean and std over all calibration images (and positions) equal the
    reference layer's, with the reference in eval mode. Layers are set in execution order while
    the calibration batch flows through ``converted``, so each sees calibrated upstream layers.
    A channel whose reference std is ~0 is made constant at the reference mean.

    Args:
        reference: the original BN network (not modified; run in eval mode).
        converted: the network made from it, e.g. by
            :func:`gn_det.convert.surgery.convert_model`; modified in place.
        images: an image batch ``(N, C, H, W)`` (or ``(N, C, T, H, W)``), or an iterable of such
            batches / ``(images, labels)`` tuples, already normalized as the networks expect.
        batch_size: chunk size for the passes that only record statistics (statistics are exact
            over all images regardless).
        measure_before: also run ``converted`` before calibrating to report the "before" mismatch
            (one extra forward pass).
        progress: show tqdm progress bars.

    Returns:
        A :class:`CalibrationReport` with per-layer mismatch before and after.

    Raises:
        CalibrationError: no GN layer matches a BN layer by name, channel counts differ, a norm
            layer runs twice per forward, or the images are not image tensors.
    """
    start = time.perf_counter()
    pairs, skipped = match_norm_layers(reference, converted)
    batches = _as_batches(images, batch_size)
    num_images = sum(b.shape[0] for b in batches)
    with eval_mode(reference, converted):
        ref_stats = _record_output_moments(reference, [(n, r) for n, r, _ in pairs], batches,
                                           "calibrate: reference", progress)
        before = (_record_output_moments(converted, [(n, g) for n, _, g in pairs], batches,
                                         "calibrate: before", progress) if measure_before else {})
        results: dict[str, LayerCalibration] = {}
        bar = progress_bar(total=len(pairs), desc="calibrate: GN layers", disable=not progress, leave=False)

        def make_hook(name: str, ref: nn.Module):
            def hook(gn: nn.GroupNorm, args):
                if name in results:
                    raise CalibrationError(f"Layer {name!r} runs more than once per forward pass; "
                                           "calibration needs each norm layer to be called once")
                results[name] = _calibrate_layer(name, gn, ref, args[0], ref_stats[name],
                                                 before.get(name))
                bar.update(1)
            return hook

        handles = [gn.register_forward_pre_hook(make_hook(n, r)) for n, r, gn in pairs]
        try:
            device = _device_of(converted)
            converted(torch.cat([b.to(device) for b in batches]))
        finally:
            for h in handles:
                h.remove()
            bar.close()
    not_run = [n for n, _, _ in pairs if n not in results]
    if not_run:  # cannot happen when the reference pass saw them all, unless the models differ
        raise CalibrationError(f"GroupNorm layer(s) {not_run[:3]} did not run in the converted network")
    return CalibrationReport(layers=list(results.values()), skipped=skipped, num_images=num_images,
                             seconds=time.perf_counter() - start)


@torch.no_grad()
def measure_match(reference: nn.Module, converted: nn.Module, images: torch.Tensor | Iterable, *,
                  batch_size: int = 16) -> dict[str, tuple[float, float]]:
    """Measure, by running both networks, how far each GN layer's per-channel output mean and std are
    from the BN reference layer's on ``images`` (both in eval mode, in their own dtype).

    :func:`calibrate` reports the mismatch its closed form predicts (float64 arithmetic on the
    input's moments, ~1e-17); this runs the calibrated network itself, so float32 rounding shows.

    Returns:
        {layer name: (mean error, std error)} in the units of :class:`LayerCalibration`
        (mean absolute difference over channels / the layer's average reference std).
    """
    pairs, _ = match_norm_layers(reference, converted)
    batches = _as_batches(images, batch_size)
    with eval_mode(reference, converted):
        ref = _record_output_moments(reference, [(n, r) for n, r, _ in pairs], batches, "reference", False)
        got = _record_output_moments(converted, [(n, g) for n, _, g in pairs], batches, "converted", False)
    return {name: _mismatch(*got[name], *ref[name]) for name, _, _ in pairs}


def _calibrate_layer(name: str, gn: nn.GroupNorm, ref: nn.Module, x: torch.Tensor,
                     ref_stats: tuple[torch.Tensor, torch.Tensor],
                     before: tuple[torch.Tensor, torch.Tensor] | None) -> LayerCalibration:
    """Solve and set one GN layer's affine from its input ``x``; return its mismatch figures."""
    hat_mean, hat_std = _normalized_channel_moments(x, gn.num_groups, gn.eps)
    ref_mean, ref_std = ref_stats
    constant = ref_std <= _CONSTANT_REL_TOL * ref_std.max()
    flat = (hat_std < _FLAT_ABS_TOL) & ~constant
    gamma = _reference_sign(ref) * ref_std / hat_std.clamp_min(_FLAT_ABS_TOL)
    gamma = torch.where(constant | flat, torch.zeros_like(gamma), gamma)
    beta = ref_mean - gamma * hat_mean
    gn.weight.copy_(gamma.to(gn.weight))
    gn.bias.copy_(beta.to(gn.bias))
    # The output statistics follow exactly from the input's: mean = g*m + b, std = |g|*s.
    after = _mismatch(gamma * hat_mean + beta, gamma.abs() * hat_std, ref_mean, ref_std)
    before_err = _mismatch(*before, ref_mean, ref_std) if before is not None else (None, None)
    return LayerCalibration(name=name, num_channels=gn.num_channels, ref_std=float(ref_std.mean()),
                            before_mean_err=before_err[0], before_std_err=before_err[1],
                            after_mean_err=after[0], after_std_err=after[1],
                            constant_channels=int(constant.sum()), flat_channels=int(flat.sum()))
