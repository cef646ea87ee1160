"""CocoDetectionDataset accounts for every annotation it does not use: annotations of an image_id
missing from ``images`` and boxes entirely outside their image are counted in the dataset summary
(not dropped silently)."""

import logging

import torch

from gn_det.data.coco_dataset import CocoDetectionDataset
from gn_det.data.transforms import DetectionTransform, ResizeShortestEdge
from test_data_coco_dataset import H, W, _ann, write_dataset


def test_annotations_of_unknown_images_are_counted_and_named(tmp_path, caplog):
    anns = [_ann(1, 1), _ann(2, 99), _ann(3, 2), _ann(4, 98, category_id=3)]
    files = write_dataset(tmp_path, anns, num_images=2)
    with caplog.at_level(logging.INFO, logger="gn_det.data.coco_dataset"):
        ds = CocoDetectionDataset(*files, name="orphans")
    assert ds.stats.orphan_annotations == 2 and ds.stats.bad == 0
    assert len(ds) == 2 and [ds[i]["image_id"] for i in range(2)] == [1, 2]
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "2 annotation(s) name an image_id that is not in the json's images" in warning
    assert "annotation id 2 (image_id 99), 4 (image_id 98)" in warning
    assert ("orphans: kept 2 of 2 images: 0 without annotations, 0 with only crowd, 0 bad; dropped 0 annotations "
            "with a zero-width or zero-height box, 0 with a box entirely outside its image, 2 whose image_id is "
            "not in the json's images") in caplog.text


# [x, y, w, h] in a 60 x 40 image
OUTSIDE = [(70, 5, 10, 10),    # right of the image
           (-30, 5, 20, 10),   # left of it (ends at x = -10)
           (10, 45, 10, 10),   # below it
           (60, 0, 5, 5)]      # starts exactly at the right edge: zero width once clamped
PARTLY_INSIDE = (55, 35, 10, 10)  # clamped to [55, 35, 60, 40]


def test_boxes_entirely_outside_the_image_are_counted_with_the_dropped_annotations(tmp_path, caplog):
    anns = [_ann(1, 1, category_id=7)]
    anns += [_ann(10 + i, 1, category_id=3, bbox=b) for i, b in enumerate(OUTSIDE)]
    anns += [_ann(20, 1, category_id=3, bbox=PARTLY_INSIDE), _ann(21, 2, bbox=OUTSIDE[0]),
             _ann(22, 3, bbox=(10, 5, 0, 20))]  # zero width: counted as before
    files = write_dataset(tmp_path, anns, num_images=3)
    with caplog.at_level(logging.INFO, logger="gn_det.data.coco_dataset"):
        train = CocoDetectionDataset(*files, filter_empty=True, name="outside")
    assert (train.stats.outside_boxes, train.stats.degenerate_boxes, train.stats.without_annotations) == (5, 1, 2)
    assert ("outside: kept 1 of 3 images: 2 without annotations, 0 with only crowd, 0 bad; dropped 1 annotations "
            "with a zero-width or zero-height box, 5 with a box entirely outside its image, 0 whose image_id "
            "is not in the json's images") in caplog.text
    sample = train[0]["instances"]
    torch.testing.assert_close(sample["boxes"], torch.tensor([[10.0, 5, 30, 25], [55, 35, 60, 40]]))
    assert sample["labels"].tolist() == [2, 1] and sample["masks"].shape == (2, H, W)

    # without filtering (evaluation) the same annotations are dropped, and counted
    with caplog.at_level(logging.INFO, logger="gn_det.data.coco_dataset"):
        test = CocoDetectionDataset(*files, filter_empty=False, name="outside_test")
    assert test.stats.outside_boxes == 5 and len(test) == 3
    assert test[1]["instances"]["boxes"].shape == (0, 4)
    assert "outside_test: kept 3 of 3 images: empty images kept, 0 bad; dropped 1 annotations" in caplog.text

    # the transform now gets only boxes with an area: it drops none, labels stay aligned
    resized = CocoDetectionDataset(*files, transform=DetectionTransform(ResizeShortestEdge([80], 1000)))
    out = resized[0]["instances"]
    assert out["labels"].tolist() == [2, 1]
    torch.testing.assert_close(out["boxes"], torch.tensor([[20.0, 10, 60, 50], [110, 70, 120, 80]]))
