"""Export a trained model for deployment: ``gn-det-export`` / ``python tools/export.py``.

::

    gn-det-export --config-file CONFIG [--format torchscript|onnx|all] [--output DIR] \\
        [--sample-image IMAGE] [--atol A --rtol R] [--keep-ws] [KEY VALUE ...]

Builds the model of ``--config-file`` (any task: detection, classification, video), loads
MODEL.WEIGHTS through the same loading path as training and ``--eval-only``, folds Weight
Standardization into plain convs, and writes ``DIR/model.torchscript.pt`` and/or ``DIR/model.onnx``
plus ``DIR/export.json`` (the input convention, the outputs, what was folded, and how the
exported program compared with the eager model). ``DIR`` defaults to ``OUTPUT_DIR/export``.

Every file is run back (``torch.jit.load``; onnxruntime for ONNX) on sample inputs, the traced
size and another one, and kept only when its outputs equal the eager model's within
``--atol + --rtol * max|output|`` (labels exactly; at most 0.1% of mask pixels may flip);
``--sample-image`` verifies an image model on a real image (a trained detector finds nothing on
the default random pixels).

Exit codes: 0 done; 2 a user error (config, weights, a format that cannot export this model or a
missing package: one line naming the reason and the alternative); 3 an export whose outputs differ
from the eager model's (nothing written).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

__all__ = ["build_parser", "main"]

_PROG = "gn-det-export"
USER_ERROR, NOT_EQUAL = 2, 3


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``--config-file``, export options, then KEY VALUE overrides)."""
    parser = argparse.ArgumentParser(
        prog=_PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a trained gn_det model (detector, classifier, video) to TorchScript or ONNX, with WS "
                    "folded, checked against the eager model.",
        epilog="Examples:\n"
               "  gn-det-export --config-file configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml \\\n"
               "      MODEL.WEIGHTS output/mask_rcnn_R_18_FPN_gn_demo/model_final.pth\n"
               "  gn-det-export --config-file configs/classification/synthetic/R_18_gn_demo.yaml --format all \\\n"
               "      --output exported/r18 MODEL.WEIGHTS output/classification/R_18_gn_demo/model_final.pth\n")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the model's YAML config")
    parser.add_argument("--format", choices=("torchscript", "onnx", "all"), default="torchscript",
                        help="what to write (default torchscript; onnx needs the onnx and onnxruntime packages)")
    parser.add_argument("--output", metavar="DIR", help="folder for the files (default OUTPUT_DIR/export)")
    parser.add_argument("--sample-image", metavar="IMAGE",
                        help="verify an image model on this image too (resized to the test size)")
    parser.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance of the check (default 1e-4)")
    parser.add_argument("--rtol", type=float, default=1e-4,
                        help="tolerance relative to the largest output value (default 1e-4)")
    parser.add_argument("--keep-ws", action="store_true",
                        help="export WS convs unfolded (standardizing on every call; for comparison only)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sample inputs")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth")
    return parser


def _load_model(cfg):
    """The config's model on the CPU in eval mode, with MODEL.WEIGHTS loaded (raises user errors)."""
    from ..config import ConfigError
    from ..engine.task import get_task
    from ..engine.trainer import load_model_weights

    if not cfg.MODEL.WEIGHTS:
        raise ConfigError("MODEL.WEIGHTS is empty: name the trained model, e.g. MODEL.WEIGHTS "
                          "output/<run>/model_final.pth")
    try:
        task = get_task(cfg.TASK)
    except KeyError as e:
        raise ConfigError(f"TASK: {e.args[0]}") from None
    model = task.build_model(cfg)
    load_model_weights(cfg, model, cfg.MODEL.WEIGHTS, task)
    return model.cpu().eval()


