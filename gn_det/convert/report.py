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
    note: str = ""  # why this layer got something other than the target (flat BN -> FrozenBN)


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
        group_policy / num_groups / channels_per_group: the GN group choice asked for (see
            :mod:`gn_det.layers.norm`); each layer's actual groups are in ``replaced``.
        norms_by_structure: norms that did not run in the traced pass and were paired with their
            conv by the module structure (e.g. auxiliary heads that run only in training).
        replaced: the norm layers swapped.
        ws_convs: names of the convs made Weight-Standardized.
        convs_feeding_norms: every conv found feeding a norm ("+WS" targets only); the WS ones
            are ``ws_convs``, the rest are in ``left_alone`` with the reason.
        left_alone: norms and convs left unchanged, with the reason.
        dropped_keys: state-dict keys that no longer exist (running statistics ...).
        params_before / params_after: parameter counts (``numel`` of ``model.parameters()``).
    """

    norm: str
    edge_method: str
    group_policy: str = "strict"
    num_groups: int | None = None
    channels_per_group: int | None = None
    norms_by_structure: list[str] = field(default_factory=list)
    replaced: list[ReplacedNorm] = field(default_factory=list)
    ws_convs: list[str] = field(default_factory=list)
    convs_feeding_norms: list[str] = field(default_factory=list)
    left_alone: list[LeftAlone] = field(default_factory=list)
    dropped_keys: list[str] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0

    def requested_groups(self, channels: int) -> int | None:
        """The group count the strict policy would use for ``channels`` (None: not a GN target)."""
        if not self.norm.upper().startswith("GN"):
            return None
        if self.channels_per_group:
            return channels // self.channels_per_group
        return self.num_groups

    def groups_changed(self) -> list[ReplacedNorm]:
        """GN layers whose group count the policy changed from the requested one."""
        return [r for r in self.replaced if r.groups is not None and self.requested_groups(r.channels) is not None
                and r.groups != self.requested_groups(r.channels)]

    def groups_summary(self) -> str:
        """E.g. "groups (policy divisor, asked 32): 32 x 40, 16 x 3, 8 x 9; 12 layers changed"."""
        counts: dict[int, int] = {}
        for r in self.replaced:
            if r.groups is not None and self.requested_groups(r.channels) is not None:
                counts[r.groups] = counts.get(r.groups, 0) + 1
        if not counts:
            return ""
        asked = (f"{self.channels_per_group} channels per group" if self.channels_per_group
                 else f"{self.num_groups} groups")
        listed = ", ".join(f"{g} x {n}" for g, n in sorted(counts.items(), reverse=True))
        return (f"groups (policy {self.group_policy}, asked {asked}): {listed} layers; "
                f"{len(self.groups_changed())} layers changed by the policy")

    def to_dict(self) -> dict:
        """Plain-JSON form (nested dataclasses become dicts)."""
        return asdict(self)

    def to_text(self, report_file: str | None = None) -> str:
        """A table of replaced layers, then WS convs, left-alone layers and dropped keys (counted by
        kind; the full list is ``dropped_keys`` in ``report_file``, the JSON report, when given)."""
        rows = [(r.name or "<root>", r.old_type, r.new_type, str(r.channels),
                 "-" if r.groups is None else str(r.groups),
                 "-" if r.groups is None else str(r.channels // r.groups), r.note) for r in self.replaced]
        header = ("layer", "old", "new", "channels", "groups", "ch/group", "note")
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
                  for i, h in enumerate(header)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [f"Conversion to {self.norm} (conv->norm edges by {self.edge_method})",
                 fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*row) for row in rows]
        lines.append(f"replaced norms: {len(self.replaced)}   WS convs: {len(self.ws_convs)}   "
                     f"left alone: {len(self.left_alone)}   dropped keys: {len(self.dropped_keys)}")
        lines.append(f"parameters: {self.params_before:,} -> {self.params_after:,}")
        if self.groups_summary():
            lines.append(self.groups_summary())
        if self.ws_convs or self.convs_feeding_norms:
            lines.append(f"WS convs: {len(self.ws_convs)} of {len(self.convs_feeding_norms)} convs feeding "
                         f"a norm: " + ", ".join(self.ws_convs))
        if self.norms_by_structure:
            lines.append("did not run in the traced pass, paired with their conv by module structure: "
                         + ", ".join(self.norms_by_structure))
        if self.left_alone:
            lines.append("left alone:")
            lines += [f"  {a.name or '<root>'} ({a.type}): {a.reason}" for a in self.left_alone]
        if self.dropped_keys:
            kinds: dict[str, int] = {}
            for key in self.dropped_keys:
                kinds[key.rsplit(".", 1)[-1]] = kinds.get(key.rsplit(".", 1)[-1], 0) + 1
            lines.append("dropped keys: " + ", ".join(f"{n} x {k}" for k, n in kinds.items())
                         + (f" (full list: \"dropped_keys\" in {report_file})" if report_file
                            else " (full list: dropped_keys)"))
        return "\n".join(lines)
