"""Whole detectron2 FPN Mask R-CNN checkpoints <-> gn_det's Mask R-CNN: names, class rows, anchor
order, 0-d arrays, round trips, refusals and the export CLI, on checkpoints whose every value
differs (a swapped, dropped or misplaced tensor or row shows)."""

from __future__ import annotations

import json
import logging
import math
import pickle

import numpy as np
import pytest
import torch

from gn_det.checkpoint import CheckpointError, load_pickle
from gn_det.checkpoint.model_loading import apply_weights, init_policy
from gn_det.checkpoint.detectron2_detector import (RATIOS_OUTER, SIZES_OUTER, AnchorLayout,
                                                   write_detectron2_detector)
from gn_det.checkpoint.detector_names import format_names, parse_names
from gn_det.cli.convert_checkpoint import main
from gn_det.config import load_config
from gn_det.engine.trainer import load_model_weights
from gn_det.layers import WSConv2d
from gn_det.layers.ws_conv import standardize_weight
from gn_det.modeling.mask_rcnn import build_mask_rcnn, mask_rcnn_to_detectron2, mask_rcnn_weights_transform
from gn_det.tasks.detection import DetectionTask

from detector_checkpoints import (K, ROOT, TEST_CFG, Distinct, cfg, detectron2_state, expected_in_gn_det, model,
                                  predictor_kind)

torch.set_num_threads(1)

BN_OPTS = ("MODEL.RESNETS.NORM", "BN", "MODEL.FPN.NORM", "BN", "MODEL.ROI_BOX_HEAD.NORM", "BN",
           "MODEL.ROI_MASK_HEAD.NORM", "BN")
D2_PKL = {"__author__": "Detectron2 Model Zoo", "matching_heuristics": True}


def _write_pkl(path, state, **extra):
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, **D2_PKL, **extra}, f)


def _load(m, path, *opts):
    return load_model_weights(cfg(*opts), m, str(path), DetectionTask())


def _assert_loaded_as_detectron2(m, state, table):
    own = m.state_dict()
    for d2, gn in table.items():
        want = expected_in_gn_det(state[d2], gn)
        assert own[gn].shape == want.shape and own[gn].dtype == want.dtype, gn
        assert torch.equal(own[gn], want), f"{d2} -> {gn}"


@pytest.mark.parametrize("fmt", ["pkl", "pth"])
def test_detectron2_detector_loads_whole_tensor_by_tensor(tmp_path, fmt, caplog):
    m = model()
    state, table = detectron2_state(m)
    path = tmp_path / f"model_final.{fmt}"
    if fmt == "pkl":  # the model zoo's model_final.pkl
        _write_pkl(path, state)
    else:  # detectron2's DetectionCheckpointer: tensors, optimizer and scheduler state beside them
        torch.save({"model": state, "iteration": 89999, "scheduler": {"base_lrs": [0.02], "last_epoch": 89999},
                    "optimizer": {"state": {}, "param_groups": [{"lr": 0.02, "params": [0, 1]}]}}, path)
    with caplog.at_level(logging.INFO):
        report = _load(m, path)
    n = len(m.state_dict())
    assert sorted(report.loaded) == sorted(m.state_dict()) and len(state) == n == 124
    assert not report.missing and not report.unexpected and not report.shape_mismatched
    _assert_loaded_as_detectron2(m, state, table)
    # every class row in place: gn_det row c+1 is detectron2's class c, row 0 its background (row K)
    cls_d2, cls = state["roi_heads.box_predictor.cls_score.weight"], m.roi_heads.box_predictor.cls_score.weight
    for c in range(K):
        assert torch.equal(cls[c + 1], cls_d2[c])
        assert torch.equal(m.roi_heads.box_predictor.bbox_pred.weight[4 * (c + 1):4 * (c + 2)],
                           state["roi_heads.box_predictor.bbox_pred.weight"][4 * c:4 * (c + 1)])
    assert torch.equal(cls[0], cls_d2[K])
    text = caplog.text
    assert f"detectron2 detector -> gn_det: {n} tensors mapped (backbone 60, fpn 24, rpn 6, box_head 14, " \
           f"box_predictor 4, mask_head 16)" in text
    assert f"background moved from row {K} (last) to row 0" in text
    assert f"{4 * K} -> {4 * K + 4} rows: background rows 0-3 added, set to 0" in text
    assert f"{K} -> {K + 1} channels: background channel 0 added, set to 0" in text
    assert "not recorded in the file: detectron2's defaults assumed" in text


