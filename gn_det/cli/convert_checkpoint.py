"""gn-det-convert: turn a BN ResNet checkpoint into a GN or GN+WS one, print and save the report.

Steps: read the checkpoint (any of torchvision / gn_det / detectron2 / Caffe2, format auto-detected),
build the torchvision ResNet it came from (depth and stride placement from the file), load it
refusing anything silently wrong, replace the norms (and WS convs), optionally calibrate GN
gamma/beta on a folder of images, write the result, print the report and save it as JSON beside
the output (``<output file name>.report.json``: ``R-50-gn.pth.report.json``, so converting to
``R-50-gn.pkl`` as well keeps both reports).

The input may be a name instead of a file (:mod:`gn_det.checkpoint.weight_urls`):
``catalog://ImageNetPretrained/MSRA/R-50``, ``detectron2://...``, ``torchvision://resnet50``,
``https://...``, ``file://...``: downloaded once into ``$GN_DET_CACHE/weights``; the default output
then goes to the current folder. Offline, one line names the URL and the cache path to place the
file at by hand (exit 2).

Examples::

    gn-det-convert resnet50-0676ba61.pth --norm gn+ws --output r50_gnws.pth
    gn-det-convert torchvision://ResNet50_Weights.IMAGENET1K_V1 --norm gn --output R-50-gn.pth
    gn-det-convert R-50.pkl --norm gn --calib-data imagenet/val --calib-images 64 \
        --output r50_gn.pkl --output-format detectron2
    gn-det-convert model_final.pth --config-file config.yaml --output-format detectron2

A whole detector (gn_det, detectron2 or Detectron/Caffe2 Mask R-CNN) is converted as it is, names
and class rows, by :mod:`gn_det.cli.convert_detector`.

User errors (missing or corrupt file, shape mismatch, wrong stride placement, bad group count)
print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

# torch and the modules that import it load in convert() and main() after the command line is
# parsed: --help and argument errors answer at once. The parser's choices come from torch-free modules.
from ..checkpoint.format_names import FORMATS, OUTPUT_FORMATS, WS_FOLDING_FORMATS
from ..layers.norm_names import GROUP_POLICIES
from ..modeling.backbone.resnet_specs import RESNET_ARCHS

__all__ = ["main", "build_parser"]

_PROG = "gn-det-convert"
_TRACE_SIZE = 64  # side of the example input traced to find conv -> norm pairs


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (see the module docstring)."""
    p = argparse.ArgumentParser(prog=_PROG, description="Convert a BatchNorm ResNet checkpoint to GN or GN+WS.")
    p.add_argument("input", help="checkpoint file (.pth or .pkl), or a name: catalog://ImageNetPretrained/MSRA/R-50, "
                                 "detectron2://..., torchvision://resnet50, https://..., file://...")
    p.add_argument("--source-format", default="auto", choices=("auto",) + FORMATS)
    p.add_argument("--arch", choices=sorted(RESNET_ARCHS), help="ResNet depth (default: from the checkpoint)")
    p.add_argument("--norm", default="gn+ws",
                   help="target norm: gn, gn+ws, ln, in, frozenbn ... (default gn+ws)")
    p.add_argument("--num-groups", type=int, default=32, help="GN groups (default 32)")
    p.add_argument("--group-policy", default="strict", choices=GROUP_POLICIES,
                   help="GN groups when --num-groups does not divide a layer's channels: strict refuses, "
                        "divisor takes the largest count dividing it, channels_per_group fixes the group size")
    p.add_argument("--channels-per-group", type=int, metavar="N",
                   help="GN channels per group (with --group-policy channels_per_group, or strict)")
    p.add_argument("--calib-data", metavar="DIR", help="folder of images for GN calibration (optional)")
    p.add_argument("--calib-images", type=int, default=64, metavar="N", help="calibration images (default 64)")
    p.add_argument("--calib-size", type=int, default=224, help="calibration crop size (default 224)")
    p.add_argument("--output", metavar="FILE", help="output file (default: <input stem>_<norm>.pth/.pkl)")
    p.add_argument("--output-format", default="gn_det", choices=OUTPUT_FORMATS)
    p.add_argument("--allow-missing", action="store_true",
                   help="keep the initial value of model tensors the checkpoint lacks instead of failing")
    p.add_argument("--stride-in-1x1", default="auto", choices=("auto", "true", "false"),
                   help="where the checkpoint's bottlenecks put their stride (default: from the file)")
    p.add_argument("--config-file", metavar="FILE",
                   help="whole detectors only: the config the detector was trained with (default: the "
                        "config.yaml beside the input)")
    return p


