"""Module surgery: turn the BatchNorm layers of any ``nn.Module`` into GN (or LN, IN, ...) and, for
"+WS" targets, the convs that feed norm layers into Weight-Standardized convs.

Which layers are norms to replace: ``nn.BatchNorm1d/2d/3d``, ``nn.SyncBatchNorm``,
``torchvision.ops.FrozenBatchNorm2d`` and gn_det's :class:`~gn_det.layers.FrozenBatchNorm`. New
layers always come from the norm factory (:func:`gn_det.layers.create_norm`); GN's group count per
layer follows the spec's ``group_policy`` (strict, divisor, channels_per_group; see
:mod:`gn_det.layers.norm`). Under the strict policy every layer whose channels the group count does
not divide is listed in one error, before anything is modified.

BatchNorm over flat features ``(N, C)`` (``BatchNorm1d`` after a Linear): a GN/LN/IN there would
normalize each sample across its features, which is a different function (it squashes the
features). The converter's deliberate choice (``flat_norm="frozen"``, the default) is gn_det's
FrozenBatchNorm with the BN's running statistics and affine: exactly BN's inference function and
batch-independent; ``flat_norm="refuse"`` raises instead. A layer counts as flat when its traced
input is 2-D, or, without a trace, when it is a BatchNorm1d not fed by a conv.

Spatial dims of the new layer (it matters only when the target is "BN"): from the class for
BatchNorm{1,2,3}d and torchvision's FrozenBatchNorm2d; for the dim-agnostic classes (SyncBN, gn_det's
FrozenBN) from the traced input when ``example_input`` is given, else from the conv feeding the norm,
else 2.

Frozen layers stay frozen: a new norm's gamma/beta get the ``requires_grad`` of the old layer's
weight/bias; for a parameter-free old layer (FrozenBN) they follow the conv feeding it (torchvision's
detection backbones freeze the stem and first stage, convs included). WS convs keep their conv's flags.

Which convs feed a norm ("conv -> norm edges", used for "+WS"; a norm may be fed by several convs
when it is called more than once):

- with ``example_input``: one forward pass (eval mode, no grad) with hooks; a conv feeds a norm when
  the very tensor the conv returned is the norm's input. Exact for any control flow that runs.
  Norms that do not run in eval mode (GoogLeNet's and Inception v3's auxiliary heads run only in
  training) are paired by the module structure below and listed in the report.
- without it, a name/order heuristic: (1) a child followed by a norm child in the same parent,
  where the child is a conv or a ``Sequential`` whose last layer is (recursively) a conv
  (``Sequential(conv, norm)``, torchvision's ``conv1, bn1``, R(2+1)D's ``Conv2Plus1D`` then BN);
  (2) siblings ``convK`` / ``bnK`` and ``downsample.0`` / ``downsample.1``.
- in both cases, detectron2-style convs that own their norm as a ``.norm`` child (they call it inside
  their own forward, which hooks cannot see).

Every conv feeding a norm layer (replaced or already GN/LN) becomes ``WSConv2d``/``WSConv3d`` when
it computes a plain conv (``nn.Conv2d``/``nn.Conv3d`` or a subclass that only changes construction,
such as torchvision's ``Conv3DSimple``); every conv left alone is reported with the reason (1-D or
transposed conv, a subclass with its own forward, one weight per output channel, not feeding a
norm, not run in the trace).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d as TVFrozenBatchNorm2d

from ..layers.conv_norm import (BATCH_NORM_TYPES, NORM_TYPES, batch_norm_channels, is_norm, to_ws_conv,
                                ws_counterpart)
from ..layers.norm import NormSpec, create_norm, group_count, parse_norm
from ..layers.ws_conv import WSConv2d, WSConv3d
from .modes import eval_mode
from .report import ConversionReport, LeftAlone, ReplacedNorm

__all__ = ["convert_model", "BATCH_NORM_TYPES", "ConvNormEdges", "find_conv_norm_edges", "FLAT_NORM_CHOICES"]

_OTHER_NORMS = tuple(t for t in NORM_TYPES if t not in BATCH_NORM_TYPES)
_CLASS_DIMS = ((nn.BatchNorm1d, 1), (nn.BatchNorm2d, 2), (nn.BatchNorm3d, 3), (TVFrozenBatchNorm2d, 2))
_PER_SAMPLE_TARGETS = ("GN", "LN", "IN")  # targets that normalize within a sample
FLAT_NORM_CHOICES = ("frozen", "refuse")
_NOT_FEEDING = "does not feed a norm layer"
_NOT_RUN = ("did not run in the traced forward pass, and no norm follows it in the module structure "
            "(a branch the example input does not reach)")


@dataclass
class ConvNormEdges:
    """Which conv feeds which norm (see the module docstring).

    Attributes:
        feeders: {norm name: names of the convs whose output it normalizes}, norms with a feeder only.
        dims: {norm name: spatial dims of its traced input} (0: flat ``(N, C)``); empty without a trace.
        method: "trace" or "names".
        not_run: modules (norms and convs) that did not run in the traced pass; empty without one.
        by_structure: norms that did not run in the trace and were paired by the module structure.
    """

    feeders: dict[str, list[str]] = field(default_factory=dict)
    dims: dict[str, int] = field(default_factory=dict)
    method: str = "names"
    not_run: set[str] = field(default_factory=set)
    by_structure: list[str] = field(default_factory=list)

    def feeding_convs(self) -> set[str]:
        """Names of all convs that feed some norm."""
        return {c for convs in self.feeders.values() for c in convs}


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd)


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def _add_edge(edges: dict[str, list[str]], norm: str, conv: str) -> None:
    convs = edges.setdefault(norm, [])
    if conv not in convs:
        convs.append(conv)


def _owned_norm_edges(modules: dict[str, nn.Module]) -> dict[str, str]:
    """detectron2-style convs holding their norm as ``.norm``: {norm name: conv name}."""
    return {_join(name, "norm"): name for name, m in modules.items()
            if _is_conv(m) and is_norm(getattr(m, "norm", None) or nn.Identity())}


def _output_conv(module: nn.Module, name: str) -> str | None:
    """The conv whose output is ``module``'s output: itself, or a Sequential's last layer's (recursively)."""
    if _is_conv(module):
        return name
    if isinstance(module, nn.Sequential) and len(module):
        last_name, last = list(module.named_children())[-1]
        return _output_conv(last, _join(name, last_name))
    return None