def test_the_gn_papers_r50_mask_rcnn_loads_all_223_tensors():
    """The shape of detectron2's mask_rcnn_R_50_FPN_3x_gn model_final.pkl: 223 tensors, all loaded
    (the file's content handed to the transform directly: writing 180 MB would only cost time)."""
    r50 = load_config(str(ROOT / "configs" / "mask_rcnn_R_50_FPN_gn_2x.yaml"), ["MODEL.WEIGHTS", ""])
    m = build_mask_rcnn(r50)
    state, _ = detectron2_state(m)
    raw = {"model": {k: v.numpy() for k, v in state.items()}, **D2_PKL}
    report = apply_weights(m, mask_rcnn_weights_transform(r50, m, raw, "model_final.pkl"), init_policy(), "zoo")
    assert len(state) == len(report.loaded) == 223 and not report.unexpected and not report.shape_mismatched
    assert torch.equal(m.roi_heads.box_predictor.cls_score.bias,
                       expected_in_gn_det(state["roi_heads.box_predictor.cls_score.bias"], "box_predictor.cls_score"))


@pytest.mark.parametrize("opts", [(), BN_OPTS], ids=["GN", "BN"])
def test_round_trip_detectron2_to_gn_det_to_detectron2_is_identical(tmp_path, opts):
    """0-d num_batches_tracked arrays (BN) included: same names, shapes, dtypes and values back."""
    m = model(*opts)
    state, _ = detectron2_state(m)
    if opts:
        assert any(v.dim() == 0 for v in state.values())  # num_batches_tracked, written as 0-d arrays
    path = tmp_path / "d2.pkl"
    _write_pkl(path, state)
    assert any(np.ndim(v) == 0 for v in load_pickle(path)["model"].values()) == bool(opts)
    _load(m, path, *opts)
    conversion, meta = mask_rcnn_to_detectron2(cfg(*opts), m)
    back = conversion.state_dict
    assert sorted(back) == sorted(state)
    for k, v in state.items():
        assert back[k].shape == v.shape and back[k].dtype == v.dtype and torch.equal(back[k], v), k
    assert meta["stride_in_1x1"] is False and meta["ws"] is False
    assert meta["input"] == {"format": "RGB", "pixel_mean": [123.675, 116.28, 103.53],
                             "pixel_std": [58.395, 57.12, 57.375]}


def test_round_trip_gn_det_to_detectron2_to_gn_det(tmp_path):
    """Identical except the background rows detectron2 has no place for: they come back as 0."""
    m = model()
    make = Distinct()
    with torch.no_grad():
        for v in m.state_dict().values():
            v.copy_(make(v.shape, v.dtype))
    conversion, meta = mask_rcnn_to_detectron2(cfg(), m)
    path = tmp_path / "export.pkl"
    write_detectron2_detector(conversion, path, meta)
    raw = load_pickle(path)
    assert raw["__author__"] == "gn_det" and raw["matching_heuristics"] is True and raw["gn_det_meta"] == meta
    assert all(isinstance(v, np.ndarray) for v in raw["model"].values())
    assert raw["model"]["roi_heads.box_predictor.bbox_pred.weight"].shape[0] == 4 * K
    assert raw["model"]["roi_heads.mask_head.predictor.weight"].shape[0] == K
    fresh = model(seed=1)
    report = _load(fresh, path)
    assert len(report.loaded) == 124 and not report.unexpected
    assert not any("does not record where the ResNet stride is" in n for n in report.notes)  # gn_det_meta says
    background = {"roi_heads.box_predictor.bbox_pred.weight": 4, "roi_heads.box_predictor.bbox_pred.bias": 4,
                  "roi_heads.mask_predictor.mask_fcn_logits.weight": 1,
                  "roi_heads.mask_predictor.mask_fcn_logits.bias": 1}
    own, new = m.state_dict(), fresh.state_dict()
    for k, v in own.items():
        rows = background.get(k, 0)
        assert torch.equal(new[k][rows:], v[rows:]), k
        assert not new[k][:rows].any(), k