def _default_output(args: argparse.Namespace, norm_label: str) -> Path:
    suffix = ".pkl" if args.output_format in ("detectron2", "caffe2") else ".pth"
    src = Path(args.input)
    if getattr(args, "input_name", None):  # downloaded into the cache: write into the current folder
        src = Path(src.name)
    return src.with_name(f"{src.stem}_{norm_label.lower().replace('+', '')}{suffix}")


def _source_norm(meta: dict, num_groups: int):
    from ..layers.norm import parse_norm

    name = meta.get("norm") or "BN"
    return parse_norm(name + ("+WS" if meta.get("ws") and "+WS" not in name.upper() else ""),
                      num_groups=int(meta.get("num_groups", num_groups)))


def _calibrate(args, reference, converted):
    # Imported here: calibration is optional and pulls in image loading.
    from ..convert.calibrate import calibrate
    from ..data.image_folder import load_image_folder

    with warnings.catch_warnings(record=True) as caught:  # a shortfall is news for the user, not a warning
        warnings.simplefilter("always")
        images = load_image_folder(args.calib_data, args.calib_images, image_size=args.calib_size, seed=0)
    for w in caught:
        print(f"{_PROG}: calibration: {w.message}", file=sys.stderr)
    return calibrate(reference, converted, images.images, progress=True)


