"""Turn a config's norm string into a :class:`~gn_det.layers.norm.NormSpec`.

The part-specific keys (MODEL.RESNETS.NORM, MODEL.FPN.NORM, MODEL.ROI_BOX_HEAD.NORM,
MODEL.ROI_MASK_HEAD.NORM) name the norm; the shared MODEL.GROUP_NORM.* and
MODEL.WS_MODE keys say how GN groups and WS behave everywhere.
"""

from __future__ import annotations

from gn_det.layers.norm import NormSpec, parse_norm

__all__ = ["norm_from_cfg"]


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
