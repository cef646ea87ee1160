"""Mask R-CNN from configs: heads, norms per part, training steps per norm, eval format, weights."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection.faster_rcnn import TwoMLPHead

from gn_det.checkpoint import Checkpoint, CheckpointError, make_meta, write_checkpoint
from gn_det.config import load_config
from gn_det.layers import FrozenBatchNorm, WSConv2d
from gn_det.layers.conv_norm import BATCH_NORM_TYPES
from gn_det.engine.trainer import load_model_weights
from gn_det.modeling.mask_rcnn import GNMaskRCNN, build_mask_rcnn, to_original_size
from gn_det.tasks.detection import DetectionTask

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
TEST_CFG = ROOT / "configs" / "synthetic" / "mask_rcnn_R_18_FPN_test.yaml"
NORMS = ["FrozenBN", "BN", "GN", "GN+WS", "LN", "IN", ""]
PARTS = ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM")


def _cfg(*opts, norm: str | None = None):
    overrides = list(opts)
    if norm is not None:
        for key in PARTS:
            overrides += [key, norm]
    return load_config(str(TEST_CFG), overrides)


def _model(*opts, norm: str | None = None, seed: int = 0) -> GNMaskRCNN:
    torch.manual_seed(seed)
    return build_mask_rcnn(_cfg(*opts, norm=norm))


def _batch(seed: int = 0, sizes=((80, 96), (96, 64)), objects: int = 3) -> list[dict]:
    """Images with flat-coloured rectangles on noise; boxes, labels 1..5 and masks to match."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for i, (h, w) in enumerate(sizes):
        image = torch.rand(3, h, w, generator=g) * 80
        boxes, masks = [], torch.zeros(objects, h, w, dtype=torch.uint8)
        labels = torch.randint(1, 6, (objects,), generator=g)
        for j in range(objects):
            bw, bh = (16 + torch.randint(0, 20, (2,), generator=g)).tolist()
            x0 = int(torch.randint(0, w - bw, (1,), generator=g))
            y0 = int(torch.randint(0, h - bh, (1,), generator=g))
            masks[j, y0:y0 + bh, x0:x0 + bw] = 1
            image[:, y0:y0 + bh, x0:x0 + bw] = 40.0 * labels[j]
            boxes.append([x0, y0, x0 + bw, y0 + bh])
        batch.append({"image": image, "image_id": i, "height": h, "width": w,
                      "instances": {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": labels,
                                    "masks": masks}})
    return batch


def _types(module: nn.Module) -> set[type]:
    return {type(m) for m in module.modules()}


# ---------------------------------------------------------------- heads


def test_box_head_2fc_and_4conv1fc():
    two_fc = _model("MODEL.ROI_BOX_HEAD.NUM_CONV", "0", "MODEL.ROI_BOX_HEAD.NUM_FC", "2")
    assert isinstance(two_fc.roi_heads.box_head, TwoMLPHead)
    assert two_fc.roi_heads.box_predictor.cls_score.in_features == 64  # FC_DIM
    gn = _model(norm="GN")  # the test config's head is 4conv1fc
    head = gn.roi_heads.box_head
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m for m in head.modules() if isinstance(m, nn.Linear)]
    norms = [m for m in head.modules() if isinstance(m, nn.GroupNorm)]
    assert len(convs) == 4 and len(fcs) == 1 and len(norms) == 4
    assert fcs[0].in_features == 32 * 7 * 7 and fcs[0].out_features == 64
    assert gn.roi_heads.box_predictor.cls_score.out_features == 6  # 5 classes + background
    mask_convs = [m for m in gn.roi_heads.mask_head.modules() if isinstance(m, nn.Conv2d)]
    assert len(mask_convs) == 4 and all(c.out_channels == 32 for c in mask_convs)
    assert sum(isinstance(m, nn.GroupNorm) for m in gn.roi_heads.mask_head.modules()) == 4
    with pytest.raises(ValueError, match="ROI_BOX_HEAD.NAME"):
        _model("MODEL.ROI_BOX_HEAD.NAME", "StandardROIHeads")


