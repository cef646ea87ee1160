"""The synthetic COCO generator: deterministic, valid COCO, masks that match the json."""

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from gn_det.data.synthetic_coco import SHAPE_CLASSES, _encode_rle, generate_synthetic_coco

NUM_IMAGES = 40


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    json_path, image_root = generate_synthetic_coco(out, NUM_IMAGES, 96, seed=7, show_progress=False)
    return Path(json_path), Path(image_root)


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_same_seed_same_bytes_and_pixels(synthetic, tmp_path):
    json_a, root_a = synthetic
    json_b, root_b = generate_synthetic_coco(tmp_path / "b", NUM_IMAGES, 96, seed=7, show_progress=False)
    assert json_a.read_bytes() == Path(json_b).read_bytes()
    for name in ("000000.jpg", f"{NUM_IMAGES - 1:06d}.jpg"):
        np.testing.assert_array_equal(_pixels(root_a / name), _pixels(Path(root_b) / name))
    # Another seed gives another set.
    json_c, root_c = generate_synthetic_coco(tmp_path / "c", 3, 96, seed=8, show_progress=False)
    assert not np.array_equal(_pixels(root_a / "000000.jpg"), _pixels(Path(root_c) / "000000.jpg"))


def test_valid_coco_with_all_segmentation_kinds_and_crowd(synthetic):
    json_path, image_root = synthetic
    data = json.loads(json_path.read_text())
    assert len(data["images"]) == NUM_IMAGES
    assert [c["name"] for c in data["categories"]] == list(SHAPE_CLASSES)
    cat_ids = {c["id"] for c in data["categories"]}
    anns = data["annotations"]
    assert len({a["id"] for a in anns}) == len(anns)
    assert {a["category_id"] for a in anns} <= cat_ids
    kinds = {
        "polygon": [a for a in anns if isinstance(a["segmentation"], list)],
        "compressed": [a for a in anns if isinstance(a["segmentation"], dict)
                       and isinstance(a["segmentation"]["counts"], str)],
        "uncompressed": [a for a in anns if isinstance(a["segmentation"], dict)
                         and isinstance(a["segmentation"]["counts"], list)],
    }
    assert all(kinds.values()), {k: len(v) for k, v in kinds.items()}
    crowd = [a for a in anns if a["iscrowd"]]
    assert crowd and all(a in kinds["uncompressed"] for a in crowd)
    for image in data["images"]:
        with Image.open(image_root / image["file_name"]) as im:
            assert im.format == "JPEG" and im.size == (image["width"], image["height"])


def test_boxes_and_areas_are_those_of_the_masks(synthetic):
    json_path, _ = synthetic
    coco = COCO(str(json_path))
    for ann in coco.dataset["annotations"]:
        m = coco.annToMask(ann).astype(bool)
        assert m.sum() == ann["area"] > 0
        ys, xs = np.nonzero(m)
        x, y, w, h = ann["bbox"]
        # Tight box: every mask pixel inside, touching all four sides.
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)


def test_visible_masks_do_not_overlap_and_polygons_match_a_reference_rasterizer(synthetic):
    json_path, _ = synthetic
    coco = COCO(str(json_path))
    for image_id, image in coco.imgs.items():
        masks = [coco.annToMask(a).astype(bool) for a in coco.imgToAnns[image_id]]
        if masks:
            # Annotations are the visible parts: each pixel belongs to at most one instance.
            assert np.stack(masks).sum(0).max() <= 1
        for ann in coco.imgToAnns[image_id]:
            if isinstance(ann["segmentation"], list):
                # Reference: is each pixel centre inside the polygon? Agrees up to boundary pixels.
                h, w = image["height"], image["width"]
                yy, xx = np.mgrid[0:h, 0:w] + 0.5
                poly = np.asarray(ann["segmentation"][0]).reshape(-1, 2)
                ref = MplPath(poly).contains_points(np.stack([xx.ravel(), yy.ravel()], 1)).reshape(h, w)
                m = coco.annToMask(ann).astype(bool)
                assert (ref & m).sum() / (ref | m).sum() > 0.95


def test_objects_are_visible_in_the_pixels(synthetic):
    # The task must be learnable: inside an object the colour differs from just outside it.
    json_path, image_root = synthetic
    coco = COCO(str(json_path))
    contrasts = []
    for ann in coco.dataset["annotations"]:
        if ann["iscrowd"]:
            continue
        img = _pixels(image_root / coco.imgs[ann["image_id"]]["file_name"]).astype(float)
        m = coco.annToMask(ann).astype(bool)
        x, y, w, h = (int(v) for v in ann["bbox"])
        ring = np.zeros_like(m)
        ring[max(0, y - 3):y + h + 3, max(0, x - 3):x + w + 3] = True
        ring &= ~m
        allm = np.zeros_like(m)
        for other in coco.imgToAnns[ann["image_id"]]:
            allm |= coco.annToMask(other).astype(bool)
        ring &= ~allm
        if ring.sum() > 20:
            contrasts.append(np.abs(img[m].mean(0) - img[ring].mean(0)).sum())
    assert len(contrasts) > 20 and np.median(contrasts) > 60


def test_some_images_are_empty_and_one_only_crowd(synthetic):
    # Empty-image filtering has work to do: a few images without annotation, one crowd-only.
    data = json.loads(synthetic[0].read_text())
    annotated = {a["image_id"] for a in data["annotations"]}
    with_instance = {a["image_id"] for a in data["annotations"] if not a["iscrowd"]}
    without_any = len(data["images"]) - len(annotated)
    assert 1 <= without_any <= 0.1 * NUM_IMAGES
    assert len(annotated - with_instance) == 1


@pytest.mark.parametrize("first", [0, 1])
def test_uncompressed_rle_decodes_to_the_mask(first):
    rng = np.random.default_rng(first)
    m = rng.random((13, 9)) < 0.4
    m[0, 0] = bool(first)
    rle = _encode_rle(m, compressed=False)
    decoded = mask_utils.decode(mask_utils.frPyObjects(rle, 13, 9)).astype(bool)
    np.testing.assert_array_equal(decoded, m)
