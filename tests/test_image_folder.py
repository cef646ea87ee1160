"""Loading calibration / evaluation images from a folder."""

import numpy as np
import pytest
import torch
from PIL import Image

from gn_det.data.image_folder import (IMAGENET_MEAN, IMAGENET_STD, ImageFolderError, find_images,
                                      load_image_folder)


def solid(path, rgb, size=(20, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def normalized(rgb) -> torch.Tensor:
    return (torch.tensor(rgb) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)


@pytest.fixture
def class_folder(tmp_path):
    solid(tmp_path / "cats" / "a.png", (255, 0, 0))
    solid(tmp_path / "cats" / "deep" / "b.JPG", (250, 5, 5))  # any depth, any extension case
    solid(tmp_path / "dogs" / "c.jpeg", (0, 0, 255))
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    return tmp_path


def test_finds_nested_images_and_labels_by_top_folder(class_folder):
    assert [p.name for p in find_images(class_folder)] == ["a.png", "b.JPG", "c.jpeg"]
    data = load_image_folder(class_folder, image_size=8, progress=False)
    assert data.images.shape == (3, 3, 8, 8)
    assert data.classes == ["cats", "dogs"]
    assert data.labels.tolist() == [0, 0, 1]
    # ImageNet normalization of a solid red PNG (lossless): every pixel equals the formula
    torch.testing.assert_close(data.images[0], normalized((255, 0, 0))[:, None, None].expand(3, 8, 8))


def test_flat_folder_has_no_labels(tmp_path):
    solid(tmp_path / "x.png", (10, 20, 30))
    data = load_image_folder(tmp_path, image_size=4, progress=False)
    assert data.labels is None and data.classes == []


def test_resize_shorter_side_then_center_crop(tmp_path):
    # 60x30 image: black side bands of 15 px, white middle 30 px
    pixels = np.zeros((30, 60, 3), np.uint8)
    pixels[:, 15:45] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    data = load_image_folder(tmp_path, image_size=30, resize_size=30, progress=False)
    torch.testing.assert_close(data.images[0], normalized((255, 255, 255))[:, None, None].expand(3, 30, 30))
    # a larger resize keeps the crop inside the white band too, the default ratio is 256/224
    data = load_image_folder(tmp_path, image_size=14, progress=False)  # shorter side -> 16
    assert data.images.shape == (1, 3, 14, 14)
    assert torch.allclose(data.images[0], normalized((255, 255, 255))[:, None, None].expand(3, 14, 14))


def test_count_and_seeded_choice(class_folder):
    first = load_image_folder(class_folder, 2, image_size=4, seed=3, progress=False)
    again = load_image_folder(class_folder, 2, image_size=4, seed=3, progress=False)
    assert len(first.images) == 2 and first.paths == again.paths
    orders = {tuple(load_image_folder(class_folder, 3, image_size=4, seed=s, progress=False).paths)
              for s in range(6)}
    assert len(orders) > 1  # the seed shuffles
    with pytest.warns(UserWarning, match="only 3 readable"):
        assert len(load_image_folder(class_folder, 10, image_size=4, progress=False).images) == 3


def test_corrupt_images_are_counted_skipped_and_replaced(class_folder):
    (class_folder / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    good = (class_folder / "dogs" / "truncated.jpg")
    solid(good, (0, 255, 0), size=(64, 64))
    good.write_bytes(good.read_bytes()[:200])
    with pytest.warns(UserWarning, match=r"Skipped 2 unreadable.*broken.png"):
        data = load_image_folder(class_folder, image_size=4, progress=False)
    assert data.num_skipped == 2 and len(data.images) == 3
    assert [p.name for p in data.paths] == ["a.png", "b.JPG", "c.jpeg"]
    # a requested count is met by taking the next readable file instead of the broken one
    with pytest.warns(UserWarning, match="Skipped 1 unreadable"):
        data = load_image_folder(class_folder, 3, image_size=4, progress=False)
    assert [p.name for p in data.paths] == ["a.png", "b.JPG", "c.jpeg"] and data.num_skipped == 1


def test_missing_empty_or_unreadable_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ImageFolderError, match="does not exist"):
        load_image_folder(tmp_path / "nope", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageFolderError, match="holds no .jpg"):
        load_image_folder(tmp_path / "empty", progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning), pytest.raises(ImageFolderError, match="None of the 1 image files"):
        load_image_folder(tmp_path / "bad", progress=False)
