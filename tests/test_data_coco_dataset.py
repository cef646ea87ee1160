"""CocoDetectionDataset: mask formats, crowd handling, empty-image filtering, bad input."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from gn_det.data.coco_dataset import CocoDetectionDataset, DatasetError, SkippedSample
from gn_det.data.synthetic_coco import _encode_rle

H, W = 40, 60
# A square polygon and the same square as compressed and uncompressed RLE.
SQUARE = [10.0, 5.0, 30.0, 5.0, 30.0, 25.0, 10.0, 25.0]


def _square_mask():
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([SQUARE], H, W))).astype(bool)


def _ann(ann_id, image_id, category_id=7, segmentation=None, bbox=(10, 5, 20, 20), iscrowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": iscrowd,
            "bbox": list(bbox), "area": 400.0,
            "segmentation": [list(SQUARE)] if segmentation is None else segmentation}


def write_dataset(root, annotations, num_images=4, categories=((7, "cat"), (3, "dog"))):
    """num_images JPEGs of H x W (ids 1..num_images) and a json with ``annotations``."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(1, num_images + 1):
        name = f"{i}.jpg"
        Image.fromarray(np.full((H, W, 3), 20 * i, np.uint8)).save(root / "img" / name)
        images.append({"id": i, "file_name": name, "height": H, "width": W})
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": c, "name": n} for c, n in categories]}
    (root / "ann.json").write_text(json.dumps(data))
    return str(root / "ann.json"), str(root / "img")


def test_polygon_and_both_rle_forms_give_the_same_mask(tmp_path):
    square = _square_mask()
    compressed = _encode_rle(square, compressed=True)
    uncompressed = _encode_rle(square, compressed=False)
    anns = [_ann(1, 1), _ann(2, 2, segmentation=compressed), _ann(3, 3, segmentation=uncompressed)]
    ds = CocoDetectionDataset(*write_dataset(tmp_path, anns, num_images=3))
    masks = [ds[i]["instances"]["masks"] for i in range(3)]
    for m in masks:
        assert m.shape == (1, H, W) and m.dtype == torch.uint8
        np.testing.assert_array_equal(m[0].numpy().astype(bool), square)


def test_labels_are_contiguous_by_sorted_category_id(tmp_path):
    anns = [_ann(1, 1, category_id=7), _ann(2, 1, category_id=3)]
    ds = CocoDetectionDataset(*write_dataset(tmp_path, anns, num_images=1))
    assert ds.class_names == ["dog", "cat"]  # ids 3, 7
    assert ds.label_to_category_id == {1: 3, 2: 7}
    sample = ds[0]
    assert sample["instances"]["labels"].tolist() == [2, 1]
    torch.testing.assert_close(sample["instances"]["boxes"], torch.tensor([[10.0, 5, 30, 25]] * 2))
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, H, W)
    assert (sample["height"], sample["width"], sample["image_id"]) == (H, W, 1)


def test_crowd_excluded_and_empty_images_filtered_with_counts(tmp_path, caplog):
    anns = [
        _ann(1, 1), _ann(2, 1, iscrowd=1, segmentation=_encode_rle(_square_mask(), False)),
        _ann(3, 2, iscrowd=1, segmentation=_encode_rle(_square_mask(), False)),  # only crowd
        # image 3 and 4: no annotation
    ]
    files = write_dataset(tmp_path, anns, num_images=4)
    with caplog.at_level(logging.INFO, logger="gn_det.data.coco_dataset"):
        train = CocoDetectionDataset(*files, filter_empty=True, name="tiny")
    assert "tiny: kept 1 of 4 images: 2 without annotations, 1 with only crowd, 0 bad" in caplog.text
    assert len(train) == 1 and train[0]["instances"]["labels"].tolist() == [2]
    test = CocoDetectionDataset(*files, filter_empty=False)
    assert len(test) == 4
    crowd_only = test[1]["instances"]
    assert crowd_only["boxes"].shape == (0, 4) and crowd_only["masks"].shape == (0, H, W)


