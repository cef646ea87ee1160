"""Draw detections (boxes, masks, class names, scores) on images and save them as PNG.

Two sources of predictions:

- a COCO results json, such as ``coco_instances_results.json`` written by the evaluator::

      python tools/visualize.py --config-file configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml \\
          --results output/inference/<dataset>/coco_instances_results.json --output output/vis

- a trained model, run on the first images of a dataset::

      python tools/visualize.py --config-file configs/synthetic/mask_rcnn_R_18_FPN_gn_demo.yaml \\
          --weights output/model_final.pth --output output/vis --num-images 8

The images come from a registered dataset (``--dataset``; default the config's
DATASETS.TEST[0]) or a COCO json and its image folder (``--json``, ``--image-root``).
``--show-gt`` puts the ground truth to the left of the predictions.
"""

from __future__ import annotations

import argparse
import colorsys
import inspect
import json
import logging
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks
from tqdm import tqdm

from gn_det.data.coco_dataset import decode_segmentation, load_coco_json

__all__ = ["draw_predictions", "class_colors", "draw_coco_annotations", "save_png", "main"]

logger = logging.getLogger(__name__)
# torchvision >= 0.20 can draw captions on a filled background.
_HAS_FILLED_LABELS = "fill_labels" in inspect.signature(draw_bounding_boxes).parameters


def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """``num_classes`` well-separated RGB colours (golden-ratio hues), the same on every call."""
    colors = []
    for k in range(num_classes):
        r, g, b = colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 0.85, 0.95)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def draw_predictions(image: torch.Tensor, boxes: torch.Tensor, labels: Sequence[str],
                     scores: torch.Tensor | None = None, masks: torch.Tensor | None = None,
                     colors: Sequence[tuple[int, int, int]] | None = None, score_threshold: float = 0.5,
                     mask_alpha: float = 0.45, box_width: int = 2) -> torch.Tensor:
    """Draw instances on an image.

    Args:
        image: uint8 tensor (3, H, W).
        boxes: (N, 4) boxes, xyxy in the image's pixels.
        labels: N caption names (class names).
        scores: (N,) confidences, or None for ground truth (always drawn, no score in the caption).
        masks: (N, H, W) binary masks, or None.
        colors: N RGB colours, one per instance; default: one per distinct label.
        score_threshold: instances scoring below it are not drawn.
        mask_alpha: mask opacity.
        box_width: box line width in pixels.

    Returns:
        A new uint8 tensor (3, H, W); ``image`` is not modified.
    """
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be a uint8 (3, H, W) tensor, got {image.dtype} {tuple(image.shape)}")
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if colors is None:
        palette = class_colors(max(len(set(labels)), 1))
        index = {name: i for i, name in enumerate(dict.fromkeys(labels))}
        colors = [palette[index[name]] for name in labels]
    keep = list(range(len(boxes)))
    captions = list(labels)
    if scores is not None:
        scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
        keep = [i for i in keep if scores[i] >= score_threshold]
        captions = [f"{name} {float(s):.2f}" for name, s in zip(labels, scores)]
    if not keep:
        return image.clone()
    # Lowest score first, so the most confident instance ends up on top.
    if scores is not None:
        keep.sort(key=lambda i: float(scores[i]))
    kept_colors = [tuple(colors[i]) for i in keep]
    out = image
    if masks is not None:
        m = torch.as_tensor(masks)[keep].bool()
        if m.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"masks are {tuple(m.shape[-2:])} but the image is {tuple(image.shape[-2:])}")
        out = draw_segmentation_masks(out, m, alpha=mask_alpha, colors=kept_colors)
    caption_style = {}
    if _HAS_FILLED_LABELS:  # readable captions: black text on the box colour
        caption_style = {"fill_labels": True, "label_colors": "black"}
    return draw_bounding_boxes(out, boxes[keep], labels=[captions[i] for i in keep], colors=kept_colors,
                               width=box_width, **caption_style)


def draw_coco_annotations(image: torch.Tensor, annotations: Sequence[Mapping[str, Any]],
                          category_names: Mapping[int, str], score_threshold: float = 0.5,
                          show_masks: bool = True) -> torch.Tensor:
    """Draw COCO-format annotations or results (bbox xywh, category_id, optional score/segmentation).

    Colours follow the category, so one class has one colour in every image.
    """
    h, w = image.shape[-2:]
    cat_ids = sorted(category_names)
    palette = dict(zip(cat_ids, class_colors(len(cat_ids))))
    # Drop low scores before decoding masks: result files hold up to 100 detections per image.
    anns = [a for a in annotations if a["category_id"] in category_names and a.get("score", 1.0) >= score_threshold]
    boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], dtype=torch.float32).reshape(-1, 4)
    scores = torch.tensor([a["score"] for a in anns]) if anns and "score" in anns[0] else None
    masks = None
    if show_masks and anns and all("segmentation" in a for a in anns):
        masks = torch.from_numpy(np.stack([decode_segmentation(a["segmentation"], h, w) for a in anns]).astype(bool))
    return draw_predictions(image, boxes, [category_names[a["category_id"]] for a in anns], scores, masks,
                            colors=[palette[a["category_id"]] for a in anns], score_threshold=score_threshold)


def save_png(image: torch.Tensor, path: str) -> None:
    """Write a uint8 (3, H, W) tensor as PNG, atomically."""
    from gn_det.checkpoint.io import atomic_write_file

    pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    atomic_write_file(path, lambda f: pil.save(f, format="PNG"))


def _read_image(path: str) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"Image not found: {path} (check --image-root / the dataset's image folder)") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"Cannot read image {path}: {e}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


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
    from gn_det.evaluation.coco_evaluation import COCODatasetInfo, instances_to_coco_results
    from gn_det.modeling.detection_task import DetectionTask

    task = DetectionTask()
    model = task.build_model(cfg)
    task.load_weights(model, weights)
    model.eval()
    info = COCODatasetInfo.from_dataset_name(dataset_name, cfg)
    wanted = set(image_ids)
    results: list[dict] = []
    with torch.no_grad(), tqdm(total=len(wanted), desc="predict", unit="img") as bar:
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
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.weights and not args.config_file:
        raise SystemExit("--weights needs --config-file, the config the model was trained with")
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
    for image_id in tqdm(image_ids, desc="draw", unit="img"):
        info = coco.imgs[image_id]
        image = _read_image(os.path.join(image_root, info["file_name"]))
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
