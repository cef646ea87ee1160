"""Draw detections (boxes, masks, class names, scores) on images and write them as PNG.

Library code shared by ``tools/visualize.py`` and any task that draws its outputs (detectron2
keeps the same in ``utils/visualizer.py``). Built on torchvision's ``draw_bounding_boxes`` and
``draw_segmentation_masks``.
"""

from __future__ import annotations

import colorsys
import inspect
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from .coco_mask import decode_segmentation
from .io import atomic_write_file

__all__ = ["draw_predictions", "class_colors", "draw_coco_annotations", "save_png"]

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
    pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    atomic_write_file(path, lambda f: pil.save(f, format="PNG"))
