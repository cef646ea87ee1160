"""Turn a config's norm string into a :class:`~gn_det.layers.norm.NormSpec`.

The part-specific keys (MODEL.RESNETS.NORM, MODEL.FPN.NORM, MODEL.ROI_BOX_HEAD.NORM,
MODEL.ROI_MASK_HEAD.NORM) name the norm; the shared MODEL.GROUP_NORM.* and
MODEL.WS_MODE keys say how GN groups and WS behave everywhere.
"""

from __future__ import annotations

from typing import Iterable

from gn_det.config import config_value
from gn_det.layers.norm import NormSpec, group_count, parse_norm

__all__ = ["norm_from_cfg", "group_norm_width_problems"]


def norm_from_cfg(cfg, norm: str, key: str = "") -> NormSpec:
    """Parse ``norm`` (for example ``cfg.MODEL.FPN.NORM``) with the config's GN/WS settings.

    Args:
        cfg: the full config.
        norm: the norm name, optionally with "+WS".
        key: the config key ``norm`` came from, named in the error of a bad value.
    """
    gn = cfg.MODEL.GROUP_NORM
    try:
        return parse_norm(norm, num_groups=int(gn.NUM_GROUPS),
                          channels_per_group=int(gn.CHANNELS_PER_GROUP) or None,
                          eps=float(gn.EPS), ws_mode=str(cfg.MODEL.WS_MODE))
    except (ValueError, TypeError) as e:
        where = f"{key} = {norm!r}: " if key else ""
        raise ValueError(f"{where}{e}") from None


def group_norm_width_problems(cfg, widths: Iterable[tuple[str, str, str, int]]) -> list[str]:
    """The config widths a GroupNorm cannot split into MODEL.GROUP_NORM's groups, checked before
    anything is built (the layer would refuse them later without naming a config key).

    Args:
        cfg: the full config.
        widths: ``(width_key, layer, norm_key, channels)`` for each normalized width: the key that
            sets it (``"MODEL.FPN.OUT_CHANNELS"``; ``""`` for a fixed width), the layers it is
            ("the FPN's convs"), the norm key of those layers and their channel count.

    Returns:
        one ``"KEY = value: ..."`` sentence per width that does not split (for
        :func:`gn_det.config.refuse_unsupported`); norms other than GN, and unknown norm names
        (refused by their own check), give none.
    """
    gn = cfg.MODEL.GROUP_NORM
    per_group = int(gn.CHANNELS_PER_GROUP)
    if per_group > 0:
        divisor, split, step = ("MODEL.GROUP_NORM.CHANNELS_PER_GROUP", f"groups of {per_group} channels", per_group)
    else:
        divisor, split, step = "MODEL.GROUP_NORM.NUM_GROUPS", f"{gn.NUM_GROUPS} groups", int(gn.NUM_GROUPS)
    problems = []
    for width_key, layer, norm_key, channels in widths:
        norm = config_value(cfg, norm_key)
        try:
            spec = norm_from_cfg(cfg, norm, norm_key)
            if spec.name != "GN":
                continue
            group_count(spec, channels)
        except (ValueError, TypeError) as e:
            if "Unknown norm" in str(e):
                continue
            what = f"{layer} have {channels} channels ({norm_key} {norm!r}), which do not split into {split}"
            if width_key:
                problems.append(f"{width_key} = {config_value(cfg, width_key)!r}: {what}; make it a multiple of "
                                f"{step}, or set {divisor} to a divisor of {channels}")
            else:  # a fixed width: the split is what to change
                problems.append(f"{divisor} = {config_value(cfg, divisor)!r}: {what}; set {divisor} to a divisor "
                                f"of {channels}, or use another {norm_key}")
    return problems
