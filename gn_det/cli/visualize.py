"""Draw detections (boxes, masks, class names, scores) on images and save them as PNG.

Two sources of predictions:

- a COCO results json, such as ``coco_instances_results.json`` written by the evaluator::

      python tools/visualize.py --config-file configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml \\
          --results output/mask_rcnn_R_18_FPN_gn_demo/inference/synthetic_val/coco_instances_results.json \\
          --output output/vis

- a trained model, run on the first images of a dataset::

      python tools/visualize.py --config-file configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml \\
          --weights output/mask_rcnn_R_18_FPN_gn_demo/model_final.pth --output output/vis --num-images 8

  (both files are written by the quick start, ``gn-det-train --config-file`` that config). For your
  own images, without a dataset, use ``gn-det-demo`` (``tools/demo.py``).

The images come from a registered dataset (``--dataset``; default the config's
DATASETS.TEST[0]) or a COCO json and its image folder (``--json``, ``--image-root``).
``--show-gt`` puts the ground truth to the left of the predictions.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Sequence

# torch, pycocotools and the modules that import them load after the command line is parsed:
# --help and argument errors answer at once
from gn_det import tasks  # noqa: F401  (registers the built-in tasks)
from gn_det.utils.progress import progress_bar

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _load_cfg(args):
    """The config of --config-file plus overrides (None without --config-file)."""
    if not args.config_file:
        if args.opts:
            raise SystemExit(f"KEY VALUE overrides {args.opts} need --config-file")
        return None
    from gn_det.config import load_config

    return load_config(args.config_file, args.opts)


def _resolve_dataset(args, cfg) -> tuple[str, str, str]:
    """(dataset name, json file, image root) from --json/--image-root, --dataset or DATASETS.TEST[0].

    A bare json is registered under a name of its own, so the test loader can read it too.
    """
    from gn_det.data import get_dataset_metadata, register_coco_instances

    if args.json:
        if not args.image_root:
            raise SystemExit("--json needs --image-root, the folder its file_name entries are relative to")
        name = f"visualize:{os.path.abspath(args.json)}"
        register_coco_instances(name, args.json, args.image_root)
        return name, args.json, args.image_root
    name = args.dataset or (cfg.DATASETS.TEST[0] if cfg is not None and cfg.DATASETS.TEST else None)
    if not name:
        raise SystemExit("Name the images' dataset: --dataset NAME (with --config-file for the config's "
                         "DATASETS.SYNTHETIC/REGISTER sets), or --json FILE --image-root DIR")
    meta = get_dataset_metadata(name, cfg)
    return name, str(meta.json_file), str(args.image_root or meta.image_root)


def _predict_with_model(cfg, weights: str, dataset_name: str, image_ids: Sequence[int]) -> list[dict]:
    """Run the configured model with ``weights`` on images ``image_ids``; COCO-format results."""
    import torch

    from gn_det.checkpoint.io import CheckpointError
    from gn_det.engine.task import get_task
    from gn_det.engine.trainer import load_model_weights
    from gn_det.evaluation.coco_evaluation import COCODatasetInfo, instances_to_coco_results

    task = get_task(cfg.TASK)
    model = task.build_model(cfg)
    try:  # the same loading path (and policy) as training and --eval-only
        load_model_weights(cfg, model, weights, task)
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None  # a user error, as gn-det-train's
    model.eval()
    info = COCODatasetInfo.from_dataset_name(dataset_name, cfg)
    wanted = set(image_ids)
    results: list[dict] = []
    with torch.no_grad(), progress_bar(total=len(wanted), desc="predict", unit="img") as bar:
        for batch in task.build_test_loader(cfg, dataset_name):
            batch = [x for x in batch if int(x["image_id"]) in wanted]
            if not batch:
                continue
            for x, out in zip(batch, model(batch)):
                results += instances_to_coco_results(out, int(x["image_id"]), info.label_to_category_id)
                wanted.discard(int(x["image_id"]))
                bar.update(1)
            if not wanted:
                break
    return results


def _read_results(path: str) -> list[dict]:
    try:
        with open(path) as f:
            results = json.load(f)
    except FileNotFoundError:
        raise SystemExit(f"Results file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path} is not valid JSON: {e}") from None
    if not isinstance(results, list) or not all(isinstance(r, dict) and {"image_id", "category_id", "bbox"}
                                                <= r.keys() for r in results):
        raise SystemExit(f"{path} is not a COCO results list ([{{image_id, category_id, bbox, score}}, ...])")
    return results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--results", help="COCO results json (e.g. coco_instances_results.json)")
    src.add_argument("--weights", help="model checkpoint to run on the images (needs --config-file)")
    p.add_argument("--config-file", help="config: the model to build with --weights; registers its "
                                         "DATASETS.SYNTHETIC/REGISTER sets; default dataset DATASETS.TEST[0]")
    p.add_argument("--dataset", help="registered dataset name")
    p.add_argument("--json", help="COCO json of the images (instead of --dataset)")
    p.add_argument("--image-root", help="folder the json's file_name entries are relative to")
    p.add_argument("--output", required=True, help="folder for the PNG files")
    p.add_argument("--num-images", type=int, default=8, help="how many images to draw (default 8)")
    p.add_argument("--image-ids", type=int, nargs="*", help="draw these image ids instead")
    p.add_argument("--threshold", type=float, default=0.5, help="minimum score drawn (default 0.5)")
    p.add_argument("--no-masks", action="store_true", help="draw boxes only")
    p.add_argument("--show-gt", action="store_true", help="ground truth to the left of the predictions")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides (with --config-file)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.weights and not args.config_file:
        raise SystemExit("--weights needs --config-file, the config the model was trained with")
    if args.weights and not os.path.exists(args.weights):  # before a dataset is read or generated
        parser.exit(2, f"{parser.prog}: error: --weights {args.weights!r}: no such file; give the "
                       f"model_final.pth a training run wrote into its OUTPUT_DIR\n")
    import torch

    from gn_det.data.coco_dataset import load_coco_json
    from gn_det.utils.image_io import ImageReadError, read_image
    from gn_det.utils.visualizer import draw_coco_annotations, save_png

    cfg = _load_cfg(args)
    dataset_name, json_file, image_root = _resolve_dataset(args, cfg)
    coco = load_coco_json(json_file)
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    image_ids = args.image_ids or sorted(coco.getImgIds())[: args.num_images]
    missing = [i for i in image_ids if i not in coco.imgs]
    if missing:
        raise SystemExit(f"Image ids {missing} are not in {json_file}")

    if args.results:
        results = _read_results(args.results)
    else:
        results = _predict_with_model(cfg, args.weights, dataset_name, image_ids)
    unknown = sum(r["category_id"] not in names for r in results)
    if unknown:
        logger.warning("%d of %d results have a category id that is not in %s: not drawn (wrong dataset?)",
                       unknown, len(results), json_file)
    by_image: dict[int, list[dict]] = {}
    for r in results:
        by_image.setdefault(int(r["image_id"]), []).append(r)

    os.makedirs(args.output, exist_ok=True)
    for image_id in progress_bar(image_ids, desc="draw", unit="img"):
        info = coco.imgs[image_id]
        try:
            image = read_image(os.path.join(image_root, info["file_name"]))
        except ImageReadError as e:
            raise SystemExit(f"error: {e} (check --image-root / the dataset's image folder)") from None
        drawn = draw_coco_annotations(image, by_image.get(image_id, []), names, args.threshold,
                                      show_masks=not args.no_masks)
        if args.show_gt:
            gt = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if not a.get("iscrowd", 0)]
            gt_drawn = draw_coco_annotations(image, gt, names, show_masks=not args.no_masks)
            gap = torch.full((3, image.shape[1], 4), 255, dtype=torch.uint8)
            drawn = torch.cat([gt_drawn, gap, drawn], dim=2)
        stem = os.path.splitext(os.path.basename(info["file_name"]))[0]
        save_png(drawn, os.path.join(args.output, f"{stem}.png"))
    logger.info("Wrote %d images to %s", len(image_ids), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