def test_gn_det_meta_records_stride_and_input(tmp_path, caplog):
    """A file gn_det wrote says where the stride is and what input it expects: both are checked."""
    m = model()
    conversion, meta = mask_rcnn_to_detectron2(cfg(), m)
    path = tmp_path / "export.pkl"
    write_detectron2_detector(conversion, path, meta)
    stride = ("MODEL.RESNETS.STRIDE_IN_1X1", "True")
    with pytest.raises(CheckpointError, match="puts the stride on the 3x3 conv .*STRIDE_IN_1X1"):
        _load(model(*stride), path, *stride)
    bgr = ("INPUT.FORMAT", "BGR")
    with caplog.at_level(logging.WARNING):
        _load(model(*bgr), path, *bgr)
    assert "INPUT.FORMAT BGR (weights: RGB)" in caplog.text and "gn_det_meta in the file" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _load(model(), path)
    assert "expects other inputs" not in caplog.text


def test_pixel_statistics_in_old_detectron2_files_are_compared(tmp_path, caplog):
    m = model()
    state, _ = detectron2_state(m)
    state["pixel_mean"] = torch.tensor([103.53, 116.28, 123.675]).reshape(3, 1, 1)
    state["pixel_std"] = torch.tensor([1.0, 1.0, 1.0]).reshape(3, 1, 1)
    path = tmp_path / "old.pkl"
    _write_pkl(path, state)
    with caplog.at_level(logging.WARNING):
        report = _load(m, path)
    assert len(report.loaded) == 124 and not report.unexpected
    assert "MODEL.PIXEL_STD [58.395, 57.12, 57.375] (weights: [1.0, 1.0, 1.0])" in caplog.text
    assert any("dropped 2: pixel_mean" in n for n in report.notes)
    caplog.clear()
    d2_input = ("INPUT.FORMAT", "BGR", "MODEL.PIXEL_MEAN", "[103.53, 116.28, 123.675]", "MODEL.PIXEL_STD", "[1., 1., 1.]")
    with caplog.at_level(logging.WARNING):
        _load(model(*d2_input), path, *d2_input)
    assert "expects other inputs" not in caplog.text


def _d2_cell_anchors(sizes, ratios):
    """detectron2's DefaultAnchorGenerator.generate_cell_anchors: sizes outer, ratios inner."""
    out = []
    for size in sizes:
        for ratio in ratios:
            w = math.sqrt(size ** 2 / ratio)
            h = ratio * w
            out.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(out)