@pytest.mark.parametrize("norm", NORMS + ["SyncBN"])
def test_every_part_uses_the_requested_norm_and_ws_exactly_where_asked(norm):
    model = _model(norm=norm)
    expected = {"FrozenBN": FrozenBatchNorm, "BN": nn.BatchNorm2d, "SyncBN": nn.SyncBatchNorm, "GN": nn.GroupNorm,
                "LN": nn.GroupNorm, "IN": nn.GroupNorm, "": None}[norm.replace("+WS", "")]
    parts = {"body": model.backbone.body, "fpn": model.backbone.fpn, "box": model.roi_heads.box_head,
             "mask": model.roi_heads.mask_head}
    for name, part in parts.items():
        norms = [m for m in part.modules() if isinstance(m, (*BATCH_NORM_TYPES, nn.GroupNorm))]
        if expected is None:
            assert norms == [], name
        else:
            assert norms and all(type(m) is expected for m in norms), name
        convs = [m for m in part.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(isinstance(c, WSConv2d) == norm.endswith("+WS") for c in convs), name
    if norm.startswith(("GN", "LN", "IN")):
        assert not any(isinstance(m, BATCH_NORM_TYPES) for m in model.modules())
    # Convs that feed no norm are never standardized: RPN head and predictors.
    for part in (model.rpn.head, model.roi_heads.mask_predictor):
        assert not any(isinstance(m, WSConv2d) for m in part.modules())
    if norm == "SyncBN":  # SyncBN trains only inside a process group; evaluation works anywhere
        with torch.no_grad():
            out = model.eval()(_batch())
        assert len(out) == 2


def test_parts_take_independent_norms():
    model = _model("MODEL.RESNETS.NORM", "FrozenBN", "MODEL.FPN.NORM", "", "MODEL.ROI_BOX_HEAD.NORM", "GN+WS",
                   "MODEL.ROI_MASK_HEAD.NORM", "GN", "MODEL.BACKBONE.FREEZE_AT", "2")
    assert FrozenBatchNorm in _types(model.backbone.body) and nn.GroupNorm not in _types(model.backbone.body)
    assert not any(isinstance(m, (WSConv2d, nn.GroupNorm)) for m in model.backbone.fpn.modules())
    assert sum(isinstance(m, WSConv2d) for m in model.modules()) == 4  # only the box head's convs
    assert sum(isinstance(m, nn.GroupNorm) for m in model.roi_heads.mask_head.modules()) == 4
    assert not any(p.requires_grad for p in model.backbone.body.layer1.parameters())
    assert all(p.requires_grad for p in model.backbone.body.layer2.parameters())


# ---------------------------------------------------------------- training


def _train_steps(model: nn.Module, batch: list[dict], steps: int, lr: float = 0.01) -> list[float]:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    losses = []
    for _ in range(steps):
        loss_dict = model(batch)
        loss = sum(loss_dict.values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("norm", NORMS)
def test_two_training_steps_per_norm(norm):
    freeze = "2" if norm == "FrozenBN" else "0"
    model = _model("MODEL.BACKBONE.FREEZE_AT", freeze, norm=norm)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    loss_dict = model.train()(_batch())
    assert set(loss_dict) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
                              "loss_rpn_box_reg"}
    losses = _train_steps(model, _batch(), 2)
    assert all(torch.isfinite(torch.tensor(losses)))
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any(n.startswith("backbone.body.layer4") for n in changed)
    assert any(n.startswith("roi_heads.mask_head") for n in changed)


def test_gn_model_learns_one_batch():
    model = _model(norm="GN", seed=1)
    batch = _batch(seed=3)
    torch.manual_seed(0)
    start = {k: v.item() for k, v in model.train()(batch).items()}
    losses = _train_steps(model, batch, 20, lr=0.02)
    end = {k: v.item() for k, v in model(batch).items()}
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses
    # The heads learn, not only the RPN's objectness bias.
    for key in ("loss_classifier", "loss_mask", "loss_objectness"):
        assert end[key] < 0.6 * start[key], (key, start, end)


def test_training_input_errors_name_the_sample():
    model = _model().train()
    bad = _batch()
    bad[1]["instances"]["boxes"][0] = torch.tensor([10.0, 10.0, 10.0, 30.0])
    with pytest.raises(ValueError, match="image_id 1.*no area"):
        model(bad)
    no_masks = _batch()
    del no_masks[0]["instances"]["masks"]
    with pytest.raises(ValueError, match="image_id 0.*masks"):
        model(no_masks)
    with pytest.raises(TypeError, match="list of dicts"):
        model(torch.rand(2, 3, 64, 64))


# ---------------------------------------------------------------- evaluation


def test_eval_outputs_are_rescaled_to_the_original_size():
    model = _model("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", norm="GN").eval()
    batch = _batch(sizes=((80, 96),))
    with torch.no_grad():
        (same,) = model(batch)
        batch[0].update(height=160, width=288)  # loader resized a 160x288 image to 80x96
        (scaled,) = model(batch)
    assert len(same["boxes"]) > 0
    assert set(scaled) == {"boxes", "scores", "labels", "masks"}
    assert scaled["boxes"].dtype == torch.float32 and scaled["labels"].dtype == torch.int64
    assert scaled["labels"].min() >= 1 and scaled["labels"].max() <= 5
    torch.testing.assert_close(scaled["boxes"], same["boxes"] * torch.tensor([3.0, 2.0, 3.0, 2.0]))
    torch.testing.assert_close(scaled["scores"], same["scores"])
    assert scaled["masks"].shape == (len(scaled["boxes"]), 160, 288) and scaled["masks"].dtype == torch.uint8
    assert same["masks"].shape[1:] == (80, 96)
    assert set(scaled["masks"].unique().tolist()) <= {0, 1}
    assert (scaled["boxes"][:, 2] <= 288).all() and (scaled["boxes"][:, 3] <= 160).all()


def test_to_original_size_pastes_masks_inside_the_scaled_box():
    det = {"boxes": torch.tensor([[10.0, 20.0, 30.0, 40.0]]), "scores": torch.tensor([0.9]),
           "labels": torch.tensor([2]), "masks": torch.ones(1, 1, 28, 28)}
    out = to_original_size(det, (50, 60), (100, 30))  # y scaled by 2, x by 0.5
    torch.testing.assert_close(out["boxes"], torch.tensor([[5.0, 40.0, 15.0, 80.0]]))
    ys, xs = torch.nonzero(out["masks"][0], as_tuple=True)
    assert out["masks"].shape == (1, 100, 30)
    # torchvision pastes with one cell of padding around the box: edges may move by a pixel.
    for got, want in zip((ys.min(), ys.max() + 1, xs.min(), xs.max() + 1), (40, 80, 5, 15)):
        assert abs(int(got) - want) <= 1


def test_mask_off_gives_boxes_only():
    model = _model("MODEL.MASK_ON", "False", norm="GN")
    assert model.roi_heads.mask_head is None
    losses = model.train()(_batch())
    assert "loss_mask" not in losses
    with torch.no_grad():
        out = model.eval()(_batch())
    assert "masks" not in out[0]


# ---------------------------------------------------------------- MODEL.WEIGHTS


def _load(model: GNMaskRCNN, path, *opts, norm: str | None = None):
    """MODEL.WEIGHTS through the engine's one loading path, with the config the model was built from."""
    return load_model_weights(_cfg(*opts, norm=norm), model, str(path), DetectionTask())


def test_resnet_checkpoint_loads_into_backbone_and_logs_report(tmp_path, caplog):
    ref = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    model = _model(norm="FrozenBN")
    with caplog.at_level(logging.INFO, logger="gn_det.checkpoint.model_loading"):
        report = _load(model, path, norm="FrozenBN")
    body = [k for k in ref.state_dict() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    assert sorted(report.loaded) == sorted("backbone.body." + k for k in body)
    # fc and num_batches_tracked (FrozenBN has none) are unexpected; nothing in the body is missing
    unused = {"fc.bias", "fc.weight"} | {k for k in ref.state_dict() if k.endswith("num_batches_tracked")}
    assert set(report.unexpected) == unused and not report.shape_mismatched
    assert not [k for k in report.missing if k.startswith("backbone.body.")]
    n_model = len(model.state_dict())
    assert report.num_model_tensors == n_model
    assert len(report.loaded) + len(report.missing) == n_model  # each key counted exactly once
    assert f"Loaded {len(body)} of {n_model} model tensors from {path}" in caplog.text
    torch.testing.assert_close(model.backbone.body.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    torch.testing.assert_close(model.backbone.body.layer2[0].downsample[1].running_var,
                               ref.layer2[0].downsample[1].running_var)


def test_resnet_checkpoint_of_another_depth_is_refused(tmp_path):
    deeper, shallower = tmp_path / "r34.pth", tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet34().state_dict(), deeper)  # layer1 has 3 blocks, ResNet-18 2
    torch.save(torchvision.models.resnet18().state_dict(), shallower)
    model = _model(norm="FrozenBN")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"layers this model does not have \(layer1\.2\.bn1\.bias.*DEPTH"):
        _load(model, deeper, norm="FrozenBN")
    r34 = _model("MODEL.RESNETS.DEPTH", "34", norm="FrozenBN")
    with pytest.raises(CheckpointError, match=r"does not fill backbone\.body\.\* .*missing: backbone\.body\.layer1\.2"):
        _load(r34, shallower, "MODEL.RESNETS.DEPTH", "34", norm="FrozenBN")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing copied


def test_stride_placement_mismatch_is_refused(tmp_path):
    model = _model("MODEL.RESNETS.DEPTH", "50", norm="GN")
    state = {k[len("backbone.body."):]: v for k, v in model.state_dict().items() if k.startswith("backbone.body.")}
    path = tmp_path / "r50_gn_msra.pth"
    write_checkpoint(Checkpoint(state, make_meta("gn_det", "GN", stride_in_1x1=True, stride_source="test")), path)
    with pytest.raises(CheckpointError, match="STRIDE_IN_1X1"):
        _load(model, path, "MODEL.RESNETS.DEPTH", "50", norm="GN")
    matching = _model("MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STRIDE_IN_1X1", "True", norm="GN")
    report = _load(matching, path, "MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STRIDE_IN_1X1", "True", norm="GN")
    assert len(report.loaded) == len(state)


def test_detector_checkpoint_round_trip_and_missing_file(tmp_path, caplog):
    trained = _model(norm="GN", seed=1)
    path = tmp_path / "model_final.pth"
    torch.save({"model": trained.state_dict(), "iteration": 7}, path)
    fresh = _model("MODEL.ROI_HEADS.NUM_CLASSES", "3", norm="GN", seed=2)
    with caplog.at_level(logging.WARNING):
        report = _load(fresh, path, "MODEL.ROI_HEADS.NUM_CLASSES", "3", norm="GN")
    own = trained.state_dict()
    for k, v in fresh.state_dict().items():
        if "predictor" not in k:
            assert torch.equal(v, own[k]), k
    # other NUM_CLASSES: the 6 predictor tensors are skipped, counted once, and nothing else is off
    mismatched = sorted(k for k, _, _ in report.shape_mismatched)
    per_class = ("cls_score", "bbox_pred", "mask_fcn_logits")
    assert mismatched == sorted(k for k in own if k.startswith("roi_heads.") and any(p in k for p in per_class))
    assert len(mismatched) == 6
    assert not report.missing and not report.unexpected
    assert len(report.loaded) == len(own) - 6
    assert "6 tensors skipped for their shape" in caplog.text
    assert "roi_heads.box_predictor.cls_score.weight: file (6, 64) vs model (4, 64)" in caplog.text
    with pytest.raises(FileNotFoundError, match="no_such.pth"):
        _load(fresh, tmp_path / "no_such.pth", norm="GN")


def test_checkpoint_that_misses_the_backbone_is_refused_unless_allowed(tmp_path):
    trained = _model(norm="GN", seed=1)
    heads_only = {k: v for k, v in trained.state_dict().items() if not k.startswith("backbone.")}
    path = tmp_path / "heads.pth"
    torch.save({"model": heads_only}, path)
    with pytest.raises(CheckpointError, match=r"no tensor to the model's backbone .*WEIGHTS_ALLOW_EMPTY_PARTS"):
        _load(_model(norm="GN"), path, norm="GN")
    fresh = _model(norm="GN", seed=3)
    report = _load(fresh, path, "MODEL.WEIGHTS_ALLOW_EMPTY_PARTS", "['backbone']", norm="GN")
    assert len(report.loaded) == len(heads_only)
    torch.testing.assert_close(fresh.rpn.head.cls_logits.weight, trained.rpn.head.cls_logits.weight)
    assert not torch.equal(fresh.backbone.body.conv1.weight, trained.backbone.body.conv1.weight)  # left at init


# ------------------------------------------------------------- INPUT.FORMAT, META_ARCHITECTURE


def test_bgr_input_format_reverses_channels_before_normalizing():
    rgb = _model("MODEL.PIXEL_MEAN", "[100.0, 110.0, 120.0]", "MODEL.PIXEL_STD", "[50.0, 60.0, 70.0]", norm="GN")
    bgr = _model("INPUT.FORMAT", "BGR", "MODEL.PIXEL_MEAN", "[120.0, 110.0, 100.0]",
                 "MODEL.PIXEL_STD", "[70.0, 60.0, 50.0]", norm="GN")
    state = rgb.state_dict()
    state["backbone.body.conv1.weight"] = state["backbone.body.conv1.weight"].flip(1)  # a BGR-trained stem
    bgr.load_state_dict(state)
    batch = _batch()
    with torch.no_grad():
        x_rgb = rgb.transform([d["image"] for d in batch])[0].tensors
        x_bgr = bgr.transform([d["image"] for d in batch])[0].tensors
        torch.testing.assert_close(x_bgr, x_rgb.flip(1))  # channels reversed, each with its own mean/std
        f_rgb, f_bgr = rgb.eval().backbone(x_rgb), bgr.eval().backbone(x_bgr)
    for k in f_rgb:
        torch.testing.assert_close(f_bgr[k], f_rgb[k], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="INPUT.FORMAT = .YUV.: images are fed as RGB or BGR"):
        _model("INPUT.FORMAT", "YUV")


def test_architecture_names_gn_det_cannot_build_are_refused():
    from gn_det.config import ConfigError

    assert isinstance(_model("MODEL.META_ARCHITECTURE", "GeneralizedRCNN"), GNMaskRCNN)  # detectron2's name
    with pytest.raises(ConfigError, match="META_ARCHITECTURE = 'RetinaNet'"):
        _model("MODEL.META_ARCHITECTURE", "RetinaNet")
    with pytest.raises(ConfigError, match="BACKBONE.NAME = 'build_resnet_backbone'"):
        _model("MODEL.BACKBONE.NAME", "build_resnet_backbone")
