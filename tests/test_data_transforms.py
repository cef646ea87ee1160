"""Detection transforms: sizes, max-size cap, sampling, boxes and masks moving with the image."""

import pytest
import torch

from gn_det.config import get_cfg
from gn_det.data.transforms import DetectionTransform, ResizeShortestEdge, build_detection_transform


def _masks_and_boxes(h, w):
    """Two rectangles as masks (N, H, W) and their exact xyxy boxes."""
    boxes = torch.tensor([[3.0, 5.0, 20.0, 30.0], [25.0, 2.0, w - 1.0, 12.0]])
    masks = torch.zeros((2, h, w), dtype=torch.uint8)
    for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
        m[y0:y1, x0:x1] = 1
    return masks, boxes


def _mask_box(m):
    ys, xs = torch.nonzero(m, as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()


@pytest.mark.parametrize("flip", [False, True])
def test_boxes_and_masks_stay_consistent_after_resize_and_flip(flip):
    h, w = 40, 64
    masks, boxes = _masks_and_boxes(h, w)
    image = torch.zeros((3, h, w), dtype=torch.uint8)
    image[0] = masks[0] * 200  # the red channel paints the first object
    t = DetectionTransform(ResizeShortestEdge([60], 1000), flip_prob=1.0 if flip else 0.0)
    out_img, out_boxes, out_masks, keep = t(image, boxes, masks, torch.Generator().manual_seed(0))
    assert out_img.shape == (3, 60, 96) and out_masks.shape == (2, 60, 96) and keep.all()
    scale = torch.tensor([1.5, 1.5, 1.5, 1.5])
    expected = boxes * scale
    if flip:
        expected = torch.stack([96 - expected[:, 2], expected[:, 1], 96 - expected[:, 0], expected[:, 3]], 1)
    torch.testing.assert_close(out_boxes.as_subclass(torch.Tensor), expected)
    for m, b in zip(out_masks, out_boxes):
        # Nearest-neighbour masks land within a pixel of the exactly scaled boxes.
        assert (_mask_box(m) - b).abs().max() <= 1.0
    # The pixels moved with the mask.
    red = out_img[0] > 100
    assert (red == out_masks[0].bool()).float().mean() > 0.97


def test_max_size_caps_the_longest_side():
    r = ResizeShortestEdge([800], max_size=1000)
    assert r.output_size(100, 400, 800) == (250, 1000)
    assert r.output_size(400, 300, 800) == (1000, 750)
    assert r.output_size(400, 300, 600) == (800, 600)
    assert ResizeShortestEdge([800], max_size=0).output_size(100, 400, 800) == (800, 3200)


def test_choice_and_range_sampling():
    g = torch.Generator().manual_seed(0)
    choice = ResizeShortestEdge([96, 128, 160], 1000)
    assert {choice.sample_length(g) for _ in range(60)} == {96, 128, 160}
    rng = ResizeShortestEdge([100, 104], 1000, sample_style="range")
    assert {rng.sample_length(g) for _ in range(100)} == set(range(100, 105))
    with pytest.raises(ValueError, match="needs \\[min, max\\]"):
        ResizeShortestEdge([1, 2, 3], 1000, sample_style="range")


def test_same_generator_seed_same_augmentation():
    masks, boxes = _masks_and_boxes(40, 64)
    image = torch.randint(0, 255, (3, 40, 64), dtype=torch.uint8)
    cfg = get_cfg("detection")
    cfg.INPUT.MIN_SIZE_TRAIN = (32, 48, 64, 80)
    t = build_detection_transform(cfg, is_train=True)
    runs = [t(image, boxes, masks, torch.Generator().manual_seed(s)) for s in (5, 5, 6, 7, 8, 9)]
    torch.testing.assert_close(runs[0][1], runs[1][1])
    assert len({(r[0].shape, float(r[1][0, 0])) for r in runs}) > 2  # seeds differ -> varied


def test_test_transform_is_single_scale_without_flip():
    cfg = get_cfg("detection")
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 50, 70
    t = build_detection_transform(cfg, is_train=False)
    masks, boxes = _masks_and_boxes(40, 64)
    image = torch.zeros((3, 40, 64), dtype=torch.uint8)
    for s in range(5):
        out_img, out_boxes, _, _ = t(image, boxes, masks, torch.Generator().manual_seed(s))
        assert out_img.shape == (3, 44, 70)  # the 70 px cap wins over the 50 px short side
        # Each axis scales by its own size ratio (rounding makes them differ slightly).
        scale = torch.tensor([70 / 64, 44 / 40, 70 / 64, 44 / 40])
        torch.testing.assert_close(out_boxes.as_subclass(torch.Tensor), boxes * scale)


def test_degenerate_boxes_are_dropped_with_keep_index():
    boxes = torch.tensor([[1.0, 1.0, 10.0, 10.0], [5.0, 5.0, 5.0, 9.0]])
    masks = torch.zeros((2, 20, 20), dtype=torch.uint8)
    t = DetectionTransform(ResizeShortestEdge([20], 100))
    _, out_boxes, out_masks, keep = t(torch.zeros((3, 20, 20), dtype=torch.uint8), boxes, masks)
    assert keep.tolist() == [True, False] and out_boxes.shape == (1, 4) and out_masks.shape[0] == 1
