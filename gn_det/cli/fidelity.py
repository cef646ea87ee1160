"""Measure how close BN -> GN / GN+WS converted classifiers stay to the BN original.

For each target norm (GN, GN+WS) and each weight transfer (naive: BN gamma/beta copied;
calibrated: :func:`gn_det.convert.calibrate.calibrate` on a few images), report on held-out
images the cosine similarity of the pooled features and the top-1 agreement with the BN
network (plus top-1 accuracy when the image folder has class sub-folders matching the
classifier). Prints a markdown table and writes JSON.

Two modes, one code path after the model and image folder are chosen:

* default: generate a synthetic 10-class image set (PNG files in ImageFolder layout), train a
  small BN ResNet-18 on it for a few CPU minutes, then measure on held-out generated images::

      python tools/fidelity.py --output output/fidelity.json

* real weights: a torchvision classification state dict and an image folder, e.g.::

      python tools/fidelity.py --arch resnet50 --weights resnet50-0676ba61.pth \\
          --images /data/imagenet/val --output output/fidelity_r50.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from tqdm import tqdm

from gn_det.checkpoint.io import CheckpointError, atomic_save, atomic_write_text, safe_torch_load
from gn_det.convert.calibrate import CalibrationError, calibrate
from gn_det.convert.fidelity import compare_to_reference, extract_features
from gn_det.data.image_folder import ImageFolderError, load_image_folder
from gn_det.utils.table import format_table
from gn_det.data.synthetic_classification import (SYNTHETIC_CLASSES, make_synthetic_classification,
                                                  write_image_folder)

__all__ = ["main", "build_parser", "train_classifier"]

_SYNTHETIC_MARKER = ".gn_det_synthetic"
_RECIPE_VERSION = 1  # bump when the generator or the training recipe changes: old trained models are stale


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/fidelity.py``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="resnet18", help="torchvision classification model builder name")
    p.add_argument("--weights", default=None,
                   help="torchvision state dict (.pth) of --arch; omit to train on synthetic images")
    p.add_argument("--images", default=None,
                   help="image folder (any nesting; class sub-folders give accuracy) for calibration "
                        "and held-out evaluation; required with --weights")
    p.add_argument("--norms", nargs="+", default=["GN", "GN+WS"], help="target norms to convert to")
    p.add_argument("--num-calib", type=int, default=64, help="calibration images")
    p.add_argument("--num-heldout", type=int, default=256, help="held-out evaluation images")
    p.add_argument("--image-size", type=int, default=None,
                   help="center-crop size (default 224 with --weights, 32 for synthetic)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--classifier", default="fc", help="module whose input is the pooled feature")
    p.add_argument("--seed", type=int, default=0, help="seed for image choice, generation, training")
    p.add_argument("--output", default="output/fidelity.json", help="JSON result file")
    p.add_argument("--workdir", default="output/fidelity_work",
                   help="synthetic mode: where generated images and the trained BN model go")
    p.add_argument("--train-per-class", type=int, default=200, help="synthetic training images per class")
    p.add_argument("--epochs", type=int, default=10, help="synthetic mode training epochs")
    p.add_argument("--retrain", action="store_true",
                   help="synthetic mode: train again even if a matching trained model is in --workdir")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def _resize_size(image_size: int) -> int:
    return round(image_size * 256 / 224)


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int,
                     batch_size: int = 32, lr: float = 2e-3, seed: int = 0, progress: bool = True) -> float:
    """Train ``model`` with AdamW (linear warm-up, cosine decay), random flips and small shifts;
    returns the last epoch's training accuracy. Small on purpose: it only has to make a BN network
    with real, data-driven statistics (AdamW learns this from scratch in far fewer CPU steps than SGD)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * math.ceil(len(images) / batch_size)
    warmup = max(1, steps // 10)

    def lr_factor(step: int) -> float:  # linear warm-up, then cosine to 0
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    model.train()
    correct = 0
    with tqdm(total=steps, desc="train BN model", disable=not progress) as bar:
        for _ in range(epochs):
            correct = 0
            for idx in torch.randperm(len(images), generator=gen).split(batch_size):
                x, y = _augment(images[idx], gen), labels[idx]
                out = model(x)
                loss = F.cross_entropy(out, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                correct += int((out.argmax(1) == y).sum())
                bar.set_postfix(loss=f"{loss.item():.3f}")
                bar.update(1)
    model.eval()
    return correct / len(images)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip per image, and one random shift (up to 1/16 of the side) per batch."""
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    r = max(1, x.shape[-1] // 16)
    dy, dx = torch.randint(-r, r + 1, (2,), generator=gen).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def _prepare_synthetic(args, image_size: int, progress: bool) -> tuple[nn.Module, Path]:
    """Generate train/eval image folders and train (or reuse) a BN classifier on them."""
    work = Path(args.workdir)
    data_root = work / "synthetic_images"
    if data_root.exists():
        if not (data_root / _SYNTHETIC_MARKER).exists():
            raise SystemExit(f"error: {data_root} exists but was not made by this tool; "
                             "pass another --workdir")
        shutil.rmtree(data_root)
    data_root.mkdir(parents=True)
    (data_root / _SYNTHETIC_MARKER).touch()
    size = _resize_size(image_size)  # generate at the resize size: resizing is then a no-op
    per_class_eval = math.ceil((args.num_calib + args.num_heldout) / len(SYNTHETIC_CLASSES))
    write_image_folder(*make_synthetic_classification(per_class_eval, image_size=size, seed=args.seed + 1),
                       data_root / "eval")

    meta = {"recipe": _RECIPE_VERSION, "arch": args.arch, "seed": args.seed, "image_size": image_size,
            "epochs": args.epochs, "train_per_class": args.train_per_class,
            "num_classes": len(SYNTHETIC_CLASSES)}
    ckpt_path = work / f"bn_{args.arch}.pth"
    saved = safe_torch_load(ckpt_path) if ckpt_path.exists() and not args.retrain else None
    if isinstance(saved, dict) and saved.get("meta") == meta:
        model = torchvision.models.get_model(args.arch, num_classes=len(SYNTHETIC_CLASSES))
        model.load_state_dict(saved["model"])
        print(f"reusing trained BN model {ckpt_path} (pass --retrain to train again)")
        return model.eval(), data_root / "eval"
    write_image_folder(*make_synthetic_classification(args.train_per_class, image_size=size, seed=args.seed),
                       data_root / "train")
    train = load_image_folder(data_root / "train", image_size=image_size, progress=progress)
    torch.manual_seed(args.seed)
    model = torchvision.models.get_model(args.arch, num_classes=len(SYNTHETIC_CLASSES))
    start = time.perf_counter()
    acc = train_classifier(model, train.images, train.labels, epochs=args.epochs, seed=args.seed,
                           progress=progress)
    print(f"trained BN {args.arch} on {len(train.images)} synthetic images: train acc {acc:.3f}, "
          f"{time.perf_counter() - start:.0f} s")
    atomic_save({"model": model.state_dict(), "meta": meta}, ckpt_path)
    return model.eval(), data_root / "eval"


def _load_weights(args) -> nn.Module:
    """Build ``--arch`` and load ``--weights`` into it; any key or shape mismatch is an error."""
    state = safe_torch_load(args.weights)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{args.weights} is not a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    fc_weight = state.get(f"{args.classifier}.weight")
    num_classes = fc_weight.shape[0] if fc_weight is not None else 1000
    try:
        model = torchvision.models.get_model(args.arch, weights=None, num_classes=num_classes)
    except ValueError as e:
        raise SystemExit(f"error: unknown --arch {args.arch!r} ({e})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{args.weights} does not fit torchvision {args.arch}: {e}") from None
    return model.eval()


def _measure(model: nn.Module, calib: torch.Tensor, heldout: torch.Tensor, labels: torch.Tensor | None,
             args, progress: bool) -> list[dict]:
    """One row per (norm, transfer): fidelity of the converted network on the held-out images."""
    from gn_det.convert.surgery import convert_model

    def features(net: nn.Module):
        return extract_features(net, heldout, classifier=args.classifier, batch_size=args.batch_size)

    reference = features(model)
    bn_row = compare_to_reference(reference, reference, labels)
    rows = [{"norm": "BN", "transfer": "original", **vars(bn_row), "calib_seconds": None}]
    for norm in args.norms:
        naive, _ = convert_model(copy.deepcopy(model), norm=norm)
        rows.append({"norm": norm, "transfer": "naive",
                     **vars(compare_to_reference(reference, features(naive), labels)), "calib_seconds": None})
        calibrated = copy.deepcopy(naive)
        report = calibrate(model, calibrated, calib, batch_size=args.batch_size, progress=progress)
        rows.append({"norm": norm, "transfer": "calibrated",
                     **vars(compare_to_reference(reference, features(calibrated), labels)),
                     "calib_seconds": round(report.seconds, 2), "calibration": report.to_dict()["summary"]})
    return rows


def format_fidelity_table(rows: list[dict]) -> str:
    """Markdown table of the fidelity rows."""
    keys = ["norm", "transfer", "cosine_mean", "cosine_min", "top1_agreement", "accuracy"]
    headers = ["norm", "transfer", "feature cosine (mean)", "feature cosine (min)", "top-1 agreement",
               "top-1 accuracy"]
    return format_table([[r[k] for k in keys] for r in rows], headers, float_fmt=".4f")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tools/fidelity.py``; returns the exit code."""
    args = build_parser().parse_args(argv)
    progress = not args.no_progress
    if args.num_calib <= 0 or args.num_heldout <= 0:
        raise SystemExit("error: --num-calib and --num-heldout must be positive")
    if (args.weights is None) != (args.images is None):
        raise SystemExit("error: --weights and --images go together (real-weights mode); "
                         "give both, or neither for the synthetic demo")
    image_size = args.image_size or (224 if args.weights else 32)
    torch.manual_seed(args.seed)
    try:
        if args.weights:
            model, image_dir = _load_weights(args), Path(args.images)
        else:
            model, image_dir = _prepare_synthetic(args, image_size, progress)
        data = load_image_folder(image_dir, args.num_calib + args.num_heldout, image_size=image_size,
                                 seed=args.seed, progress=progress)
        if len(data.images) <= args.num_calib:
            raise ImageFolderError(f"{image_dir} has {len(data.images)} readable images; need more than "
                                   f"--num-calib {args.num_calib} to leave held-out images")
        labels = data.labels
        num_classes = getattr(dict(model.named_modules()).get(args.classifier), "out_features", None)
        if labels is not None and len(data.classes) != num_classes:
            labels = None  # class folders do not index this classifier's outputs: no accuracy
        calib, heldout = data.images[:args.num_calib], data.images[args.num_calib:]
        heldout_labels = labels[args.num_calib:] if labels is not None else None
        rows = _measure(model, calib, heldout, heldout_labels, args, progress)
    except (ImageFolderError, CheckpointError, CalibrationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = format_fidelity_table(rows)
    print(f"\nFidelity to the BN {args.arch} on {len(heldout)} held-out images of {image_dir} "
          f"(calibrated on {len(calib)} others, {image_size} px):\n")
    print(table)
    result = {"command": " ".join(["python", "tools/fidelity.py"] + (argv if argv is not None else sys.argv[1:])),
              "arch": args.arch, "weights": args.weights, "images": str(image_dir),
              "image_size": image_size, "num_calib": len(calib), "num_heldout": len(heldout),
              "seed": args.seed, "rows": rows, "table": table}
    atomic_write_text(json.dumps(result, indent=2) + "\n", args.output)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
