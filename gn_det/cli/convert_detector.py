"""gn-det-convert for whole detectors: a gn_det, detectron2 or Detectron (Caffe2) FPN Mask R-CNN
in, a detectron2 ``.pkl`` (``--output-format detectron2``) or a gn_det ``.pth`` out.

The model is built from the config the detector was trained with (``--config-file``; default: the
config a gn_det training checkpoint carries, else the ``config.yaml`` beside the checkpoint), the
weights go in through the
one loading path (MODEL.WEIGHTS's: names, class rows and anchor order converted, see
:mod:`gn_det.checkpoint.detectron2_detector`) and must fill the model; then they are written.
Into detectron2, WS convs are folded into plain convs (exact at inference) and the background
rows detectron2 has no place for are dropped; both are in the report
(``<output file name>.report.json``).

Example::

    gn-det-convert output/mask_rcnn_R_50_FPN_gn_ws_2x/model_final.pth --output-format detectron2 \\
        --output model_final_d2.pkl
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from ..checkpoint.detectron2_detector import write_detectron2_detector
from ..checkpoint.io import CheckpointError, atomic_save, atomic_write_text
from ..checkpoint.model_loading import IncompleteWeightsError, init_policy, load_weights
from ..config import load_config
from ..modeling.detector_weights import mask_rcnn_to_detectron2
from ..modeling.mask_rcnn import GNMaskRCNN, build_mask_rcnn, mask_rcnn_weights_transform

__all__ = ["convert_detector", "DETECTOR_OUTPUT_FORMATS"]

DETECTOR_OUTPUT_FORMATS = ("detectron2", "gn_det")
# Options of the ResNet conversion that mean nothing for a whole detector (refused when set).
_RESNET_ONLY = ("arch", "norm", "num_groups", "group_policy", "channels_per_group", "calib_data", "calib_images",
                "calib_size", "allow_missing", "stride_in_1x1")


def _config(args: argparse.Namespace, raw: Any):
    """(config, where it came from): --config-file, the training checkpoint's own, or config.yaml beside it."""
    if args.config_file:
        return load_config(args.config_file), args.config_file
    text = raw.get("config") if isinstance(raw, dict) else None
    if isinstance(text, str):  # gn_det training checkpoints carry the run's full config
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder, "config.yaml")
            path.write_text(text, encoding="utf-8")
            return load_config(str(path)), f"the config saved in {args.input}"
    beside = Path(args.input).with_name("config.yaml")
    if beside.is_file():
        return load_config(str(beside)), str(beside)
    raise CheckpointError(f"{args.input} is a whole detector: pass --config-file, the config it was trained with "
                          f"(it carries none and has no config.yaml beside it), so that its model can be built")


def _check_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    given = [f"--{d.replace('_', '-')}" for d in _RESNET_ONLY
             if hasattr(args, d) and getattr(args, d) != parser.get_default(d)]
    if given:
        raise CheckpointError(f"{', '.join(given)} convert ResNet checkpoints; {args.input} is a whole detector, "
                              f"written with the norms it was trained with: drop {' '.join(given)}")
    if args.output_format not in DETECTOR_OUTPUT_FORMATS:
        raise CheckpointError(f"a whole detector is written as {' or '.join(DETECTOR_OUTPUT_FORMATS)}, not "
                              f"{args.output_format}; use --output-format detectron2")


def _load(cfg, model: GNMaskRCNN, args: argparse.Namespace, raw: Any, config: str):
    try:
        return load_weights(model, args.input, init_policy(complete=True),
                            transform=lambda r, s: mask_rcnn_weights_transform(cfg, model, r, s), raw=raw)
    except IncompleteWeightsError as e:
        gaps = e.missing[:4] + [f"{k} (file {a} vs model {b})" for k, a, b in e.shape_mismatched[:4]]
        raise CheckpointError(f"{args.input} does not fill the model built from {config} ({len(e.missing)} "
                              f"missing, {len(e.shape_mismatched)} of another shape: {', '.join(gaps)}); "
                              f"give the config the detector was trained with (--config-file)") from None


def convert_detector(args: argparse.Namespace, raw: Any, parser: argparse.ArgumentParser) -> dict:
    """Convert the whole detector ``raw`` (read from ``args.input``); returns the JSON report
    (also written beside the output).

    Raises:
        CheckpointError: no config, options that only apply to ResNets, another output format, or
            weights that do not fill the model the config builds.
    """
    _check_options(args, parser)
    cfg, config = _config(args, raw)
    if cfg.TASK != "detection":
        raise CheckpointError(f"{config} has TASK {cfg.TASK!r}; a whole detector needs its detection config")
    model = build_mask_rcnn(cfg)
    load = _load(cfg, model, args, raw, config)
    src = Path(args.input)
    suffix = {"detectron2": "_d2.pkl", "gn_det": "_gn_det.pth"}[args.output_format]
    # a downloaded input lives in the cache: the default output goes to the current folder
    default = Path(src.stem + suffix) if getattr(args, "input_name", None) else src.with_name(src.stem + suffix)
    output = Path(args.output) if args.output else default
    report = {"input": str(src), "config": config, "output": str(output), "output_format": args.output_format,
              "load": {"summary": load.summary(), "notes": load.notes, "unexpected": load.unexpected}}
    text = [load.to_text()]
    if args.output_format == "detectron2":
        conversion, meta = mask_rcnn_to_detectron2(cfg, model, source=str(src))
        write_detectron2_detector(conversion, output, meta)
        report.update(meta=meta, export=conversion.to_dict())
        text += ["", *conversion.notes()]
    else:
        meta = {"format": "gn_det", "detector": True, "source_file": str(src),
                "input": {"format": cfg.INPUT.FORMAT, "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
                          "pixel_std": list(cfg.MODEL.PIXEL_STD)}}
        atomic_save({"model": model.state_dict(), "meta": meta}, output)
        report["meta"] = meta
    report_path = output.with_name(output.name + ".report.json")
    atomic_write_text(json.dumps(report, indent=2, default=str), report_path)
    print("\n".join(text + ["", f"wrote {output} ({args.output_format}) and {report_path}"]))
    return report
