"""Convert every torchvision classification, video and detection model that has BatchNorm to GN+WS.

    OMP_NUM_THREADS=1 python benchmarks/converter_coverage.py --out bench_out/converter_coverage.json
    python benchmarks/converter_coverage.py --models mobilenet_v2 r2plus1d_18 --group-policy channels_per_group

Models come from ``torchvision.models.list_models`` (classification, video, detection), built with
``weights=None`` (detection: ``weights_backbone=None`` too, and ``--det-size`` as min/max size where
the model takes one). Models without any BatchNorm are skipped and counted. Each model is converted
with :func:`gn_det.convert.convert_model` (``--norm``, default GN+WS, ``--group-policy``, default
divisor, 32 groups) using one small example input, and the table reports:

- norms: BN layers converted / BN layers in the model;
- groups: GN layers whose group count the policy changed from 32, and the counts used;
- WS: WS convs / convs found feeding a norm (the rest are "left alone" with the reason, in the JSON);
- by structure: norms that did not run in the eval-mode trace (auxiliary heads), paired by modules;
- batch dependence: with the norm layers in train mode (the rest of the model in eval mode, so
  dropout is off and detectors need no targets), sample 0's outputs alone and in a batch of 2 are
  compared over every norm layer's output whose batch dim is the images (plus the logits of
  classification and video models): the largest ``max|alone - batched| / max|batched|`` over those
  outputs, before (BN, float32) and after conversion (GN, float32, and float64 for models up to
  ``--double-max-params``: float32 differences are rounding from batch-size dependent kernels).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import get_model, list_models

from gn_det.checkpoint.io import atomic_write_text
from gn_det.convert import convert_model
from gn_det.layers.conv_norm import BATCH_NORM_TYPES, is_norm
from gn_det.layers.norm import GROUP_POLICIES, parse_norm
from gn_det.utils.table import format_table

FAMILIES = {"classification": torchvision.models, "video": torchvision.models.video,
            "detection": torchvision.models.detection}
# Smallest inputs these models accept (the rest run at --size / --clip).
_IMAGE_SIZE = {"inception_v3": 80, "maxvit_t": 224}
_CLIP = {"s3d": (16, 224)}  # (frames, side): S3D ends in a (2, 7, 7) average pool


def _build(name: str, family: str, det_size: int) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GoogLeNet/Inception init warnings
        if family != "detection":
            return get_model(name, weights=None)
        base = {"weights": None, "weights_backbone": None}
        # R-CNNs: 100 proposals and 10 detections (their ROI heads dominate the time otherwise)
        for extra in ({"min_size": det_size, "max_size": det_size, "rpn_pre_nms_top_n_test": 100,
                       "rpn_post_nms_top_n_test": 100, "box_detections_per_img": 10},
                      {"min_size": det_size, "max_size": det_size}, {}):  # SSD: fixed size
            try:
                return get_model(name, **base, **extra)
            except TypeError:
                continue
        raise AssertionError("unreachable: the last attempt passes no extra argument")


def _inputs(name: str, family: str, args) -> tuple:
    """(input for one sample, input for a batch of 2 whose first sample is the same)."""
    g = torch.Generator().manual_seed(0)
    if family == "detection":
        images = [torch.rand(3, args.det_size, args.det_size, generator=g) for _ in range(2)]
        return [images[0]], images
    if family == "video":
        frames, side = _CLIP.get(name, (args.frames, args.clip_size))
        batch = torch.randn(2, 3, frames, side, side, generator=g)
    else:
        side = _IMAGE_SIZE.get(name, args.size)
        batch = torch.randn(2, 3, side, side, generator=g)
    return batch[:1], batch


def _double(x):
    return [t.double() for t in x] if isinstance(x, list) else x.double()


def _sample0_outputs(model: nn.Module, x, family: str) -> list[torch.Tensor | None]:
    """Sample 0's output of every norm call (None where the batch dim is not the images), then logits."""
    n = len(x) if isinstance(x, list) else x.shape[0]
    outs: list[torch.Tensor | None] = []

    def hook(module, args, output):
        outs.append(output[:1].clone() if isinstance(output, torch.Tensor) and output.shape[0] == n else None)

    norms = [m for m in model.modules() if is_norm(m)]
    handles = [m.register_forward_hook(hook) for m in norms]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    for m in norms:
        m.train()  # the norms as they train; dropout etc. stay off
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
    if family != "detection":
        logits = y if isinstance(y, torch.Tensor) else y[0]  # GoogLeNet/Inception namedtuples
        outs.append(logits[:1].clone())
    return outs


def _batch_dependence(model: nn.Module, alone, batch, family: str) -> tuple[float, int]:
    """Largest relative difference of sample 0's outputs alone vs in the batch, and how many were compared."""
    bn_buffers = [b for m in model.modules() if isinstance(m, BATCH_NORM_TYPES) for b in m.buffers()]
    saved = [b.clone() for b in bn_buffers]  # train-mode BN moves its statistics: put them back
    try:
        a, b = _sample0_outputs(model, alone, family), _sample0_outputs(model, batch, family)
    finally:
        with torch.no_grad():
            for buf, old in zip(bn_buffers, saved):
                buf.copy_(old)
    pairs = [(p, q) for p, q in zip(a, b) if p is not None and q is not None and p.shape == q.shape]
    diff = max((float((p - q).abs().max() / q.abs().max().clamp_min(1e-30)) for p, q in pairs),
               default=float("nan"))
    return diff, len(pairs)