@pytest.mark.parametrize("generator", ["TorchvisionAnchorGenerator", "DefaultAnchorGenerator"])
def test_rpn_rows_follow_the_anchor_order_with_two_sizes_per_level(tmp_path, generator):
    """detectron2 enumerates anchors sizes-outer; each objectness row and each block of 4 delta rows
    must land on the model's anchor of the same size and ratio, whatever its generator's order."""
    sizes = "[[8, 12], [16, 24], [32, 48], [64, 96], [128, 192]]"
    opts = ("MODEL.ANCHOR_GENERATOR.SIZES", sizes, "MODEL.ANCHOR_GENERATOR.NAME", generator)
    m = model(*opts)
    state, _ = detectron2_state(m)
    assert state["proposal_generator.rpn_head.objectness_logits.weight"].shape[0] == 6
    path = tmp_path / "d2.pkl"
    _write_pkl(path, state)
    report = _load(m, path, *opts)
    assert len(report.loaded) == 124
    d2_anchors = _d2_cell_anchors((8, 12), (0.5, 1.0, 2.0))
    own_anchors = m.rpn.anchor_generator.cell_anchors[0]  # level 0: sizes 8 and 12
    obj_d2, obj = state["proposal_generator.rpn_head.objectness_logits.bias"], m.rpn.head.cls_logits.bias
    deltas_d2, deltas = state["proposal_generator.rpn_head.anchor_deltas.weight"], m.rpn.head.bbox_pred.weight
    for a in range(6):
        src = int((obj_d2 == obj[a]).nonzero())  # where the model's anchor a took its row from
        assert torch.allclose(d2_anchors[src], own_anchors[a], atol=0.5), (a, src)  # torchvision rounds anchors
        assert torch.equal(deltas[4 * a:4 * a + 4], deltas_d2[4 * src:4 * src + 4])
    assert sorted(int((obj_d2 == v).nonzero()) for v in obj) == list(range(6))
    conversion, _ = mask_rcnn_to_detectron2(cfg(*opts), m)
    for k in ("objectness_logits", "anchor_deltas"):
        for p in ("weight", "bias"):
            name = f"proposal_generator.rpn_head.{k}.{p}"
            assert torch.equal(conversion.state_dict[name], state[name]), name


def test_anchor_layout_permutations():
    two_by_three = AnchorLayout(2, 3, RATIOS_OUTER)
    # torchvision anchor r*2 + s <- detectron2 anchor s*3 + r
    assert two_by_three.permutation_from(SIZES_OUTER) == [0, 3, 1, 4, 2, 5]
    assert AnchorLayout(2, 3, SIZES_OUTER).permutation_from(RATIOS_OUTER) == [0, 2, 4, 1, 3, 5]
    assert two_by_three.permutation_from(RATIOS_OUTER) is None
    assert AnchorLayout(1, 3, RATIOS_OUTER).permutation_from(SIZES_OUTER) is None  # one size per level: FPN


def test_box_regression_weights_and_names_match_detectron2():
    m = model()
    assert m.roi_heads.box_coder.weights == (10.0, 10.0, 5.0, 5.0)  # detectron2's ROI_BOX_HEAD.BBOX_REG_WEIGHTS
    assert m.rpn.box_coder.weights == (1.0, 1.0, 1.0, 1.0)  # its RPN.BBOX_REG_WEIGHTS
    names = ["proposal_generator.rpn_head.conv.conv0.weight", "proposal_generator.rpn_head.conv.conv1.weight"]
    params = parse_names(names, "detectron2")
    assert sorted(format_names(params.values(), "gn_det").values()) == ["rpn.head.conv.0.0.weight",
                                                                        "rpn.head.conv.1.0.weight"]
    assert sorted(format_names(params.values(), "detectron2").values()) == names


def test_head_of_another_structure_is_refused_naming_the_config_keys(tmp_path):
    state, _ = detectron2_state(model())  # 4conv1fc box head, GN FPN
    path = tmp_path / "d2.pkl"
    _write_pkl(path, state)
    two_fc = ("MODEL.ROI_BOX_HEAD.NUM_CONV", "0", "MODEL.ROI_BOX_HEAD.NUM_FC", "2")
    m = model(*two_fc)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"roi_heads\.box_head\.\* does not match .*MODEL\.ROI_BOX_HEAD\.NUM_CONV"):
        _load(m, path, *two_fc)
    with pytest.raises(CheckpointError, match=r"backbone\.fpn\.\* does not match .*MODEL\.FPN\.NORM"):
        _load(model("MODEL.FPN.NORM", ""), path, "MODEL.FPN.NORM", "")
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())  # nothing copied