def _heuristic_edges(modules: dict[str, nn.Module]) -> dict[str, list[str]]:
    edges: dict[str, list[str]] = {}
    for parent_name, parent in modules.items():
        children = list(parent.named_children())
        for (a_name, a), (b_name, b) in zip(children, children[1:]):
            conv = _output_conv(a, _join(parent_name, a_name)) if is_norm(b) else None
            if conv is not None:
                _add_edge(edges, _join(parent_name, b_name), conv)
        names = dict(children)
        for child_name, child in children:
            if not is_norm(child):
                continue
            partner = None
            if child_name.startswith("bn") and child_name[2:].isdigit():
                partner = "conv" + child_name[2:]
            elif child_name == "1" and parent_name.endswith("downsample"):
                partner = "0"
            if partner is not None and _is_conv(names.get(partner, nn.Identity())):
                edges.setdefault(_join(parent_name, child_name), [_join(parent_name, partner)])
    return edges


def _traced_edges(model: nn.Module, modules: dict[str, nn.Module], example_input) -> ConvNormEdges:
    """Run ``example_input`` once and record which conv output each norm normalizes."""
    conv_outputs: dict[int, tuple[str, torch.Tensor]] = {}  # keeps outputs alive so ids stay unique
    found = ConvNormEdges(method="trace")
    ran: set[str] = set()

    def conv_hook(name):
        def hook(module, args, output):
            ran.add(name)
            if isinstance(output, torch.Tensor):
                conv_outputs[id(output)] = (name, output)
        return hook

    def norm_hook(name):
        def hook(module, args):
            ran.add(name)
            x = args[0] if args else None
            if isinstance(x, torch.Tensor):
                found.dims.setdefault(name, x.dim() - 2)
                hit = conv_outputs.get(id(x))
                if hit is not None and hit[1] is x:
                    _add_edge(found.feeders, name, hit[0])
        return hook

    handles = []
    for name, m in modules.items():
        if _is_conv(m):
            handles.append(m.register_forward_hook(conv_hook(name)))
        elif is_norm(m):
            handles.append(m.register_forward_pre_hook(norm_hook(name)))
    try:
        with eval_mode(model), torch.no_grad():  # never update BN statistics while tracing
            if isinstance(example_input, (tuple, list)):
                model(*example_input)
            else:
                model(example_input)
    except Exception as e:  # the user's model and input: say which step failed
        raise ValueError(f"convert_model: the forward pass on example_input failed "
                         f"({type(e).__name__}: {e}); pass an input the model accepts, or "
                         f"example_input=None to find conv->norm pairs by module names") from e
    finally:
        for h in handles:
            h.remove()
    found.not_run = {n for n, m in modules.items() if (_is_conv(m) or is_norm(m)) and n not in ran}
    return found