def _run(name: str, family: str, args, spec) -> dict:
    t0 = time.perf_counter()
    model = _build(name, family, args.det_size)
    bn = [n for n, m in model.named_modules() if isinstance(m, BATCH_NORM_TYPES)]
    row = {"model": name, "family": family, "bn_layers": len(bn), "build_s": time.perf_counter() - t0}
    if not bn:
        return row
    alone, batch = _inputs(name, family, args)
    try:
        row["bn_batch_diff"], _ = _batch_dependence(model, alone, batch, family)
    except ValueError as e:  # train-mode BN refuses one value per channel (a 1x1 map of one sample)
        row["bn_batch_diff"], row["bn_batch_error"] = None, str(e)
    t1 = time.perf_counter()
    try:
        model, report = convert_model(model, spec, example_input=(alone,))
    except ValueError as e:
        row.update(error=str(e), convert_s=time.perf_counter() - t1)
        return row
    row["convert_s"] = time.perf_counter() - t1
    row["gn_batch_diff"], row["compared_outputs"] = _batch_dependence(model, alone, batch, family)
    row["gn_batch_diff_f64"] = None
    if sum(p.numel() for p in model.parameters()) <= args.double_max_params:
        model.double()
        row["gn_batch_diff_f64"], _ = _batch_dependence(model, _double(alone), _double(batch), family)
    left = Counter(a.reason for a in report.left_alone if "Norm" not in a.type)
    row.update(converted=len(report.replaced), ws_convs=len(report.ws_convs),
               convs_feeding_norms=len(report.convs_feeding_norms),
               groups_changed=len(report.groups_changed()),
               groups_used=sorted({r.groups for r in report.replaced if r.groups is not None}, reverse=True),
               by_structure=report.norms_by_structure,
               other_new_types=dict(Counter(r.new_type for r in report.replaced if r.new_type != "GroupNorm")),
               left_alone_convs=dict(left),
               left_alone_feeding=[{"name": a.name, "type": a.type, "reason": a.reason} for a in report.left_alone
                                   if a.name in set(report.convs_feeding_norms)],
               seconds=time.perf_counter() - t0)
    return row


def _table(rows: list[dict]) -> str:
    def groups(r):
        used = r["groups_used"]
        shown = "/".join(map(str, used[:4])) + ("/..." if len(used) > 4 else "")
        return f"{r['groups_changed']} ({shown})"

    body = [[r["model"], r["family"], f"{r['converted']}/{r['bn_layers']}", groups(r),
             f"{r['ws_convs']}/{r['convs_feeding_norms']}", len(r["by_structure"]),
             "fails" if r["bn_batch_diff"] is None else f"{r['bn_batch_diff']:.2f}", f"{r['gn_batch_diff']:.0e}",
             "-" if r["gn_batch_diff_f64"] is None else f"{r['gn_batch_diff_f64']:.0e}", r["compared_outputs"],
             f"{r['seconds']:.1f}"]
            for r in rows if "converted" in r]
    headers = ["model", "family", "norms", "groups changed (used)", "WS / feeding", "by structure",
               "BN batch diff", "GN diff f32", "GN diff f64", "outputs", "s"]
    return format_table(body, headers)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="only these models (default: all listed)")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--norm", default="GN+WS")
    parser.add_argument("--num-groups", type=int, default=32)
    parser.add_argument("--group-policy", default="divisor", choices=GROUP_POLICIES)
    parser.add_argument("--channels-per-group", type=int)
    parser.add_argument("--size", type=int, default=64, help="image side for classification models")
    parser.add_argument("--frames", type=int, default=4, help="clip length for video models")
    parser.add_argument("--clip-size", type=int, default=32, help="frame side for video models")
    parser.add_argument("--det-size", type=int, default=128, help="detector min/max size (SSD: fixed)")
    parser.add_argument("--double-max-params", type=float, default=1e8,
                        help="also check batch independence in float64 for models up to this many parameters")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = parse_norm(args.norm, num_groups=args.num_groups, group_policy=args.group_policy,
                      channels_per_group=args.channels_per_group)

    start = time.perf_counter()
    rows, skipped = [], []
    for family in args.families:
        for name in list_models(module=FAMILIES[family]):
            if args.models and name not in args.models:
                continue
            row = _run(name, family, args, spec)
            if row["bn_layers"] == 0:
                skipped.append(name)
                continue
            rows.append(row)
            status = row.get("error") or (f"{row['converted']}/{row['bn_layers']} norms, WS {row['ws_convs']}/"
                                          f"{row['convs_feeding_norms']}, batch diff {row['gn_batch_diff']:.1e}")
            print(f"{name}: {status} ({row.get('seconds', 0.0):.1f} s)", flush=True)
    wall = time.perf_counter() - start

    print()
    print(_table(rows))
    failed = [r for r in rows if "error" in r]
    print(f"\n{len(rows) - len(failed)} models converted ({spec}, group policy {spec.group_policy}), "
          f"{len(failed)} failed, {len(skipped)} skipped without BatchNorm: {', '.join(skipped)}")
    for r in failed:
        print(f"FAILED {r['model']}: {r['error']}")
    print(f"wall time {wall:.0f} s, {args.threads} thread(s)")
    result = {"benchmark": "converter_coverage", "norm": str(spec), "group_policy": spec.group_policy,
              "num_groups": spec.num_groups, "channels_per_group": spec.channels_per_group,
              "sizes": {"classification": args.size, "video": [args.frames, args.clip_size],
                        "detection": args.det_size, "overrides": {**_IMAGE_SIZE, **_CLIP}},
              "torch": torch.__version__, "torchvision": torchvision.__version__,
              "python": platform.python_version(), "machine": platform.machine(), "threads": args.threads,
              "wall_s": wall, "skipped_without_bn": skipped,
              "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
              "results": rows}
    if args.out:
        atomic_write_text(json.dumps(result, indent=2), args.out)
        print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
