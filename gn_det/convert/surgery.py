"""Module surgery: turn the BatchNorm layers of any ``nn.Module`` into GN (or LN, IN, ...) and, for
"+WS" targets, the convs that feed norm layers into Weight-Standardized convs.

Which layers are norms to replace: ``nn.BatchNorm1d/2d/3d``, ``nn.SyncBatchNorm``,
``torchvision.ops.FrozenBatchNorm2d`` and gn_det's :class:`~gn_det.layers.FrozenBatchNorm`. New
layers always come from the norm factory (:func:`gn_det.layers.create_norm`), so a group count that
does not divide a layer's channels fails with the layer's name, before anything is modified.

Spatial dims of the new layer (it matters only when the target is "BN"): from the class for
BatchNorm{1,2,3}d and torchvision's FrozenBatchNorm2d; for the dim-agnostic classes (SyncBN, gn_det's
FrozenBN) from the traced input when ``example_input`` is given, else from the conv feeding the norm,
else 2.

Which convs feed a norm ("conv -> norm edges", used for "+WS"):

- with ``example_input``: one forward pass (eval mode, no grad) with hooks; a conv feeds a norm when
  the very tensor the conv returned is the norm's input. Exact for any control flow.
- without it, a name/order heuristic: (1) a conv child immediately followed by a norm child in the
  same parent (``Sequential(conv, norm)``, torchvision's ``conv1, bn1, conv2, bn2``); (2) siblings
  ``convK`` / ``bnK`` and ``downsample.0`` / ``downsample.1``.
- in both cases, detectron2-style convs that own their norm as a ``.norm`` child (they call it inside
  their own forward, which hooks cannot see).

Every conv feeding a norm layer (replaced or already GN/LN) becomes ``WSConv2d``/``WSConv3d``; convs
of other types (1D, transposed, subclasses with child modules) are left alone and reported.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d as TVFrozenBatchNorm2d

from ..layers.conv_norm import BATCH_NORM_TYPES, NORM_TYPES, batch_norm_channels, is_norm, to_ws_conv
from ..layers.norm import NormSpec, create_norm, parse_norm
from ..layers.ws_conv import WS_COUNTERPARTS, WSConv2d, WSConv3d
from .modes import eval_mode
from .report import ConversionReport, LeftAlone, ReplacedNorm

__all__ = ["convert_model", "BATCH_NORM_TYPES", "find_conv_norm_edges"]

_OTHER_NORMS = tuple(t for t in NORM_TYPES if t not in BATCH_NORM_TYPES)
_CLASS_DIMS = ((nn.BatchNorm1d, 1), (nn.BatchNorm2d, 2), (nn.BatchNorm3d, 3), (TVFrozenBatchNorm2d, 2))


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd)


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def _owned_norm_edges(modules: dict[str, nn.Module]) -> dict[str, str]:
    """detectron2-style convs holding their norm as ``.norm``: {norm name: conv name}."""
    return {_join(name, "norm"): name for name, m in modules.items()
            if _is_conv(m) and is_norm(getattr(m, "norm", None) or nn.Identity())}


def _heuristic_edges(modules: dict[str, nn.Module]) -> dict[str, str]:
    edges: dict[str, str] = {}
    for parent_name, parent in modules.items():
        children = list(parent.named_children())
        for (a_name, a), (b_name, b) in zip(children, children[1:]):
            if _is_conv(a) and is_norm(b):
                edges[_join(parent_name, b_name)] = _join(parent_name, a_name)
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
                edges.setdefault(_join(parent_name, child_name), _join(parent_name, partner))
    return edges


def _traced_edges(model: nn.Module, modules: dict[str, nn.Module],
                  example_input) -> tuple[dict[str, str], dict[str, int]]:
    """Run ``example_input`` once; return {norm: conv feeding it} and {norm: input spatial dims}."""
    conv_outputs: dict[int, tuple[str, torch.Tensor]] = {}  # keeps outputs alive so ids stay unique
    edges: dict[str, str] = {}
    in_dims: dict[str, int] = {}

    def conv_hook(name):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                conv_outputs[id(output)] = (name, output)
        return hook

    def norm_hook(name):
        def hook(module, args):
            x = args[0] if args else None
            if isinstance(x, torch.Tensor):
                in_dims.setdefault(name, x.dim() - 2)
                hit = conv_outputs.get(id(x))
                if hit is not None and hit[1] is x:
                    edges.setdefault(name, hit[0])
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
    return edges, in_dims


def find_conv_norm_edges(model: nn.Module, example_input=None) -> tuple[dict[str, str], dict[str, int]]:
    """Map each norm layer's name to the name of the conv feeding it (see the module docstring).

    Returns:
        ({norm name: conv name}, {norm name: traced input spatial dims}); the second dict is empty
        without ``example_input``.
    """
    modules = dict(model.named_modules())
    if example_input is not None:
        edges, dims = _traced_edges(model, modules, example_input)
    else:
        edges, dims = _heuristic_edges(modules), {}
    for norm_name, conv_name in _owned_norm_edges(modules).items():
        edges.setdefault(norm_name, conv_name)
    return edges, dims


def _norm_dim(name: str, norm: nn.Module, traced: dict[str, int], feeder: nn.Module | None) -> int:
    for cls, dim in _CLASS_DIMS:
        if isinstance(norm, cls):
            return dim
    if name in traced and traced[name] in (1, 2, 3):
        return traced[name]
    if feeder is not None:
        return len(feeder.kernel_size)
    return 2


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


def _build_norm(spec: NormSpec, name: str, old: nn.Module, dim: int,
                transfer: bool) -> tuple[nn.Module, list[str], list[str]]:
    """The replacement for ``old``; returns (module, transferred keys, dropped keys)."""
    new = create_norm(spec, batch_norm_channels(old), dim=dim, layer_name=name).to(**_float_like(old))
    new.train(old.training)
    old_state, new_state = old.state_dict(), new.state_dict()
    transferred = []
    if transfer:
        with torch.no_grad():
            for key, value in new_state.items():
                if key in old_state and old_state[key].shape == value.shape:
                    value.copy_(old_state[key])
                    transferred.append(key)
    dropped = [_join(name, k) for k in old_state if k not in new_state]
    return new, transferred, dropped


def _ws_refusal(conv: nn.Module) -> str | None:
    if isinstance(conv, (WSConv2d, WSConv3d)):
        return "already Weight-Standardized"
    if type(conv) not in WS_COUNTERPARTS:
        what = "a subclass with its own forward" if isinstance(conv, tuple(WS_COUNTERPARTS)) else "not Conv2d/3d"
        return f"feeds a norm but is {what}; no WS counterpart, swap it by hand"
    return None


def convert_model(model: nn.Module, norm: str | NormSpec = "GN", *, example_input=None,
                  transfer_weights: bool = True) -> tuple[nn.Module, ConversionReport]:
    """Replace every BatchNorm-family layer of ``model`` by ``norm``; with "+WS", also make every conv
    that feeds a norm layer Weight-Standardized.

    Works in place on the module tree; the model is also returned (a new object only when ``model``
    itself is a norm layer).

    Args:
        model: any module.
        norm: the target, e.g. "GN", "GN+WS", "LN", or a :class:`~gn_det.layers.NormSpec`
            (carries ``num_groups`` / ``channels_per_group`` / ``eps`` / ``ws_mode``).
        example_input: an input (or tuple of inputs) for one traced forward pass that finds which
            conv feeds which norm exactly; without it a name/order heuristic is used.
        transfer_weights: copy BN gamma/beta (FrozenBN weight/bias) into the new layer's
            gamma/beta; running statistics are dropped and listed in the report.

    Returns:
        (model, :class:`~gn_det.convert.report.ConversionReport`).

    Raises:
        ValueError: a group count that does not divide a layer's channels (naming the layer), an
            unknown norm name, or a failing forward pass on ``example_input``. Nothing is modified.
    """
    spec = parse_norm(norm)
    modules = dict(model.named_modules())
    edges, traced_dims = find_conv_norm_edges(model, example_input)
    report = ConversionReport(norm=str(spec), edge_method="trace" if example_input is not None else "names",
                              params_before=_count_params(model))

    plans = []  # built before any change, so a bad group count leaves the model untouched
    for name, m in modules.items():
        if isinstance(m, BATCH_NORM_TYPES):
            if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params():
                report.left_alone.append(LeftAlone(name, type(m).__name__, "uninitialized lazy module"))
                continue
            dim = _norm_dim(name, m, traced_dims, modules.get(edges.get(name, "")))
            new, transferred, dropped = _build_norm(spec, name, m, dim, transfer_weights)
            plans.append((name, new))
            groups = new.num_groups if isinstance(new, nn.GroupNorm) else None
            report.replaced.append(ReplacedNorm(name, type(m).__name__, type(new).__name__,
                                                batch_norm_channels(m), groups, transferred))
            report.dropped_keys += dropped
        elif isinstance(m, _OTHER_NORMS):
            report.left_alone.append(LeftAlone(name, type(m).__name__, "already a batch-independent norm"))

    ws_plans = []
    if spec.ws:
        feeding = set(edges.values())
        for name, m in modules.items():
            if not _is_conv(m):
                continue
            refusal = _ws_refusal(m) if name in feeding else "does not feed a norm layer"
            if refusal is None:
                ws_plans.append((name, to_ws_conv(m, spec.ws_mode)))
                report.ws_convs.append(name)
            else:
                report.left_alone.append(LeftAlone(name, type(m).__name__, refusal))

    for name, new in plans + ws_plans:
        model = _set_module(model, name, new)
    report.params_after = _count_params(model)
    return model, report
