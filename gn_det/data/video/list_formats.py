"""The video list format names, without torch: command-line parsers list them as choices
(``gn-det-check-videos --help`` answers at once); :mod:`gn_det.data.video.annotations` reads them."""

__all__ = ["FORMATS"]

FORMATS = ("kinetics", "list", "csv")
