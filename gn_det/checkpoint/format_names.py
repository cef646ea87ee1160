"""The checkpoint format names, without torch: command-line parsers list them as choices
(``gn-det-convert --help`` answers at once); :mod:`gn_det.checkpoint.formats` reads and writes them."""

__all__ = ["FORMATS", "OUTPUT_FORMATS", "WS_FOLDING_FORMATS"]

FORMATS = ("torchvision", "gn_det", "detectron2", "caffe2")
OUTPUT_FORMATS = ("gn_det", "torchvision", "detectron2", "caffe2")
WS_FOLDING_FORMATS = ("detectron2", "caffe2")  # no WS convs: GN+WS weights are written folded