def _sample_image(path: str, spec_kind: str, cfg):
    """``path`` as float RGB 0-255, resized as the test loader would size it (integer values)."""
    import torch
    import torch.nn.functional as F

    from ..config import ConfigError
    from ..utils.image_io import read_image

    if spec_kind == "video":
        raise ConfigError("--sample-image is for image models (classifier, detector); a video model is checked "
                          "on random clips")
    image = read_image(path).float()
    h, w = image.shape[-2:]
    if spec_kind == "classifier":
        size = [int(cfg.INPUT.TEST_CROP_SIZE)] * 2
    else:
        scale = min(int(cfg.INPUT.MIN_SIZE_TEST) / min(h, w), int(cfg.INPUT.MAX_SIZE_TEST) / max(h, w))
        size = [round(h * scale), round(w * scale)]
    resized = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    return resized.round().clamp(0, 255)


def _export(args, cfg) -> dict:
    from ..export import SUFFIXES, export_model, export_spec, prepare_for_export

    if args.sample_image and not os.path.isfile(args.sample_image):  # before the model is built and loaded
        raise FileNotFoundError(f"cannot read image {args.sample_image}: file not found")
    model = _load_model(cfg)
    prepared, counts = prepare_for_export(model, fold=not args.keep_ws)
    sample = None
    if args.sample_image:
        sample = _sample_image(args.sample_image, export_spec(model, cfg).kind, cfg)
    spec = export_spec(prepared, cfg, seed=args.seed, sample=sample)
    reference = export_spec(model, cfg, seed=args.seed, sample=sample)
    spec.eager = reference.eager  # checked against the model as trained, WS unfolded
    out_dir = args.output or os.path.join(cfg.OUTPUT_DIR, "export")
    os.makedirs(out_dir, exist_ok=True)
    formats = ["torchscript", "onnx"] if args.format == "all" else [args.format]
    results = []
    for fmt in formats:
        result = export_model(spec, fmt, os.path.join(out_dir, "model" + SUFFIXES[fmt]), atol=args.atol,
                              rtol=args.rtol)
        results.append(result)
        print(f"{_PROG}: wrote {result.path} ({fmt}); max abs diff vs eager {result.max_abs_diff:.3g} over "
              f"{len(result.comparisons)} inputs {[c.input_shape for c in result.comparisons]}")
    if spec.kind == "detector" and all(c.shapes["boxes"][0] == 0 for r in results for c in r.comparisons):
        print(f"{_PROG}: warning: no sample gave a detection, so boxes and masks were not compared; pass "
              f"--sample-image with an image the model finds objects in")
    report = {"task": cfg.TASK, "kind": spec.kind, "config_file": args.config_file, "weights": cfg.MODEL.WEIGHTS,
              "input": {"name": spec.input_name, "dynamic_axes": spec.dynamic_axes, **spec.convention},
              "outputs": spec.output_names, **counts, "ws_folded": not args.keep_ws,
              "exports": [r.to_dict() for r in results]}
    path = os.path.join(out_dir, "export.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"{_PROG}: input {spec.input_name}: {spec.convention['input']}; inside the graph: "
          f"{'; '.join(spec.convention['inside_graph'])}. WS convs folded: {counts['ws_convs_folded']}; "
          f"FrozenBN kept: {counts['frozen_bn_kept']}. Report: {path}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 on success, exits 2 on a user error and 3 when an export is not equal."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.opts and args.opts[0] == "--":
        args.opts = args.opts[1:]
    if args.atol < 0 or args.rtol < 0:
        parser.error("--atol and --rtol must be >= 0")
    from .. import tasks  # noqa: F401  (registers the built-in tasks)
    from ..config import ConfigError, load_config

    try:  # before torch is imported: a config mistake answers at once
        cfg = load_config(args.config_file, args.opts)
    except ConfigError as e:
        parser.exit(USER_ERROR, f"{_PROG}: error: {e}\n")
    from ..checkpoint.io import CheckpointError
    from ..export import ExportError, VerificationError
    from ..utils.image_io import ImageReadError

    try:
        _export(args, cfg)
    except (ConfigError, CheckpointError, FileNotFoundError, ImageReadError, ExportError) as e:
        parser.exit(USER_ERROR, f"{_PROG}: error: {e}\n")
    except VerificationError as e:
        parser.exit(NOT_EQUAL, f"{_PROG}: error: {e}; check the model in eval mode, or loosen --atol/--rtol\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
