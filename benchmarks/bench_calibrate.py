#!/usr/bin/env python
"""Time GN calibration of a torchvision ResNet-50 (issue target: 64 images at 224 px < 2 min on CPU).

The BN network has random weights with non-trivial BN statistics (no pretrained weights are
downloadable here); calibration cost does not depend on the weight values. Prints a markdown table
and writes JSON::

    python benchmarks/bench_calibrate.py --output bench_out/calibrate.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time

import torch
import torchvision
from torch import nn

from gn_det.utils.io import atomic_write_text
from gn_det.convert.calibrate import calibrate
from gn_det.convert.surgery import convert_model


def make_bn_resnet(arch: str, seed: int) -> nn.Module:
    """A torchvision ResNet with random affine and running statistics in every BN layer."""
    torch.manual_seed(seed)
    model = torchvision.models.get_model(arch, weights=None)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--num-images", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16, help="chunk size of the recording passes")
    p.add_argument("--norms", nargs="+", default=["GN", "GN+WS"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="bench_out/calibrate.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    reference = make_bn_resnet(args.arch, args.seed)
    images = torch.randn(args.num_images, 3, args.image_size, args.image_size,
                         generator=torch.Generator().manual_seed(args.seed))
    rows = []
    for norm in args.norms:
        converted, _ = convert_model(copy.deepcopy(reference), norm=norm)
        for measure_before in (True, False):
            net = copy.deepcopy(converted)
            start = time.perf_counter()
            report = calibrate(reference, net, images, batch_size=args.batch_size,
                               measure_before=measure_before)
            seconds = time.perf_counter() - start
            s = report.summary()
            rows.append({"norm": norm, "measure_before": measure_before, "seconds": round(seconds, 2),
                         "layers": s["num_layers"], "after_std_err": s["after_std_err"],
                         "before_std_err": s["before_std_err"]})
    header = (f"Calibration of {args.arch}, {args.num_images} images at {args.image_size} px, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
              f"({platform.processor() or platform.machine()})")
    lines = [header, "", "| norm | before-pass | GN layers | seconds | mean std err after |",
             "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['norm']} | {'yes' if r['measure_before'] else 'no'} | {r['layers']} | "
                     f"{r['seconds']:.1f} | {r['after_std_err']:.1e} |")
    print("\n".join(lines))
    result = {"arch": args.arch, "num_images": args.num_images, "image_size": args.image_size,
              "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "rows": rows}
    atomic_write_text(json.dumps(result, indent=2) + "\n", args.output)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