def find_conv_norm_edges(model: nn.Module, example_input=None) -> ConvNormEdges:
    """Find the convs feeding each norm layer (see the module docstring).

    Args:
        model: any module.
        example_input: an input (or tuple of inputs) for one traced forward pass in eval mode; None
            uses the module-structure heuristic alone.
    """
    modules = dict(model.named_modules())
    structural = _heuristic_edges(modules)
    if example_input is None:
        edges = ConvNormEdges(feeders=structural, method="names")
    else:
        edges = _traced_edges(model, modules, example_input)
        for norm_name in sorted(edges.not_run):
            if norm_name in structural:
                edges.feeders[norm_name] = list(structural[norm_name])
                edges.by_structure.append(norm_name)
    for norm_name, conv_name in _owned_norm_edges(modules).items():
        edges.feeders.setdefault(norm_name, [conv_name])
    return edges


def _norm_dim(name: str, norm: nn.Module, traced: dict[str, int], feeder: nn.Module | None) -> int:
    for cls, dim in _CLASS_DIMS:
        if isinstance(norm, cls):
            return dim
    if name in traced and traced[name] in (1, 2, 3):
        return traced[name]
    if feeder is not None:
        return len(feeder.kernel_size)
    return 2


def _is_flat(name: str, norm: nn.Module, edges: ConvNormEdges) -> bool:
    """True when the norm normalizes flat ``(N, C)`` features (traced 2-D input, or untraced
    BatchNorm1d that no conv feeds)."""
    if name in edges.dims:
        return edges.dims[name] == 0
    return isinstance(norm, nn.BatchNorm1d) and name not in edges.feeders


