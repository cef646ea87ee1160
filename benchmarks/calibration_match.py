"""What GN calibration matches, measured in float32, and how it fares on images unlike its own.

    OMP_NUM_THREADS=1 python benchmarks/calibration_match.py --out bench_out/calibration_match.json

1. Match on the calibration images. :func:`~gn_det.convert.calibrate.calibrate` reports the mismatch
   its closed form predicts (float64 arithmetic on the GN inputs' moments: ~1e-17).
   :func:`~gn_det.convert.calibrate.measure_match` runs the calibrated float32 network and the BN
   network on the same images and compares every GN layer's per-channel output mean and std with
   the BN layer's (mean absolute difference / the layer's average BN std, as in the report).
2. Fidelity on and off the calibration domain: pooled-feature cosine and top-1 agreement with the
   BN network, naive transfer vs calibrated on the domain's images vs calibrated on noise images
   (uniform RGB noise, normalized like the images), each measured on held-out domain images and on
   other noise images.

The BN network is the fidelity tool's (``tools/fidelity.py``): a ResNet-18 trained on synthetic
shape/texture images (trained once, about 5 CPU minutes, then reused from ``--workdir``), or
``--weights`` / ``--images`` as in that tool.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch

from gn_det.checkpoint.io import atomic_write_text
from gn_det.cli import fidelity as fidelity_tool
from gn_det.convert.calibrate import calibrate, measure_match
from gn_det.convert.fidelity import compare_to_reference, extract_features
from gn_det.convert.surgery import convert_model
from gn_det.data.image_folder import IMAGENET_MEAN, IMAGENET_STD, load_image_folder
from gn_det.utils.table import format_table


def _noise_images(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    raw = torch.rand(n, 3, size, size, generator=g)
    return (raw - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--norms", nargs="+", default=["GN", "GN+WS"])
    parser.add_argument("--num-calib", type=int, default=64)
    parser.add_argument("--num-heldout", type=int, default=256)
    parser.add_argument("--weights", help="BN classifier checkpoint (as tools/fidelity.py)")
    parser.add_argument("--images", help="image folder (with --weights)")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=None, help="default 224 with --weights, else 32")
    parser.add_argument("--workdir", default="output/fidelity_work", help="where the synthetic BN model is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()

    # the fidelity tool's own model and images, so the numbers sit beside the README's fidelity table
    tool_args = fidelity_tool.build_parser().parse_args(
        ["--arch", args.arch, "--workdir", args.workdir, "--seed", str(args.seed), "--num-calib",
         str(args.num_calib), "--num-heldout", str(args.num_heldout)]
        + (["--weights", args.weights, "--images", args.images] if args.weights else []))
    size = args.image_size or (224 if args.weights else 32)
    if args.weights:
        model, image_dir = fidelity_tool._load_weights(tool_args), Path(args.images)
    else:
        model, image_dir = fidelity_tool._prepare_synthetic(tool_args, size)
    data = load_image_folder(image_dir, args.num_calib + args.num_heldout, image_size=size, seed=args.seed,
                             progress=False)
    calib, heldout = data.images[:args.num_calib], data.images[args.num_calib:]
    noise = _noise_images(len(heldout), size, args.seed + 7)
    calib_sets = {"domain": calib, "noise": _noise_images(len(calib), size, args.seed + 8)}

    def features(net, images):
        return extract_features(net, images, batch_size=32)

    reference = {"held-out": features(model, heldout), "noise": features(model, noise)}
    rows, match = [], {}
    for norm in args.norms:
        naive, _ = convert_model(copy.deepcopy(model), norm=norm)
        nets = {"naive": naive}
        for calib_name, calib_images in calib_sets.items():
            calibrated = nets[f"calibrated on {calib_name}"] = copy.deepcopy(naive)
            summary = calibrate(model, calibrated, calib_images, progress=False).summary()
            measured = measure_match(model, calibrated, calib_images)
            match[f"{norm}, {calib_name}"] = {
                "closed_form_mean_err": summary["after_mean_err"], "closed_form_std_err": summary["after_std_err"],
                "float32_mean_err": sum(m for m, _ in measured.values()) / len(measured),
                "float32_std_err": sum(s for _, s in measured.values()) / len(measured),
                "float32_max_err": max(max(m, s) for m, s in measured.values()),
                "layers": len(measured)}
        for domain, images in (("held-out", heldout), ("noise", noise)):
            for transfer, net in nets.items():
                fid = compare_to_reference(reference[domain], features(net, images), None)
                rows.append({"norm": norm, "images": domain, "transfer": transfer,
                             "cosine_mean": fid.cosine_mean, "top1_agreement": fid.top1_agreement})

    match_table = format_table(
        [[n, m["layers"], m["closed_form_mean_err"], m["closed_form_std_err"], m["float32_mean_err"],
          m["float32_std_err"], m["float32_max_err"]] for n, m in match.items()],
        ["norm, calibration images", "GN layers", "report mean err", "report std err", "float32 mean err", "float32 std err",
         "float32 worst layer"], float_fmt=".1e")
    fid_table = format_table([[r["norm"], r["images"], r["transfer"], r["cosine_mean"], r["top1_agreement"]]
                              for r in rows],
                             ["norm", "images", "transfer", "feature cosine (mean)", "top-1 agreement with BN"],
                             float_fmt=".3f")
    wall = time.perf_counter() - start
    print(f"Calibration on {len(calib)} images of {image_dir} or {len(calib)} noise images ({size} px), "
          f"errors relative to the BN std, on the calibration images:\n")
    print(match_table)
    print(f"\nFidelity to BN on {len(heldout)} held-out images and {len(noise)} noise images:\n")
    print(fid_table)
    print(f"\nwall time {wall:.0f} s")
    if args.out:
        result = {"benchmark": "calibration_match", "arch": args.arch, "images": str(image_dir), "image_size": size,
                  "num_calib": len(calib), "num_heldout": len(heldout), "match": match, "fidelity": rows,
                  "torch": torch.__version__, "python": platform.python_version(), "wall_s": wall,
                  "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}
        atomic_write_text(json.dumps(result, indent=2), args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
