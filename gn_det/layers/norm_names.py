"""The norm names and GN group policies, without torch: command-line parsers list them as choices
(``gn-det-convert --help`` answers at once); :mod:`gn_det.layers.norm` builds the layers."""

__all__ = ["NORM_NAMES", "GROUP_POLICIES"]

NORM_NAMES = ("BN", "SyncBN", "FrozenBN", "GN", "LN", "IN", "")
GROUP_POLICIES = ("strict", "divisor", "channels_per_group")
