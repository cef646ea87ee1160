"""The record of a BN -> GN / GN+WS conversion: what changed, what was left alone and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["ReplacedNorm", "LeftAlone", "ConversionReport"]


@dataclass
class ReplacedNorm:
    """One norm layer swapped by the converter."""

    name: str
    old_type: str
    new_type: str
    channels: int
    groups: int | None  # GN groups; None for non-GN targets
    transferred: list[str] = field(default_factory=list)  # state keys copied (weight, bias, ...)


@dataclass
class LeftAlone:
    """A norm or conv layer the converter did not touch, with the reason."""

    name: str
    type: str
    reason: str


@dataclass
class ConversionReport:
    """What :func:`~gn_det.convert.surgery.convert_model` did.

    Attributes:
        norm: the target norm ("GN", "GN+WS", ...).
        edge_method: how conv -> norm edges were found: "trace" (forward hooks on an example
            input) or "names" (the module-name heuristic).
        replaced: the norm layers swapped.
        ws_convs: names of the convs made Weight-Standardized.
        left_alone: norms and convs left unchanged, with the reason.
        dropped_keys: state-dict keys that no longer exist (running statistics ...).
        params_before / params_after: parameter counts (``numel`` of ``model.parameters()``).
    """

    norm: str
    edge_method: str
    replaced: list[ReplacedNorm] = field(default_factory=list)
    ws_convs: list[str] = field(default_factory=list)
    left_alone: list[LeftAlone] = field(default_factory=list)
    dropped_keys: list[str] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0

    def to_dict(self) -> dict:
        """Plain-JSON form (nested dataclasses become dicts)."""
        return asdict(self)

    def to_text(self) -> str:
        """A table of replaced layers, then WS convs, left-alone layers and dropped keys."""
        rows = [(r.name or "<root>", r.old_type, r.new_type, str(r.channels),
                 "-" if r.groups is None else str(r.groups)) for r in self.replaced]
        header = ("layer", "old", "new", "channels", "groups")
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
                  for i, h in enumerate(header)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [f"Conversion to {self.norm} (conv->norm edges by {self.edge_method})",
                 fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*row) for row in rows]
        lines.append(f"replaced norms: {len(self.replaced)}   WS convs: {len(self.ws_convs)}   "
                     f"left alone: {len(self.left_alone)}   dropped keys: {len(self.dropped_keys)}")
        lines.append(f"parameters: {self.params_before:,} -> {self.params_after:,}")
        if self.ws_convs:
            lines.append("WS convs: " + ", ".join(self.ws_convs))
        if self.left_alone:
            lines.append("left alone:")
            lines += [f"  {a.name or '<root>'} ({a.type}): {a.reason}" for a in self.left_alone]
        if self.dropped_keys:
            kinds: dict[str, int] = {}
            for key in self.dropped_keys:
                kinds[key.rsplit(".", 1)[-1]] = kinds.get(key.rsplit(".", 1)[-1], 0) + 1
            lines.append("dropped keys: " + ", ".join(f"{n} x {k}" for k, n in kinds.items())
                         + " (full list in to_dict())")
        return "\n".join(lines)