def test_another_class_count_skips_only_the_predictors(tmp_path):
    state, _ = detectron2_state(model())
    path = tmp_path / "d2.pkl"
    _write_pkl(path, state)
    opts = ("MODEL.ROI_HEADS.NUM_CLASSES", "3")
    report = _load(model(*opts), path, *opts)
    skipped = sorted(k for k, _, _ in report.shape_mismatched)
    assert len(skipped) == 6 and all(predictor_kind(k) for k in skipped)
    assert len(report.loaded) == 124 - 6 and not report.missing


def test_class_agnostic_box_regression_is_refused(tmp_path):
    state, _ = detectron2_state(model())
    state["roi_heads.box_predictor.bbox_pred.weight"] = state["roi_heads.box_predictor.bbox_pred.weight"][:4]
    state["roi_heads.box_predictor.bbox_pred.bias"] = state["roi_heads.box_predictor.bbox_pred.bias"][:4]
    path = tmp_path / "agnostic.pkl"
    _write_pkl(path, state)
    with pytest.raises(CheckpointError, match="class-agnostic box regressor"):
        _load(model(), path)


def test_group_count_other_than_32_is_refused_on_export_and_warned_on_import(tmp_path, caplog):
    eight = ("MODEL.GROUP_NORM.NUM_GROUPS", "8")
    m = model(*eight)
    with pytest.raises(CheckpointError, match="NUM_GROUPS 32"):
        mask_rcnn_to_detectron2(cfg(*eight), m)
    state, _ = detectron2_state(model())
    path = tmp_path / "d2.pkl"
    _write_pkl(path, state)
    with caplog.at_level(logging.WARNING):
        assert len(_load(m, path, *eight).loaded) == 124
    assert "GroupNorm layers use [8] groups" in caplog.text


def _batch():
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(3, 96, 128, generator=g) * 255, "height": 96, "width": 128, "image_id": 0}]


def test_gn_ws_export_folds_ws_and_detects_the_same(tmp_path):
    """GN+WS -> detectron2: the conv weights are the standardized ones, and a plain-conv GN model
    holding them gives the same boxes, scores and masks."""
    ws = ("MODEL.RESNETS.NORM", "GN+WS", "MODEL.FPN.NORM", "GN+WS", "MODEL.ROI_BOX_HEAD.NORM", "GN+WS",
          "MODEL.ROI_MASK_HEAD.NORM", "GN+WS")
    trained = model(*ws, seed=3).eval()
    convs = {n for n, mod in trained.named_modules() if isinstance(mod, WSConv2d)}
    conversion, meta = mask_rcnn_to_detectron2(cfg(*ws), trained)
    assert meta["ws"] is False and meta["ws_convs_folded"] == len(convs) > 20
    assert "WS convs folded" in conversion.converted["(WS)"]
    stem = conversion.state_dict["backbone.bottom_up.stem.conv1.weight"]
    assert torch.allclose(stem, standardize_weight(trained.backbone.body.conv1.weight.detach()))
    assert isinstance(trained.backbone.body.conv1, WSConv2d)  # the caller's model is left as it was
    path = tmp_path / "gnws_d2.pkl"
    write_detectron2_detector(conversion, path, meta)
    plain = model(seed=4).eval()
    assert not any(isinstance(mod, WSConv2d) for mod in plain.modules())
    _load(plain, path)
    with torch.no_grad():
        want, got = trained(_batch())[0], plain(_batch())[0]
    assert len(want["boxes"]) > 0
    for key in ("boxes", "scores", "labels", "masks"):
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-3)


# ------------------------------------------------------------------------------------ the CLI


def _write_config(path, *lines):
    path.write_text("\n".join([f'_BASE_: "{TEST_CFG}"', "MODEL:", "  GROUP_NORM:", "    NUM_GROUPS: 32",
                               *lines]) + "\n")