def convert(args: argparse.Namespace) -> dict:
    """Run the conversion described by parsed ``args``; returns the JSON report (also written)."""
    import torch

    from ..checkpoint.formats import Checkpoint, check_output_format, make_meta, read_checkpoint, write_checkpoint
    from ..checkpoint.io import CheckpointError, atomic_write_text
    from ..checkpoint.loading import load_into_model
    from ..convert.resnet_arch import build_resnet_for_arch, infer_resnet_arch
    from ..convert.surgery import convert_model
    from ..layers.norm import parse_norm
    from ..layers.ws_conv import fold_ws

    timings = {}
    t = time.perf_counter()
    override = {"auto": None, "true": True, "false": False}[args.stride_in_1x1]
    ckpt = read_checkpoint(args.input, args.source_format, stride_in_1x1=override)
    stride_in_1x1 = ckpt.meta.get("stride_in_1x1")
    if stride_in_1x1 is None:
        raise CheckpointError(f"{args.input} does not say where its stride is (1x1 or 3x3 conv); "
                              f"pass --stride-in-1x1 true or false")
    target = parse_norm(args.norm, num_groups=args.num_groups, group_policy=args.group_policy,
                        channels_per_group=args.channels_per_group)
    # fail before the slow steps (write_checkpoint checks again with the final meta)
    check_output_format(args.output_format, ws=target.ws, stride_in_1x1=bool(stride_in_1x1))
    timings["read"] = time.perf_counter() - t

    t = time.perf_counter()
    arch = args.arch or infer_resnet_arch(ckpt.state_dict)
    fc = ckpt.state_dict.get("fc.weight")
    model = build_resnet_for_arch(arch, _source_norm(ckpt.meta, args.num_groups),
                                     stride_in_1x1=bool(stride_in_1x1),
                                     num_classes=None if fc is None else fc.shape[0])
    timings["build"] = time.perf_counter() - t

    t = time.perf_counter()
    load_report = load_into_model(model, ckpt, stride_in_1x1=bool(stride_in_1x1), allow_missing=args.allow_missing)
    timings["load"] = time.perf_counter() - t

    reference = copy.deepcopy(model) if args.calib_data else None
    t = time.perf_counter()
    model, conv_report = convert_model(model, target, example_input=torch.zeros(1, 3, _TRACE_SIZE, _TRACE_SIZE))
    # WS-trained weights are only right standardized: a non-WS target gets them folded in (exact).
    folded = fold_ws(model) if not target.ws else 0
    timings["convert"] = time.perf_counter() - t

    calib_report = None
    if args.calib_data:
        t = time.perf_counter()
        calib_report = _calibrate(args, reference, model)
        timings["calibrate"] = time.perf_counter() - t

    t = time.perf_counter()
    output = Path(args.output) if args.output else _default_output(args, str(target))
    report_path = output.with_name(output.name + ".report.json")
    meta = make_meta(ckpt.meta.get("source_format", "unknown"), target.name, ws=target.ws,
                     ws_mode=target.ws_mode, stride_in_1x1=bool(stride_in_1x1),
                     stride_source=ckpt.meta.get("stride_source", ""),
                     arch=arch, num_groups=target.num_groups, calibrated=calib_report is not None,
                     source_file=str(args.input), input=ckpt.meta.get("input"))  # the source's input convention
    skipped = write_checkpoint(Checkpoint(model.state_dict(), meta), output, args.output_format)
    timings["write"] = time.perf_counter() - t

    report = {"input": str(args.input), "output": str(output), "output_format": args.output_format,
              "arch": arch, "meta": meta, "load": load_report.to_dict(),
              "source_keys_dropped": ckpt.dropped, "conversion": conv_report.to_dict(),
              "calibration": None if calib_report is None else calib_report.to_dict(),
              "ws_convs_folded": folded, "keys_not_written": skipped, "seconds": timings}
    text = [load_report.to_text(), "", conv_report.to_text(report_file=str(report_path))]
    if folded:
        text.append(f"folded {folded} WS convs into plain convs (the source was trained with WS, "
                    f"the target {target} has none)")
    if ckpt.dropped:
        shown = ", ".join(f"{k}: {v}" for k, v in list(ckpt.dropped.items())[:5])
        more = " ..." if len(ckpt.dropped) > 5 else ""
        text.append(f"source entries not read: {len(ckpt.dropped)} ({shown}{more})")
    if calib_report is not None:
        text += ["", calib_report.format_table()]
    if skipped:
        text.append(f"not written ({args.output_format} has no place for them): {', '.join(skipped)}")
    if target.ws and args.output_format in WS_FOLDING_FORMATS:
        text.append(f"{args.output_format} has no WS convs: WS is folded into the conv weights (exact at "
                    f"inference); {args.output_format} will fine-tune them as plain convs")
    atomic_write_text(json.dumps(report, indent=2, default=str), report_path)
    text += ["", f"wrote {output} ({args.output_format}) and {report_path}"]
    print("\n".join(text))
    return report


def _resolve_input(args: argparse.Namespace) -> None:
    """A weights name as input: download (and convert) it once; ``args.input`` becomes the local file."""
    from ..checkpoint.weight_urls import is_weights_url, resolve_weights

    if is_weights_url(args.input):
        args.input_name = args.input
        args.input = str(resolve_weights(args.input))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gn-det-convert`` / ``tools/convert_checkpoint.py``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.calib_images <= 0:
        print(f"{_PROG}: error: --calib-images must be positive, got {args.calib_images}", file=sys.stderr)
        return 2
    from ..checkpoint.formats import load_raw
    from ..checkpoint.io import CheckpointError
    from ..modeling.mask_rcnn import is_detector_checkpoint
    from .convert_detector import convert_detector

    try:
        _resolve_input(args)
        raw = load_raw(args.input, args.source_format)
        if is_detector_checkpoint(raw):  # a whole Mask R-CNN: names and rows, no norm conversion
            convert_detector(args, raw, parser)
        else:
            convert(args)
    except (CheckpointError, ValueError, OSError) as e:  # user errors: one line, no traceback
        print(f"{_PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
