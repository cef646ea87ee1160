"""The generated classification set: deterministic, balanced, learnable, writable as ImageFolder."""

import pytest
import torch

from gn_det.data.image_folder import IMAGENET_MEAN, IMAGENET_STD, load_image_folder
from gn_det.data.synthetic_classification import (SYNTHETIC_CLASSES, make_synthetic_classification,
                                                  write_image_folder)


def test_shapes_labels_and_balance():
    images, labels = make_synthetic_classification(3, image_size=24, seed=0)
    assert images.shape == (30, 3, 24, 24) and images.dtype == torch.uint8
    assert labels.tolist() == [i % 10 for i in range(30)]
    assert torch.bincount(labels).tolist() == [3] * 10
    images, labels = make_synthetic_classification(2, image_size=16, num_classes=4)
    assert images.shape == (8, 3, 16, 16) and set(labels.tolist()) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="num_classes"):
        make_synthetic_classification(2, num_classes=11)


def test_deterministic_by_seed_and_extends():
    a, _ = make_synthetic_classification(2, image_size=20, seed=5)
    b, _ = make_synthetic_classification(2, image_size=20, seed=5)
    c, _ = make_synthetic_classification(2, image_size=20, seed=6)
    longer, _ = make_synthetic_classification(4, image_size=20, seed=5)
    assert torch.equal(a, b)
    assert (a.float() - c.float()).abs().mean() > 20  # another seed: other images
    assert torch.equal(longer[:20], a)  # image i depends on (seed, i) only
    # no two images are alike (random colours, placement, noise)
    flat = a.flatten(1).float()
    assert torch.cdist(flat, flat).add(torch.eye(len(a)) * 1e9).min() > 100


def test_classes_are_separable_by_nearest_centroid_on_simple_features():
    """Shape/texture classes differ in structure, not colour: grey-level gradient energy
    statistics separate them at least twice as well as chance (10%)."""
    def feats(x):
        g = x.float().mean(1)
        gx, gy = (g[:, :, 1:] - g[:, :, :-1]).abs(), (g[:, 1:] - g[:, :-1]).abs()
        edges = torch.stack([gx.mean((1, 2)), gy.mean((1, 2)), (gx > 30).float().mean((1, 2)),
                             (gy > 30).float().mean((1, 2))], 1)
        return (edges - edges.mean(0)) / edges.std(0)

    x, y = make_synthetic_classification(20, image_size=32, seed=0)
    xt, yt = make_synthetic_classification(10, image_size=32, seed=1)
    f, ft = feats(torch.cat([x, xt])).split([len(x), len(xt)])
    centroids = torch.stack([f[y == k].mean(0) for k in range(10)])
    acc = (torch.cdist(ft, centroids).argmin(1) == yt).float().mean()
    assert acc > 0.2


def test_written_folder_loads_back_exactly(tmp_path):
    images, labels = make_synthetic_classification(2, image_size=16, seed=1)
    paths = write_image_folder(images, labels, tmp_path)
    assert sorted(p.parent.name for p in paths) == sorted(SYNTHETIC_CLASSES * 2)
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files
    data = load_image_folder(tmp_path, image_size=16, resize_size=16, progress=False)
    assert data.classes == sorted(SYNTHETIC_CLASSES)
    by_name = {p.name: i for i, p in enumerate(paths)}
    order = [by_name[p.name] for p in data.paths]
    pixels = data.images * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    torch.testing.assert_close(pixels * 255, images[order].float(), atol=1e-3, rtol=0)  # PNG is lossless
    assert [data.classes[k] for k in data.labels] == [SYNTHETIC_CLASSES[labels[i]] for i in order]
