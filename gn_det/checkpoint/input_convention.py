"""The images a checkpoint's weights expect: channel order and pixel statistics.

Weights only work on images prepared as in their training: detectron2's INPUT.FORMAT ("RGB" or
"BGR") and MODEL.PIXEL_MEAN / PIXEL_STD (0-255 scale, in that channel order). gn_det records
this "input convention" in its checkpoints as ``meta["input"] = {"format", "pixel_mean",
"pixel_std"}`` (:func:`gn_det.checkpoint.formats.make_meta`; training checkpoints carry their
whole config), and :func:`recorded_input_convention` reads it back from any file MODEL.WEIGHTS
names, so a model configured otherwise is warned about.

Where a file records nothing, its format decides when the format has one convention:

=======================  =====  ==============================  ==================
source                   order  mean                            std
=======================  =====  ==============================  ==================
torchvision              RGB    123.675, 116.28, 103.53         58.395, 57.12, 57.375
Detectron (Caffe2)       BGR    102.9801, 115.9465, 122.7717    1, 1, 1
detectron2, __author__   RGB    as torchvision                  as torchvision
"torchvision"
other detectron2 files   (not recorded: detectron2's own default is BGR, std 1, but its
                          model zoo also holds RGB and BGR-with-std files)
=======================  =====  ==============================  ==================
"""

from __future__ import annotations

from typing import Any, Mapping

import yaml

from .detectron2_detector import CAFFE2_INPUT
from .io import CheckpointError

__all__ = ["TORCHVISION_INPUT", "cfg_input_convention", "recorded_input_convention", "source_input_convention"]

TORCHVISION_INPUT = {"format": "RGB", "pixel_mean": [123.675, 116.28, 103.53], "pixel_std": [58.395, 57.12, 57.375]}
_BY_FORMAT = {"torchvision": TORCHVISION_INPUT, "caffe2": CAFFE2_INPUT}


def source_input_convention(source_format: str, author: str | None = None) -> dict[str, Any] | None:
    """The input convention a checkpoint format implies (see the module table), or None if it has none.

    Args:
        source_format: "torchvision", "caffe2", "detectron2" or "gn_det".
        author: a detectron2 file's ``__author__`` ("torchvision": converted torchvision weights).
    """
    if source_format == "detectron2" and str(author or "").lower() == "torchvision":
        source_format = "torchvision"
    convention = _BY_FORMAT.get(source_format)
    return None if convention is None else {k: (list(v) if isinstance(v, list) else v) for k, v in convention.items()}


def cfg_input_convention(cfg) -> dict[str, Any]:
    """The input convention a config feeds its model (INPUT.FORMAT, MODEL.PIXEL_MEAN/STD)."""
    return {"format": str(cfg.INPUT.FORMAT), "pixel_mean": [float(v) for v in cfg.MODEL.PIXEL_MEAN],
            "pixel_std": [float(v) for v in cfg.MODEL.PIXEL_STD]}


def _from_config_text(text: str) -> dict[str, Any] | None:
    try:
        saved = yaml.safe_load(text) or {}
        convention = {"format": saved["INPUT"]["FORMAT"], "pixel_mean": list(saved["MODEL"]["PIXEL_MEAN"]),
                      "pixel_std": list(saved["MODEL"]["PIXEL_STD"])}
    except (yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None
    return convention


def recorded_input_convention(raw: Any) -> dict[str, Any] | None:
    """What a loaded checkpoint says about the images its weights expect, with a ``"source"`` entry
    saying where that comes from; None when neither the file nor its format says.

    Looked up in order: gn_det's ``meta["input"]`` (converter and export files), ``gn_det_meta``
    of a detectron2 ``.pkl`` written by gn_det, the config a gn_det training checkpoint carries
    (``"config"``), then the format's convention (a torchvision state dict, a Caffe2 blob dict,
    a detectron2 file converted from torchvision).
    """
    if not isinstance(raw, Mapping):
        return None
    for key, where in (("meta", "meta['input'] in the file"), ("gn_det_meta", "gn_det_meta['input'] in the file")):
        meta = raw.get(key)
        if isinstance(meta, Mapping) and isinstance(meta.get("input"), Mapping):
            return {**meta["input"], "source": where}
    if isinstance(raw.get("config"), str):
        convention = _from_config_text(raw["config"])
        if convention is not None:
            return {**convention, "source": "the training config saved in the file"}
    from .formats import detect_format  # formats records conventions through this module

    try:
        source_format = detect_format(raw)
    except CheckpointError:  # not a ResNet checkpoint of a known format: nothing to say
        return None
    convention = source_input_convention(source_format, raw.get("__author__"))
    if convention is None:
        return None
    return {**convention, "source": f"the {source_format} format's convention"}