@pytest.mark.parametrize(
    "bad, why",
    [
        (dict(bbox=(10, 5, 20)), "is not [x, y, width, height]"),
        (dict(category_id=99), "category_id 99 is not in"),
        (dict(segmentation=[[1.0, 2.0, 3.0, 4.0]]), "no part with >= 3 points"),
        (dict(segmentation={"size": [H + 1, W], "counts": "abc"}), "differs from the image size"),
    ],
)
def test_bad_annotation_is_an_error_naming_it_or_a_counted_skip(tmp_path, caplog, bad, why):
    files = write_dataset(tmp_path, [_ann(1, 1), _ann(42, 2, **bad)], num_images=2)
    with pytest.raises(DatasetError) as e:
        CocoDetectionDataset(*files)
    assert "annotation id 42" in str(e.value) and "'2.jpg'" in str(e.value) and why in str(e.value)
    assert "SKIP_BAD_SAMPLES" in str(e.value)
    with caplog.at_level(logging.INFO, logger="gn_det.data.coco_dataset"):
        ds = CocoDetectionDataset(*files, skip_bad=True)
    assert len(ds) == 1 and ds.stats.bad == 1
    assert "kept 1 of 2 images: 0 without annotations, 0 with only crowd, 1 bad" in caplog.text


def test_zero_size_boxes_drop_the_annotation_not_the_image(tmp_path, caplog):
    # COCO train2017 has such boxes (e.g. annotation 918: bbox [296.65, 388.33, 1.03, 0.0]).
    anns = [_ann(1, 1), _ann(2, 1, bbox=(10, 5, 1.03, 0.0)), _ann(3, 2, bbox=(10, 5, 0, 20))]
    files = write_dataset(tmp_path, anns, num_images=2)
    with caplog.at_level(logging.INFO, logger="gn_det.data.coco_dataset"):
        ds = CocoDetectionDataset(*files, filter_empty=True, name="deg")
    assert ds.stats.degenerate_boxes == 2 and ds.stats.bad == 0
    assert len(ds) == 1 and ds[0]["instances"]["boxes"].shape == (1, 4)
    assert "1 without annotations" in caplog.text and "dropped 2 annotations with a zero-width" in caplog.text


def test_degenerate_polygon_parts_are_dropped_when_a_valid_part_remains(tmp_path):
    ann = _ann(1, 1, segmentation=[list(SQUARE), [1.0, 1.0, 2.0, 2.0]])
    ds = CocoDetectionDataset(*write_dataset(tmp_path, [ann], num_images=1))
    np.testing.assert_array_equal(ds[0]["instances"]["masks"][0].numpy().astype(bool), _square_mask())


def _break(tmp_path, how):
    files = write_dataset(tmp_path, [_ann(1, 1), _ann(2, 2)], num_images=2)
    path = tmp_path / "img" / "2.jpg"
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif how == "not_an_image":
        path.write_bytes(b"this is not a jpeg")
    return files, str(path)


@pytest.mark.parametrize("how", ["missing", "truncated", "not_an_image"])
def test_bad_image_is_an_error_naming_the_file_or_a_skip(tmp_path, how):
    files, path = _break(tmp_path, how)
    ds = CocoDetectionDataset(*files)
    assert ds[0]["image_id"] == 1
    with pytest.raises(DatasetError, match="file not found" if how == "missing" else "corrupt or not an image") as e:
        ds[1]
    assert path in str(e.value)
    skipped = CocoDetectionDataset(*files, skip_bad=True)[1]
    assert isinstance(skipped, SkippedSample) and skipped.file_name == path


def test_image_size_mismatch_with_json_is_an_error(tmp_path):
    files = write_dataset(tmp_path, [_ann(1, 1)], num_images=1)
    Image.fromarray(np.zeros((H, W + 2, 3), np.uint8)).save(tmp_path / "img" / "1.jpg")
    with pytest.raises(DatasetError, match=r"1\.jpg is 62x40 but the json"):
        CocoDetectionDataset(*files)[0]


def test_broken_json_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"images": [')
    with pytest.raises(DatasetError, match="broken.json is not valid json"):
        CocoDetectionDataset(str(bad), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        CocoDetectionDataset(str(tmp_path / "nowhere.json"), str(tmp_path))