def _set_module(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at ``name`` under ``root``; returns the (possibly new) root."""
    if not name:
        return new
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)
    return root


def _count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _float_like(module: nn.Module) -> dict:
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return {"device": t.device, "dtype": t.dtype}
    return {}


def _trainable(old: nn.Module, feeders: list[nn.Module]) -> dict[str, bool]:
    """requires_grad for the new layer's weight/bias: the old layer's own, else its feeding convs'."""
    flags = {}
    for key in ("weight", "bias"):
        param = old._parameters.get(key)
        if param is not None:
            flags[key] = param.requires_grad
        elif feeders:
            flags[key] = any(conv.weight.requires_grad for conv in feeders)
    return flags


def _build_norm(spec: NormSpec, name: str, old: nn.Module, dim: int, transfer: bool,
                feeders: list[nn.Module]) -> tuple[nn.Module, list[str], list[str]]:
    """The replacement for ``old``; returns (module, transferred keys, dropped keys)."""
    # a FrozenBN target keeps the old layer's eps: BN's inference function, exactly
    eps = {"eps": getattr(old, "eps", spec.eps)} if spec.name == "FrozenBN" else {}
    new = create_norm(spec, batch_norm_channels(old), dim=dim, layer_name=name, **eps).to(**_float_like(old))
    new.train(old.training)
    old_state, new_state = old.state_dict(), new.state_dict()
    transferred = []
    if transfer:
        with torch.no_grad():
            for key, value in new_state.items():
                if key in old_state and old_state[key].shape == value.shape:
                    value.copy_(old_state[key])
                    transferred.append(key)
    for key, flag in _trainable(old, feeders).items():
        if new._parameters.get(key) is not None:
            new._parameters[key].requires_grad_(flag)
    dropped = [_join(name, k) for k in old_state if k not in new_state]
    return new, transferred, dropped


def _ws_refusal(conv: nn.Module) -> str | None:
    if isinstance(conv, (WSConv2d, WSConv3d)):
        return "already Weight-Standardized"
    if ws_counterpart(conv) is None:
        if not isinstance(conv, (nn.Conv2d, nn.Conv3d)):
            what = f"a {type(conv).__name__} (WS exists for Conv2d/Conv3d only)"
        elif next(conv.children(), None) is not None:
            what = "a conv subclass with child modules"
        else:
            what = "a conv subclass with its own forward"
        return f"feeds a norm but is {what}; no WS counterpart, swap it by hand"
    if conv.weight[0].numel() == 1:
        return "feeds a norm but has one weight per output channel: standardizing it would zero it"
    return None


def _plan_norm(spec: NormSpec, name: str, m: nn.Module, edges: ConvNormEdges, flat_norm: str
               ) -> tuple[NormSpec, str]:
    """The spec to build for norm ``m`` and a note for the report (flat BN -> FrozenBN)."""
    if spec.name in _PER_SAMPLE_TARGETS and _is_flat(name, m, edges):
        if flat_norm == "refuse":
            raise ValueError(f"layer {name!r} ({type(m).__name__}) normalizes flat (N, C) features: "
                             f"{spec.name} there would normalize each sample across its features; pass "
                             f"flat_norm='frozen' to freeze it as BN's inference affine instead")
        if not getattr(m, "track_running_stats", True):
            raise ValueError(f"layer {name!r} ({type(m).__name__}) normalizes flat (N, C) features and has "
                             f"no running statistics to freeze; replace it by hand")
        return parse_norm("FrozenBN"), ("flat (N, C) features: frozen as BN's inference affine (GN/LN here "
                                         "would normalize each sample across its features)")
    return spec, ""


def _group_errors(spec: NormSpec, sizes: list[tuple[str, int]]) -> str | None:
    """One message naming every layer whose channels the spec cannot split (strict policy)."""
    bad = []
    for name, channels in sizes:
        try:
            group_count(spec, channels, name)
        except ValueError:
            bad.append(f"{name or '<root>'!r} ({channels} channels)")
    if not bad:
        return None
    split = (f"{spec.channels_per_group} channels per group" if spec.channels_per_group
             else f"{spec.num_groups} groups")
    return (f"GroupNorm with {split} (strict group policy) does not divide the channels of {len(bad)} "
            f"layer(s): {', '.join(bad)}; use group policy 'divisor' (the largest count <= {spec.num_groups} "
            f"dividing C), 'channels_per_group' with a group size, or another group count; with gn-det-convert: "
            f"`--group-policy divisor`, `--group-policy channels_per_group --channels-per-group 16` or "
            f"`--num-groups N`")


def convert_model(model: nn.Module, norm: str | NormSpec = "GN", *, example_input=None,
                  transfer_weights: bool = True, flat_norm: str = "frozen") -> tuple[nn.Module, ConversionReport]:
    """Replace every BatchNorm-family layer of ``model`` by ``norm``; with "+WS", also make every conv
    that feeds a norm layer Weight-Standardized.

    Works in place on the module tree; the model is also returned (a new object only when ``model``
    itself is a norm layer).

    Args:
        model: any module.
        norm: the target, e.g. "GN", "GN+WS", "LN", or a :class:`~gn_det.layers.NormSpec`
            (carries ``num_groups`` / ``channels_per_group`` / ``group_policy`` / ``eps`` / ``ws_mode``).
        example_input: an input (or tuple of inputs) for one traced forward pass that finds which
            conv feeds which norm exactly; without it a name/order heuristic is used.
        transfer_weights: copy BN gamma/beta (FrozenBN weight/bias) into the new layer's
            gamma/beta; running statistics are dropped and listed in the report.
        flat_norm: what to do with BN over flat ``(N, C)`` features when the target is GN/LN/IN:
            "frozen" (BN's inference affine as FrozenBatchNorm; see the module docstring) or "refuse".

    Returns:
        (model, :class:`~gn_det.convert.report.ConversionReport`).

    Raises:
        ValueError: under the strict group policy, a group count that does not divide some layers'
            channels (every such layer is named); a refused flat BN; an unknown norm name; or a
            failing forward pass on ``example_input``. Nothing is modified.
    """
    spec = parse_norm(norm)
    if flat_norm not in FLAT_NORM_CHOICES:
        raise ValueError(f"flat_norm must be one of {FLAT_NORM_CHOICES}, got {flat_norm!r}")
    modules = dict(model.named_modules())
    edges = find_conv_norm_edges(model, example_input)
    report = ConversionReport(norm=str(spec), edge_method=edges.method, group_policy=spec.group_policy,
                              num_groups=spec.num_groups, channels_per_group=spec.channels_per_group,
                              norms_by_structure=list(edges.by_structure), params_before=_count_params(model))

    todo = []  # (name, module, spec to build, note)
    for name, m in modules.items():
        if isinstance(m, BATCH_NORM_TYPES):
            if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params():
                report.left_alone.append(LeftAlone(name, type(m).__name__, "uninitialized lazy module"))
                continue
            todo.append((name, m, *_plan_norm(spec, name, m, edges, flat_norm)))
        elif isinstance(m, _OTHER_NORMS):
            report.left_alone.append(LeftAlone(name, type(m).__name__, "already a batch-independent norm"))
    problem = spec.name == "GN" and _group_errors(
        spec, [(n, batch_norm_channels(m)) for n, m, layer_spec, _ in todo if layer_spec is spec])
    if problem:
        raise ValueError(problem)

    plans = []  # built before any change, so a refusal above leaves the model untouched
    for name, m, layer_spec, note in todo:
        feeders = [modules[c] for c in edges.feeders.get(name, [])]
        dim = _norm_dim(name, m, edges.dims, feeders[0] if feeders else None)
        new, transferred, dropped = _build_norm(layer_spec, name, m, dim, transfer_weights, feeders)
        plans.append((name, new))
        groups = new.num_groups if isinstance(new, nn.GroupNorm) else None
        report.replaced.append(ReplacedNorm(name, type(m).__name__, type(new).__name__,
                                            batch_norm_channels(m), groups, transferred, note))
        report.dropped_keys += dropped

    ws_plans = []
    if spec.ws:
        feeding = edges.feeding_convs()
        for name, m in modules.items():
            if not _is_conv(m):
                continue
            if name in feeding:
                refusal = _ws_refusal(m)
            else:
                refusal = _NOT_RUN if name in edges.not_run else _NOT_FEEDING
            if refusal is None:
                ws_plans.append((name, to_ws_conv(m, spec.ws_mode)))
                report.ws_convs.append(name)
            else:
                report.left_alone.append(LeftAlone(name, type(m).__name__, refusal))
        report.convs_feeding_norms = sorted(feeding)

    for name, new in plans + ws_plans:
        model = _set_module(model, name, new)
    report.params_after = _count_params(model)
    return model, report
