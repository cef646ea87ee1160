"""detectron2's own YAML configs in gn_det: read as detectron2 reads them, the same model built,
every value gn_det cannot honour refused by name, and the input convention (channel order, pixel
statistics) fed and recorded exactly.

The detectron2 files under tests/data/detectron2_configs/ are verbatim copies (Apache-2.0) of its
model-zoo configs and of its ``config/defaults.py``. detectron2 cannot be installed here, so its
own config resolution is reproduced from those files: ``defaults.py`` run on fvcore's CfgNode
(the class detectron2's CfgNode extends), then ``merge_from_file`` as detectron2 does.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from fvcore.common.config import CfgNode
from PIL import Image
from torch import nn
from torchvision.ops import MultiScaleRoIAlign, roi_align

import gn_det.tasks  # noqa: F401  (registers the detection task)
from gn_det.checkpoint import make_meta
from gn_det.checkpoint.input_convention import TORCHVISION_INPUT, recorded_input_convention
from gn_det.cli.train_net import main
from gn_det.config import ConfigError, load_config
from gn_det.engine.trainer import load_model_weights
from gn_det.modeling.mask_rcnn import build_mask_rcnn
from gn_det.modeling.roi_heads import LevelRoIPooler
from gn_det.tasks.detection import DetectionTask
from gn_det.utils.image_io import read_image

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
D2 = ROOT / "tests" / "data" / "detectron2_configs"
GN = D2 / "Misc" / "mask_rcnn_R_50_FPN_3x_gn.yaml"
SCRATCH_GN = D2 / "Misc" / "scratch_mask_rcnn_R_50_FPN_3x_gn.yaml"
COCO_3X = D2 / "COCO-InstanceSegmentation" / "mask_rcnn_R_50_FPN_3x.yaml"
TEST_CFG = ROOT / "configs" / "synthetic" / "mask_rcnn_R_18_FPN_test.yaml"
# Where the place to run differs by design: gn_det's "auto" picks the GPU when there is one.
NOT_COMPARED = {"MODEL.DEVICE"}


def _detectron2_cfg(path: Path | None = None) -> CfgNode:
    """The config detectron2 itself makes from ``path``: its defaults.py, then the file."""
    source = (D2 / "defaults.py").read_text().replace("from .config import CfgNode as CN", "")
    namespace = {"CN": CfgNode}
    exec(compile(source, "detectron2/config/defaults.py", "exec"), namespace)  # our stored copy
    cfg = namespace["_C"]
    if path is not None:
        cfg.merge_from_file(str(path))
    return cfg


def _flat(node, prefix: str = "") -> dict:
    out = {}
    for k, v in node.items():
        if isinstance(v, CfgNode):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = _plain(v)
    return out


def _plain(v):
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


@pytest.fixture(scope="module")
def gn_model():
    torch.manual_seed(0)
    return build_mask_rcnn(load_config(str(GN), ["MODEL.WEIGHTS", ""]))


# ------------------------------------------------------------------ reading detectron2's files


@pytest.mark.parametrize("path", [GN, SCRATCH_GN, COCO_3X], ids=lambda p: p.name)
def test_model_zoo_config_reads_as_detectron2_reads_it(path):
    ours, theirs = _flat(load_config(str(path))), _flat(_detectron2_cfg(path))
    assert set(theirs) - set(ours) == set()  # every key detectron2 knows is accepted
    differ = {k: (ours[k], v) for k, v in theirs.items() if k not in NOT_COMPARED and ours[k] != v}
    assert differ == {}
    assert ours["TASK"] == "detection"
    # what the file set, and what it left to detectron2's defaults (not gn_det's)
    assert ours["MODEL.ROI_BOX_HEAD.NUM_CONV"] == (4 if "gn" in path.name else 0)
    assert (ours["INPUT.FORMAT"], ours["MODEL.PIXEL_STD"]) == ("BGR", [1.0, 1.0, 1.0])
    assert ours["MODEL.RESNETS.STRIDE_IN_1X1"] is ("gn" not in path.name)  # MSRA R-50: stride on the 1x1


def test_full_config_yaml_detectron2_writes_loads(tmp_path):
    # detectron2 dumps its whole config (every defaults.py key) to OUTPUT_DIR/config.yaml
    dumped = tmp_path / "config.yaml"
    dumped.write_text(_detectron2_cfg(GN).dump())
    ours, theirs = _flat(load_config(str(dumped))), _flat(_detectron2_cfg(GN))
    assert {k: (ours[k], v) for k, v in theirs.items() if k not in NOT_COMPARED and ours[k] != v} == {}


def test_gn_det_config_keeps_gn_det_defaults_and_a_named_task_opts_out(tmp_path):
    ours = load_config(str(TEST_CFG))  # names TASK through its _BASE_
    assert (ours.INPUT.FORMAT, ours.MODEL.ROI_BOX_HEAD.POOLER_TYPE) == ("RGB", "ROIAlign")
    child = tmp_path / "child.yaml"
    child.write_text(f"_BASE_: {GN}\nMODEL:\n  WEIGHTS: ''\n")
    assert load_config(str(child)).MODEL.PIXEL_STD == [1.0, 1.0, 1.0]  # still detectron2's file
    assert load_config(str(child), ["TASK", "detection"]).MODEL.PIXEL_STD == [58.395, 57.12, 57.375]


# ------------------------------------------------------------------ the model built


def _modules(module: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


def test_gn_config_builds_detectron2s_gn_mask_rcnn(gn_model):
    m = gn_model
    body_convs, body_norms = _modules(m.backbone.body, nn.Conv2d), _modules(m.backbone.body, nn.GroupNorm)
    assert len(body_convs) == len(body_norms) == 53  # ResNet-50: stem + 16 blocks x 3 + 4 shortcuts
    assert {n.num_groups for n in body_norms} == {32} and not _modules(m, nn.BatchNorm2d)
    assert all(n.weight.eq(1).all() for n in body_norms)  # detectron2 starts every gamma at 1
    assert m.backbone.in_features == ["res2", "res3", "res4", "res5"]
    trainable = [p.requires_grad for p in m.backbone.body.parameters()]
    assert trainable.count(False) == 3 + 30  # FREEZE_AT 2: stem and res2 (3 blocks + shortcut)

    fpn = m.backbone.fpn
    assert [b[0].in_channels for b in fpn.inner_blocks] == [256, 512, 1024, 2048]
    for block in list(fpn.inner_blocks) + list(fpn.layer_blocks):
        conv, norm = block[0], block[1]
        assert conv.out_channels == 256 and conv.bias is None and isinstance(norm, nn.GroupNorm)

    head = m.roi_heads.box_head  # 4conv1fc, GN after each conv
    convs, norms, fcs = _modules(head, nn.Conv2d), _modules(head, nn.GroupNorm), _modules(head, nn.Linear)
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(256, 256, (3, 3))] * 4
    assert len(norms) == 4 and {n.num_groups for n in norms} == {32}
    assert [(f.in_features, f.out_features) for f in fcs] == [(256 * 7 * 7, 1024)]
    assert (m.roi_heads.box_predictor.cls_score.out_features, m.roi_heads.box_predictor.bbox_pred.out_features) \
        == (81, 324)

    mask = m.roi_heads.mask_head
    assert len(_modules(mask, nn.Conv2d)) == 4 and len(_modules(mask, nn.GroupNorm)) == 4
    assert m.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 81

    for pooler, size in ((m.roi_heads.box_roi_pool, 7), (m.roi_heads.mask_roi_pool, 14)):
        assert (pooler.pooler_type, pooler.output_size, pooler.sampling_ratio) == ("ROIAlignV2", (size, size), 0)
        assert (pooler.featmap_names, pooler.strides) == (["0", "1", "2", "3"], [4, 8, 16, 32])  # p2..p5
    anchors = m.rpn.anchor_generator
    assert anchors.sizes == ((32,), (64,), (128,), (256,), (512,)) and len(m.rpn.head.cls_logits.weight) == 3
    assert (m.rpn.smooth_l1_beta, m.roi_heads.smooth_l1_beta) == (0.0, 0.0)  # detectron2's default: L1
    assert (m.rpn._pre_nms_top_n, m.rpn._post_nms_top_n) == (dict(training=2000, testing=1000),
                                                             dict(training=1000, testing=1000))
    # detectron2's GN Mask R-CNN checkpoint holds 223 tensors (backbone 159, FPN 24, RPN 6, box head 14,
    # box predictor 4, mask head 12, mask predictor 4): the same parameters, one each
    assert len(m.state_dict()) == 223


def test_scratch_config_trains_everything_and_keys_shape_the_model():
    cfg = load_config(str(SCRATCH_GN), ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
                                        "MODEL.ROI_BOX_HEAD.NUM_CONV", "2", "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", "5",
                                        "MODEL.ROI_MASK_HEAD.NUM_CONV", "3", "MODEL.ROI_HEADS.IN_FEATURES",
                                        "['p3', 'p4', 'p5', 'p6']", "MODEL.RPN.IOU_THRESHOLDS", "[0.25, 0.75]",
                                        "MODEL.ROI_HEADS.IOU_THRESHOLDS", "[0.4, 0.55]",
                                        "MODEL.ROI_HEADS.IOU_LABELS", "[0, -1, 1]"])
    m = build_mask_rcnn(cfg)
    assert all(p.requires_grad for p in m.backbone.body.parameters())  # FREEZE_AT 0
    assert len(_modules(m.roi_heads.box_head, nn.Conv2d)) == 2 and len(_modules(m.roi_heads.mask_head, nn.Conv2d)) == 3
    assert _modules(m.roi_heads.box_head, nn.Linear)[0].in_features == 256 * 5 * 5
    pooler = m.roi_heads.box_roi_pool
    assert (pooler.featmap_names, pooler.strides) == (["1", "2", "3", "pool"], [8, 16, 32, 64])
    rpn, roi = m.rpn.proposal_matcher, m.roi_heads.proposal_matcher
    assert (rpn.low_threshold, rpn.high_threshold, roi.low_threshold, roi.high_threshold) == (0.25, 0.75, 0.4, 0.55)


# ------------------------------------------------------------------ refusals

REFUSED = [
    (["MODEL.ROI_HEADS.NAME", "Res5ROIHeads"], "MODEL.ROI_HEADS.NAME = 'Res5ROIHeads': gn_det builds StandardROIHeads"),
    (["MODEL.ROI_HEADS.NAME", "CascadeROIHeads"], "MODEL.ROI_HEADS.NAME = 'CascadeROIHeads': .*no .*CascadeROIHeads"),
    (["MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, True, True, True]"],
     r"DEFORM_ON_PER_STAGE = \[False, True, True, True\]: gn_det has no deformable convs"),
    (["MODEL.BACKBONE.NAME", "build_resnet_backbone"], "BACKBONE.NAME = 'build_resnet_backbone': only the ResNet-FPN"),
    (["MODEL.RPN.IN_FEATURES", "['p2', 'p3', 'p4', 'p5']"],
     r"RPN.IN_FEATURES = \['p2', 'p3', 'p4', 'p5'\]: the RPN reads every FPN level, \['p2', .*'p6'\]"),
    (["MODEL.ROI_HEADS.IN_FEATURES", "['p2', 'p4']"], r"ROI_HEADS.IN_FEATURES = \['p2', 'p4'\]: .*consecutive"),
    (["MODEL.FPN.IN_FEATURES", "['res3', 'res4', 'res5']"], r"FPN.IN_FEATURES = .*must equal MODEL.RESNETS.OUT"),
    (["MODEL.KEYPOINT_ON", "True"], "KEYPOINT_ON = True: gn_det has no keypoint head"),
    (["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True"], "CLS_AGNOSTIC_BBOX_REG = True: box regression is class"),
    (["MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlignRotated"], r"POOLER_TYPE = 'ROIAlignRotated': one of \['ROIAlignV2'"),
    (["MODEL.RESNETS.NORM", "ABN"], "RESNETS.NORM = 'ABN': "),  # detectron2's names are all read
    (["MODEL.ROI_HEADS.IOU_THRESHOLDS", "[0.3, 0.5]"], r"IOU_THRESHOLDS = \[0.3, 0.5\] with IOU_LABELS = \[0, 1\]"),
    (["INPUT.FORMAT", "YUV-BT.601"], "INPUT.FORMAT = 'YUV-BT.601': images are fed as RGB or BGR"),
    (["MODEL.PIXEL_STD", "[1.0]"], r"PIXEL_STD = \[1.0\]: three values"),
    (["INPUT.CROP.ENABLED", "True"], "CROP.ENABLED = True: gn_det's training transform has no random crop"),
    (["TEST.AUG.ENABLED", "True"], "AUG.ENABLED = True: there is no test-time augmentation"),
    (["SOLVER.REFERENCE_WORLD_SIZE", "8"], "REFERENCE_WORLD_SIZE = 8: SOLVER.IMS_PER_BATCH is always the global"),
    (["DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler"], "SAMPLER_TRAIN = 'RepeatFactorTrainingSampler'"),
    (["SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm"],
     "CLIP_TYPE = 'norm': detectron2 clips each parameter's gradient norm"),
]


@pytest.mark.parametrize("opts,message", REFUSED, ids=[o[0] for o, _ in REFUSED])
def test_values_gn_det_cannot_honour_are_refused_in_one_line(opts, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(str(GN), opts)
    assert "\n" not in str(info.value) and "is detectron2's default" not in str(info.value)


def test_refusals_list_every_key_and_say_when_detectron2_defaults_set_them(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(GN), ["MODEL.KEYPOINT_ON", "True", "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", "True"])
    assert info.value.keys == ["MODEL.KEYPOINT_ON", "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK"]
    assert str(info.value).endswith("; also unsupported: MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK")
    # a detectron2 file without Base-RCNN-FPN is a C4 model in detectron2: refused, saying why
    c4 = tmp_path / "c4.yaml"
    c4.write_text("MODEL:\n  MASK_ON: True\n")
    with pytest.raises(ConfigError, match="BACKBONE.NAME = 'build_resnet_backbone'.*also unsupported: "
                                          "MODEL.ROI_HEADS.NAME.*is detectron2's default here.*TASK: detection"):
        load_config(str(c4))
    # the norm-clipping clash is detectron2's meaning; gn_det's own configs clip the global norm
    clip = ["SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm"]
    assert load_config(str(TEST_CFG), clip).SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "norm"


def test_train_net_refuses_a_detectron2_value_with_exit_2_and_one_line(tmp_path, capsys):
    argv = ["--config-file", str(GN), "--eval-only", "MODEL.WEIGHTS", str(tmp_path / "model.pkl"),
            "OUTPUT_DIR", str(tmp_path / "out"), "MODEL.ROI_HEADS.NAME", "CascadeROIHeads"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("gn-det-train: error: MODEL.ROI_HEADS.NAME = 'CascadeROIHeads'")
    assert not (tmp_path / "out").exists()  # refused before anything ran


# ------------------------------------------------------------------ anchors, pooling, losses


def test_default_anchor_generator_gives_detectron2s_unrounded_anchors():
    cfg = load_config(str(GN), ["MODEL.ANCHOR_GENERATOR.SIZES", "[[32, 40]]", "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
                                "[[0.5, 1.0, 2.0]]", "MODEL.RPN.IN_FEATURES", "[]"])
    from gn_det.modeling.rpn import build_anchor_generator

    cells = build_anchor_generator(cfg, 5).cell_anchors[0]
    # detectron2's generate_cell_anchors: area s*s, h/w = r, (-w/2, -h/2, w/2, h/2); torchvision's order (r outer)
    expected = [[-w / 2, -r * w / 2, w / 2, r * w / 2] for r in (0.5, 1.0, 2.0) for s in (32, 40)
                for w in [math.sqrt(s * s / r)]]
    torch.testing.assert_close(cells, torch.tensor(expected), rtol=0, atol=1e-5)
    rounded = build_anchor_generator(load_config(str(TEST_CFG), ["MODEL.ANCHOR_GENERATOR.SIZES", "[[32]]"]), 5)
    assert rounded.cell_anchors[0][0].tolist() == [-23.0, -11.0, 23.0, 11.0]  # torchvision rounds


def _features(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {str(i): torch.randn(2, 3, 128 // 2 ** i, 96 // 2 ** i, generator=g) for i in range(4)}


def test_pooler_assigns_levels_as_detectron2_and_aligns_by_pooler_type():
    names, strides = ["0", "1", "2", "3"], [4, 8, 16, 32]
    v2 = LevelRoIPooler(names, strides, 7, 2, "ROIAlignV2")
    boxes = [torch.tensor([[0.0, 0.0, 112.0, 112.0], [3.5, 7.25, 40.0, 30.0], [1.0, 2.0, 461.0, 470.0]]),
             torch.tensor([[10.0, 10.0, 234.0, 234.0], [5.0, 6.0, 13.0, 20.0]])]
    # floor(4 + log2(sqrt(area) / 224)), clamped to p2..p5: 112 -> 3, 28.8 -> 1 (clamped 2), 464 -> 5, 224 -> 4
    assert v2.level_of(boxes).tolist() == [1, 0, 3, 2, 0]
    feats = _features()
    out = v2(feats, boxes)
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)])
    for k, level in enumerate(v2.level_of(boxes).tolist()):
        one = roi_align(feats[names[level]], rois[k:k + 1], 7, 1.0 / strides[level], 2, aligned=True)
        torch.testing.assert_close(out[k:k + 1], one)
    # "ROIAlign" is torchvision's MultiScaleRoIAlign (no half-pixel shift), which ROIAlignV2 is not
    v1 = LevelRoIPooler(names, strides, 7, 2, "ROIAlign")
    reference = MultiScaleRoIAlign(names, 7, 2)(feats, boxes, [(512, 384), (512, 384)])  # p2 is 128 x 96
    torch.testing.assert_close(v1(feats, boxes), reference)
    assert not torch.allclose(out, reference, atol=1e-3)


def test_smooth_l1_beta_and_loss_weights_reach_both_losses(gn_model):
    from torchvision.models.detection.roi_heads import fastrcnn_loss
    from gn_det.modeling.roi_heads import box_regression_loss

    g = torch.Generator().manual_seed(1)
    logits, deltas = torch.randn(6, 81, generator=g), torch.randn(6, 324, generator=g)
    labels = [torch.tensor([0, 3, 80]), torch.tensor([7, 0, 1])]
    targets = [torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)]
    torch.testing.assert_close(box_regression_loss(deltas, labels, targets, 1 / 9),
                               fastrcnn_loss(logits, deltas, labels, targets)[1])  # torchvision's at beta 1/9
    pos = deltas.reshape(6, 81, 4)[[1, 2, 3, 5], [3, 80, 7, 1]]
    l1 = (pos - torch.cat(targets)[[1, 2, 3, 5]]).abs().sum() / 6
    torch.testing.assert_close(box_regression_loss(deltas, labels, targets, 0.0), l1)  # detectron2's default
    # the RPN: objectness weighted by LOSS_WEIGHT, boxes by BBOX_REG_LOSS_WEIGHT * LOSS_WEIGHT
    rpn = gn_model.rpn
    n = 400
    objectness, rpn_deltas = torch.randn(n, 1, generator=g), torch.randn(n, 4, generator=g)
    rpn_labels = [torch.cat([torch.ones(20), torch.zeros(n - 20)])]
    rpn_targets = [torch.randn(n, 4, generator=g)]
    torch.manual_seed(0)
    cls0, box0 = rpn.compute_loss(objectness, rpn_deltas, rpn_labels, rpn_targets)
    rpn.loss_weight, rpn.bbox_reg_loss_weight = 2.0, 3.0
    try:
        torch.manual_seed(0)
        cls1, box1 = rpn.compute_loss(objectness, rpn_deltas, rpn_labels, rpn_targets)
    finally:
        rpn.loss_weight, rpn.bbox_reg_loss_weight = 1.0, 1.0
    torch.testing.assert_close((cls1, box1), (2 * cls0, 6 * box0))
    expected_box = (rpn_deltas[:20] - rpn_targets[0][:20]).abs().sum() / 256  # L1 over the 256 sampled anchors
    torch.testing.assert_close(box0, expected_box)


# ------------------------------------------------------------------ input format and convention


def _png(path: Path, seed: int = 0) -> Path:
    rgb = np.random.default_rng(seed).integers(0, 256, size=(37, 45, 3), dtype=np.uint8)
    rgb[..., 0] //= 2  # the channels differ in range too: a swap must show
    Image.fromarray(rgb).save(path)
    return path


def _detectron2_normalized(path: Path, fmt: str, mean, std, divisible: int = 32) -> torch.Tensor:
    """detectron2's read_image(format) then (x - PIXEL_MEAN) / PIXEL_STD, zero-padded to ``divisible``."""
    image = np.asarray(Image.open(path).convert("RGB"))
    if fmt == "BGR":
        image = image[:, :, ::-1]
    x = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    h, w = (-(-s // divisible) * divisible for s in x.shape[1:])
    return torch.nn.functional.pad(x, (0, w - x.shape[2], 0, h - x.shape[1]))[None]


def test_the_model_sees_the_image_normalized_as_detectron2_feeds_it(tmp_path, gn_model):
    path = _png(tmp_path / "img.png")
    image = read_image(path).float()  # gn_det's one image reader, as the data loader uses it
    seen = gn_model.transform([image])[0].tensors  # BGR, detectron2's mean, std 1
    expected = _detectron2_normalized(path, "BGR", [103.53, 116.28, 123.675], [1.0, 1.0, 1.0])
    assert seen.shape == expected.shape == (1, 3, 64, 64)
    torch.testing.assert_close(seen, expected, rtol=0, atol=1e-5)
    rgb = build_mask_rcnn(load_config(str(TEST_CFG))).transform([image])[0].tensors  # torchvision's convention
    torch.testing.assert_close(rgb, _detectron2_normalized(path, "RGB", TORCHVISION_INPUT["pixel_mean"],
                                                           TORCHVISION_INPUT["pixel_std"]), rtol=0, atol=1e-5)


def test_checkpoints_record_their_input_convention_and_a_mismatch_is_warned(tmp_path, caplog):
    assert make_meta("caffe2", "GN", stride_in_1x1=False, stride_source="t")["input"]["format"] == "BGR"
    assert make_meta("torchvision", "BN", stride_in_1x1=False, stride_source="t")["input"] == TORCHVISION_INPUT
    bgr = {"format": "BGR", "pixel_mean": [1.0, 2.0, 3.0], "pixel_std": [4.0, 5.0, 6.0]}
    assert make_meta("torchvision", "BN", stride_in_1x1=False, stride_source="t", input=bgr)["input"] == bgr
    assert "input" not in make_meta("detectron2", "BN", stride_in_1x1=True, stride_source="t")  # unknown: no claim

    rgb_cfg = load_config(str(TEST_CFG))
    model = build_mask_rcnn(rgb_cfg)
    body = {k: v for k, v in model.backbone.body.state_dict().items()}
    converted = tmp_path / "resnet.pth"  # gn-det-convert's layout
    torch.save({"model": body, "meta": make_meta("gn_det", "GN", stride_in_1x1=False, stride_source="t",
                                                 input=TORCHVISION_INPUT)}, converted)
    trained = tmp_path / "model_final.pth"  # a training checkpoint carries its config
    torch.save({"model": model.state_dict(), "iteration": 3, "config": rgb_cfg.dump()}, trained)
    assert recorded_input_convention(torch.load(trained))["source"] == "the training config saved in the file"

    caffe2_style = ["INPUT.FORMAT", "BGR", "MODEL.PIXEL_MEAN", "[102.9801, 115.9465, 122.7717]",
                    "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"]
    for path in (converted, trained):
        for opts, warned in (([], False), (caffe2_style, True)):
            caplog.clear()
            cfg = load_config(str(TEST_CFG), opts)
            with caplog.at_level("WARNING", logger="gn_det"):
                report = load_model_weights(cfg, build_mask_rcnn(cfg), str(path), DetectionTask())
            lines = [r.getMessage() for r in caplog.records if "expects other inputs" in r.getMessage()]
            assert len(lines) == int(warned), (path.name, opts, lines)
            if warned:
                assert "\n" not in lines[0] and "INPUT.FORMAT BGR (weights: RGB)" in lines[0]
                assert "MODEL.PIXEL_STD [1.0, 1.0, 1.0] (weights: [58.395" in lines[0]
                assert any("expects other inputs" in n for n in report.notes)
