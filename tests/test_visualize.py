"""Drawing predictions on images: tensors in, PNG files out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gn_det.cli.visualize import main
from gn_det.utils.visualizer import draw_predictions
from gn_det.data.synthetic_coco import generate_synthetic_coco

# pycocotools' own mask decoding warns under numpy 2; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _noise_image(h=60, w=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def test_draw_predictions_changes_box_and_mask_pixels_only():
    image = _noise_image()
    mask = torch.zeros(1, 60, 80, dtype=torch.bool)
    mask[0, 20:30, 30:45] = True
    out = draw_predictions(image, torch.tensor([[10.0, 15.0, 50.0, 40.0]]), ["square"],
                           torch.tensor([0.9]), mask)
    assert out.shape == image.shape and out.dtype == torch.uint8
    changed = (out != image).any(dim=0)
    assert changed[15, 10:51].float().mean() > 0.9  # the box's top edge
    assert changed[20:30, 30:45].all()  # the mask is tinted
    # Nothing below or left of the box (the caption may run past its right edge).
    assert not changed[42:, :].any() and not changed[:, :9].any()
    assert torch.equal(image, _noise_image())  # input untouched


def test_draw_predictions_skips_low_scores():
    image = _noise_image()
    out = draw_predictions(image, torch.tensor([[10.0, 15.0, 50.0, 40.0]]), ["square"],
                           torch.tensor([0.3]), score_threshold=0.5)
    assert torch.equal(out, image)


def test_draw_predictions_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        draw_predictions(_noise_image().float(), torch.zeros(0, 4), [])


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    json_path, image_root = generate_synthetic_coco(out, num_images=3, image_size=(64, 96), seed=3,
                                                    empty_fraction=0.0, show_progress=False)
    return json_path, image_root


def test_cli_draws_results_json_to_pngs_of_the_image_size(synthetic_set, tmp_path):
    json_path, image_root = synthetic_set
    data = json.loads(open(json_path).read())
    # Ground-truth boxes as results, boxes only so the check below is about the box outline.
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in data["annotations"] if not a["iscrowd"]]
    results_file = tmp_path / "coco_instances_results.json"
    results_file.write_text(json.dumps(results))
    out_dir = tmp_path / "vis"
    assert main(["--results", str(results_file), "--json", json_path, "--image-root", image_root,
                 "--output", str(out_dir), "--num-images", "2", "--no-masks"]) == 0

    first = sorted(data["images"], key=lambda im: im["id"])[0]
    stem = first["file_name"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
    drawn = np.asarray(Image.open(out_dir / f"{stem}.png").convert("RGB")).astype(int)
    source = np.asarray(Image.open(f"{image_root}/{first['file_name']}").convert("RGB")).astype(int)
    assert drawn.shape == source.shape == (64, 96, 3)
    assert len(list(out_dir.glob("*.png"))) == 2
    box = next(r["bbox"] for r in results if r["image_id"] == first["id"])
    x0, y0, x1 = int(box[0]) + 1, int(box[1]) + 1, int(box[0] + box[2]) - 1
    assert (np.abs(drawn[y0, x0:x1] - source[y0, x0:x1]).sum(axis=1) > 0).mean() > 0.8  # top edge


def test_cli_show_gt_puts_ground_truth_beside_predictions(synthetic_set, tmp_path):
    json_path, image_root = synthetic_set
    results_file = tmp_path / "empty.json"
    results_file.write_text("[]")
    out_dir = tmp_path / "vis"
    main(["--results", str(results_file), "--json", json_path, "--image-root", image_root,
          "--output", str(out_dir), "--num-images", "1", "--show-gt"])
    (png,) = out_dir.glob("*.png")
    assert Image.open(png).size == (2 * 96 + 4, 64)


def test_cli_bad_results_file_is_a_clear_error(synthetic_set, tmp_path):
    json_path, image_root = synthetic_set
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(SystemExit, match="bad.json is not valid JSON"):
        main(["--results", str(bad), "--json", json_path, "--image-root", image_root, "--output", str(tmp_path)])


def test_cli_runs_a_checkpoint_on_the_images(synthetic_set, tmp_path, monkeypatch):
    from gn_det.config import load_config
    from gn_det.modeling.mask_rcnn import build_mask_rcnn

    monkeypatch.setenv("GN_DET_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    config = str(Path(__file__).resolve().parents[1] / "configs/synthetic/mask_rcnn_R_18_FPN_test.yaml")
    weights = tmp_path / "model.pth"
    torch.save({"model": build_mask_rcnn(load_config(config)).state_dict()}, weights)
    json_path, image_root = synthetic_set
    out_dir = tmp_path / "vis"
    # Score threshold 0 so the untrained model still outputs (and draws) detections.
    assert main(["--config-file", config, "--weights", str(weights), "--json", json_path,
                 "--image-root", image_root, "--output", str(out_dir), "--num-images", "1",
                 "--threshold", "0", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]) == 0
    (png,) = out_dir.glob("*.png")
    drawn = np.asarray(Image.open(png).convert("RGB"))
    source = np.asarray(Image.open(f"{image_root}/{png.stem}.jpg").convert("RGB"))
    assert drawn.shape == source.shape
    assert (drawn != source).any(axis=2).mean() > 0.01  # detections were drawn
