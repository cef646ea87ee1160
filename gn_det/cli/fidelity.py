"""Measure how close BN -> GN / GN+WS converted classifiers stay to the BN original.

For each target norm (GN, GN+WS) and each weight transfer (naive: BN gamma/beta copied;
calibrated: :func:`gn_det.convert.calibrate.calibrate` on a few images), report on held-out
images the cosine similarity of the pooled features and the top-1 agreement with the BN
network (plus top-1 accuracy when the image folder has class sub-folders matching the
classifier). Prints a markdown table and writes JSON.

Two modes, one code path after the model and image folder are chosen:

* default: generate a synthetic 10-class image set (PNG files in ImageFolder layout), train a
  small BN ResNet-18 on it for a few CPU minutes with the engine's ``Trainer`` (``TASK
  classification``: the same training step, data code and checkpoints as ``gn-det-train``), then
  measure on held-out generated images::

      python tools/fidelity.py --output output/fidelity.json

* real weights: a BN classification checkpoint (a torchvision ``.pth``, or any ResNet format the
  converter reads) loaded strictly into gn_det's ResNet, and an image folder, e.g.::

      python tools/fidelity.py --arch resnet50 --weights resnet50-0676ba61.pth \\
          --images /data/imagenet/val --output output/fidelity_r50.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

# torch and the modules that import it load in the functions that use them, after the command line
# is parsed: --help and argument errors answer at once
from gn_det.config import CfgNode, load_config
from gn_det.modeling.backbone.resnet_specs import RESNET_SPECS
from gn_det.utils.table import format_table

if TYPE_CHECKING:
    import torch
    from torch import nn

    from gn_det.modeling.backbone.resnet import ResNet

__all__ = ["main", "build_parser", "train_bn_classifier", "bn_training_config"]

_SYNTHETIC_MARKER = ".gn_det_synthetic"
_RECIPE_VERSION = 2  # bump when the generator or the training recipe changes: old trained models are stale
_TRAIN_BATCH = 32  # images per SGD step when training the synthetic-mode BN model


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/fidelity.py``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="resnet18", help=f"ResNet depth as resnetN, N in {sorted(RESNET_SPECS)}")
    p.add_argument("--weights", default=None,
                   help="BN classifier checkpoint of --arch (torchvision .pth, gn_det, detectron2 .pkl); omit to "
                        "train on synthetic images")
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
    p.add_argument("--train-per-class", type=int, default=400, help="synthetic training images per class")
    p.add_argument("--epochs", type=int, default=12, help="synthetic mode training epochs")
    p.add_argument("--retrain", action="store_true",
                   help="synthetic mode: train again even if a matching trained model is in --workdir")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def _resize_size(image_size: int) -> int:
    return round(image_size * 256 / 224)


def _depth(arch: str) -> int:
    match = re.fullmatch(r"resnet(\d+)", arch)
    if not match or int(match.group(1)) not in RESNET_SPECS:
        raise SystemExit(f"error: --arch {arch!r}: use resnetN with N in {sorted(RESNET_SPECS)} (gn_det's ResNet, "
                         f"torchvision's key names)")
    return int(match.group(1))


def bn_training_config(train_dir: str | Path, output_dir: str | Path, *, depth: int, image_size: int,
                       num_images: int, epochs: int, seed: int) -> CfgNode:
    """The ``TASK classification`` config that trains the synthetic-mode BN ResNet: SGD with Nesterov
    momentum, linear warm-up then cosine decay, mild random-resized crops (80-100% of the area: small
    shifts and zooms; the objects fill about half the image) and flips of the images in ``train_dir``
    (generated at the test resize size), ``epochs`` passes of ``_TRAIN_BATCH`` images per step, no
    evaluation, one final checkpoint in ``output_dir``."""
    from gn_det.data.synthetic_classification import SYNTHETIC_CLASSES

    iters = max(1, epochs * math.ceil(num_images / _TRAIN_BATCH))
    opts = {
        "TASK": "classification", "MODEL.RESNETS.DEPTH": depth, "MODEL.RESNETS.NORM": "BN",
        "MODEL.CLASSIFIER.NUM_CLASSES": len(SYNTHETIC_CLASSES), "INPUT.CROP_SIZE": image_size,
        "INPUT.RRC_SCALE": (0.8, 1.0), "INPUT.TEST_RESIZE": _resize_size(image_size),
        "INPUT.TEST_CROP_SIZE": image_size, "DATASETS.REGISTER": [["fidelity_train", str(train_dir)]],
        "DATASETS.TRAIN": ("fidelity_train",), "DATASETS.TEST": (), "DATALOADER.NUM_WORKERS": 0,
        "SOLVER.IMS_PER_BATCH": _TRAIN_BATCH, "SOLVER.BASE_LR": 0.05, "SOLVER.NESTEROV": True,
        "SOLVER.WEIGHT_DECAY": 5e-4, "SOLVER.LR_SCHEDULER_NAME": "WarmupCosineLR", "SOLVER.MAX_ITER": iters,
        "SOLVER.WARMUP_ITERS": max(1, iters // 10), "SOLVER.CHECKPOINT_PERIOD": iters, "SEED": seed,
        "OUTPUT_DIR": str(output_dir),
    }
    # KEY VALUE overrides as on the command line: the config checks every key and type
    return load_config(None, [v if isinstance(v, str) else repr(v) for item in opts.items() for v in item])


def train_bn_classifier(cfg) -> tuple[ResNet, float]:
    """Train the classifier ``cfg`` describes with the engine's :class:`~gn_det.engine.trainer.Trainer`
    (in this process, seeded with SEED); returns its ResNet (on the CPU, in eval mode) and the last
    training loss."""
    from gn_det.engine.setup import seed_all_rng
    from gn_det.engine.trainer import Trainer

    seed_all_rng(cfg.SEED)
    trainer = Trainer(cfg)
    trainer.train()
    return trainer.unwrapped_model.resnet.cpu().eval(), trainer.storage.history("total_loss").latest()


def _prepare_synthetic(args, image_size: int) -> tuple[nn.Module, Path]:
    """Generate train/eval image folders and train (or reuse) a BN classifier on them."""
    from gn_det.checkpoint.io import atomic_save, safe_torch_load
    from gn_det.data.classification import write_synthetic_image_folder
    from gn_det.data.synthetic_classification import SYNTHETIC_CLASSES
    from gn_det.modeling.backbone.resnet import build_resnet

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
    write_synthetic_image_folder(data_root / "eval", per_class_eval, size, args.seed + 1)

    depth = _depth(args.arch)
    meta = {"recipe": _RECIPE_VERSION, "arch": args.arch, "seed": args.seed, "image_size": image_size,
            "epochs": args.epochs, "train_per_class": args.train_per_class,
            "num_classes": len(SYNTHETIC_CLASSES)}
    ckpt_path = work / f"bn_{args.arch}.pth"
    saved = safe_torch_load(ckpt_path) if ckpt_path.exists() and not args.retrain else None
    if isinstance(saved, dict) and saved.get("meta") == meta:
        model = build_resnet(depth, "BN", num_classes=len(SYNTHETIC_CLASSES))
        model.load_state_dict(saved["model"])
        print(f"reusing trained BN model {ckpt_path} (pass --retrain to train again)")
        return model.eval(), data_root / "eval"
    train_dir = write_synthetic_image_folder(data_root / "train", args.train_per_class, size, args.seed)
    num_images = args.train_per_class * len(SYNTHETIC_CLASSES)
    cfg = bn_training_config(train_dir, work / "bn_training", depth=depth, image_size=image_size,
                             num_images=num_images, epochs=args.epochs, seed=args.seed)
    start = time.perf_counter()
    model, loss = train_bn_classifier(cfg)
    print(f"trained BN {args.arch} on {num_images} synthetic images ({cfg.SOLVER.MAX_ITER} iterations of "
          f"{_TRAIN_BATCH}): last loss {loss:.3f}, {time.perf_counter() - start:.0f} s")
    atomic_save({"model": model.state_dict(), "meta": meta}, ckpt_path)
    return model, data_root / "eval"


def _load_weights(args) -> nn.Module:
    """Build gn_det's BN ``--arch`` and load ``--weights`` into it; any key or shape mismatch is an error."""
    from gn_det.checkpoint.formats import load_raw, parse_checkpoint
    from gn_det.checkpoint.io import CheckpointError
    from gn_det.checkpoint.loading import load_into_model
    from gn_det.modeling.backbone.resnet import build_resnet

    depth = _depth(args.arch)
    ckpt = parse_checkpoint(load_raw(args.weights), args.weights)
    if ckpt.meta.get("norm") not in ("BN", "FrozenBN"):
        raise CheckpointError(f"{args.weights} holds {ckpt.meta.get('norm')} weights; the fidelity of a conversion "
                              f"is measured from a BN network")
    fc_weight = ckpt.state_dict.get(f"{args.classifier}.weight")
    num_classes = fc_weight.shape[0] if fc_weight is not None else 1000
    stride_in_1x1 = bool(ckpt.meta.get("stride_in_1x1"))
    model = build_resnet(depth, "BN", num_classes=num_classes, stride_in_1x1=stride_in_1x1)
    own = model.state_dict()
    missing = [k for k in own if k not in ckpt.state_dict and not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"{args.weights} does not fit gn_det's {args.arch}: {len(missing)} of its tensors are "
                              f"not in the file (e.g. {missing[:3]}); pass the --arch the weights were trained as")
    report = load_into_model(model, ckpt, stride_in_1x1=stride_in_1x1)
    if report.unused:
        raise CheckpointError(f"{args.weights} does not fit gn_det's {args.arch}: {len(report.unused)} of its "
                              f"entries are not in the model (e.g. {report.unused[:3]}); pass the --arch the "
                              f"weights were trained as")
    return model.eval()


def _measure(model: nn.Module, calib: torch.Tensor, heldout: torch.Tensor, labels: torch.Tensor | None,
             args, progress: bool) -> list[dict]:
    """One row per (norm, transfer): fidelity of the converted network on the held-out images."""
    from gn_det.convert.calibrate import calibrate
    from gn_det.convert.fidelity import compare_to_reference, extract_features
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
    import torch

    from gn_det.checkpoint.io import CheckpointError, atomic_write_text
    from gn_det.convert.calibrate import CalibrationError
    from gn_det.data.image_folder import ImageFolderError, load_image_folder

    torch.manual_seed(args.seed)
    try:
        if args.weights:
            model, image_dir = _load_weights(args), Path(args.images)
        else:
            model, image_dir = _prepare_synthetic(args, image_size)
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