def test_cli_exports_a_trained_detector_to_detectron2(tmp_path, capsys):
    trained = model("MODEL.RESNETS.NORM", "GN+WS", seed=5)
    src = tmp_path / "model_final.pth"  # as gn_det's trainer saves it: with the run's config
    torch.save({"model": trained.state_dict(), "iteration": 99, "optimizer": {"state": {}, "param_groups": []},
                "config": cfg("MODEL.RESNETS.NORM", "GN+WS").dump()}, src)
    out = tmp_path / "exported.pkl"
    assert main([str(src), "--output-format", "detectron2", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "gn_det detector -> detectron2: 124 tensors mapped" in printed and "20 WS convs folded" in printed
    raw = load_pickle(out)
    conversion, meta = mask_rcnn_to_detectron2(cfg("MODEL.RESNETS.NORM", "GN+WS"), trained)
    assert sorted(raw["model"]) == sorted(conversion.state_dict)
    for k, v in conversion.state_dict.items():
        assert np.array_equal(raw["model"][k], v.numpy()), k
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    assert report["meta"]["ws_convs_folded"] == 20 and report["output_format"] == "detectron2"
    assert len(report["export"]["mapped"]) == 124


def test_cli_reads_a_detectron2_detector_into_gn_det(tmp_path):
    m = model()
    state, table = detectron2_state(m)
    src = tmp_path / "model_final.pkl"
    _write_pkl(src, state)
    _write_config(tmp_path / "d2_cfg.yaml")
    out = tmp_path / "gn.pth"
    assert main([str(src), "--config-file", str(tmp_path / "d2_cfg.yaml"), "--output", str(out)]) == 0
    fresh = model(seed=7)
    assert len(_load(fresh, out).loaded) == 124
    _assert_loaded_as_detectron2(fresh, state, table)


def test_cli_refusals_are_one_line(tmp_path, capsys):
    from gn_det.utils.logger import setup_logger

    setup_logger()  # a console log handler, as a user's process has: a refusal must still print one line
    trained = model()
    src = tmp_path / "model_final.pth"
    torch.save({"model": trained.state_dict()}, src)
    assert main([str(src), "--output-format", "detectron2"]) == 2  # no config anywhere
    assert "pass --config-file" in capsys.readouterr().err
    _write_config(tmp_path / "config.yaml")  # the training folder's config.yaml is found
    assert main([str(src), "--output-format", "detectron2"]) == 0 and (tmp_path / "model_final_d2.pkl").is_file()
    capsys.readouterr()
    assert main([str(src), "--norm", "gn", "--output-format", "detectron2"]) == 2
    assert "drop --norm" in capsys.readouterr().err
    assert main([str(src), "--output-format", "torchvision"]) == 2
    assert "use --output-format detectron2" in capsys.readouterr().err
    _write_config(tmp_path / "r50.yaml", "  RESNETS:", "    DEPTH: 50")
    assert main([str(src), "--config-file", str(tmp_path / "r50.yaml"), "--output-format", "detectron2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err


def test_input_convention_warning_tolerates_a_grey_level_but_not_another_convention():
    from gn_det.checkpoint.detectron2_detector import input_convention_warning

    detectron = {"format": "BGR", "pixel_mean": [102.9801, 115.9465, 122.7717], "pixel_std": [1.0, 1.0, 1.0]}
    d2 = dict(input_format="BGR", pixel_mean=[103.53, 116.28, 123.675], pixel_std=[1.0, 1.0, 1.0], source="w.pkl")
    assert input_convention_warning(detectron, **d2) is None
    rgb = dict(input_format="RGB", pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
               source="w.pkl")
    msg = input_convention_warning(detectron, **rgb)
    assert "INPUT.FORMAT RGB" in msg and "MODEL.PIXEL_MEAN" in msg and "MODEL.PIXEL_STD" in msg
    off_std = dict(d2, pixel_std=[1.0, 1.0, 1.02])
    assert "MODEL.PIXEL_STD" in input_convention_warning(detectron, **off_std)
