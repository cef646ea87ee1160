"""Detectron (Caffe2) FPN Mask R-CNN blobs -> gn_det, whole and value by value: the GN paper's models
(GN everywhere, 4conv1fc) and Detectron's BN baselines (folded BN, 2mlp head, plain heads)."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch

from gn_det.checkpoint import CheckpointError
from gn_det.checkpoint.detector_names import parse_names
from gn_det.checkpoint.detectron2_detector import find_caffe2_detector
from gn_det.engine.trainer import load_model_weights
from gn_det.modeling.mask_rcnn import mask_rcnn_to_detectron2
from gn_det.tasks.detection import DetectionTask

from detector_checkpoints import K, Distinct, caffe2_names, cfg, detectron2_names, model, predictor_kind

torch.set_num_threads(1)

# Detectron's inputs: BGR, its pixel means, std 1
DETECTRON_INPUT = ("INPUT.FORMAT", "BGR", "MODEL.PIXEL_MEAN", "[102.9801, 115.9465, 122.7717]",
                   "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]")
BN_BASELINE = ("MODEL.RESNETS.NORM", "FrozenBN", "MODEL.RESNETS.STRIDE_IN_1X1", "True", "MODEL.FPN.NORM", "",
               "MODEL.ROI_BOX_HEAD.NUM_CONV", "0", "MODEL.ROI_BOX_HEAD.NUM_FC", "2", "MODEL.ROI_BOX_HEAD.NORM", "",
               "MODEL.ROI_MASK_HEAD.NORM", "")


def _blobs(m):
    own, table, make = m.state_dict(), caffe2_names(m), Distinct()
    return {c2: make(own[gn].shape).numpy() for c2, gn in table.items()}, table


def _write(path, blobs, **extra):
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs, **extra}, f)


def _load(m, path, *opts):
    return load_model_weights(cfg(*opts), m, str(path), DetectionTask())


GN_BLOBS = {"conv1_gn_s", "fpn_inner_res5_1_sum_w", "fpn_inner_res2_1_sum_lateral_gn_s", "fpn_res3_1_sum_gn_b",
            "conv_rpn_fpn2_w", "head_conv4_gn_b", "fc6_w", "_mask_fcn1_gn_s", "conv5_mask_w", "mask_fcn_logits_b"}
BN_BLOBS = {"res_conv1_bn_s", "res2_0_branch2a_bn_b", "fpn_inner_res5_1_sum_b", "fpn_res2_1_sum_b", "fc7_w",
            "_[mask]_fcn1_b", "rpn_bbox_pred_fpn2_b", "cls_score_w", "bbox_pred_w"}


@pytest.mark.parametrize("opts,examples", [((), GN_BLOBS), (BN_BASELINE, BN_BLOBS)], ids=["GN-4conv1fc", "FrozenBN-2mlp"])
def test_detectron_detector_loads_whole_blob_by_blob(tmp_path, opts, examples, caplog):
    opts = opts + DETECTRON_INPUT
    m = model(*opts)
    blobs, table = _blobs(m)
    assert examples <= set(blobs)
    blobs["fc6_w_momentum"] = np.zeros_like(blobs["fc6_w"])  # optimizer state left in some files
    blobs["conv1_w_momentum"] = np.zeros_like(blobs["conv1_w"])
    path = tmp_path / "model_final.pkl"
    _write(path, blobs, cfg="MODEL:\n  TYPE: generalized_rcnn\n")
    with caplog.at_level(logging.INFO):
        report = _load(m, path, *opts)
    own = m.state_dict()
    assert sorted(report.loaded) == sorted(own)
    assert not report.missing and not report.unexpected and not report.shape_mismatched
    for c2, gn in table.items():  # background-first rows, as in gn_det: taken whole
        assert torch.equal(own[gn], torch.from_numpy(blobs[c2])), f"{c2} -> {gn}"
    for k, v in own.items():  # folded BN: statistics that make FrozenBN compute x * s + b exactly
        if k.endswith("running_mean"):
            assert not v.any(), k
        elif k.endswith("running_var"):
            assert torch.allclose(v, torch.full_like(v, 1 - 1e-5)), k
    text = caplog.text
    assert f"caffe2 detector -> gn_det: {len(table)} tensors mapped" in text
    assert "dropped 2: conv1_w_momentum (optimizer momentum blob); fc6_w_momentum" in text
    assert "input convention of the weights: BGR, mean [102.9801, 115.9465, 122.7717], std [1.0, 1.0, 1.0] " \
           "(Detectron convention)" in text
    assert "expects other inputs" not in text


def test_rgb_config_is_warned_about(tmp_path, caplog):
    m = model()
    blobs, _ = _blobs(m)
    path = tmp_path / "model_final.pkl"
    _write(path, blobs)
    with caplog.at_level(logging.WARNING):
        assert len(_load(m, path).loaded) == 124
    assert "INPUT.FORMAT RGB (weights: BGR)" in caplog.text and "MODEL.PIXEL_STD" in caplog.text


def test_detectron_to_detectron2_matches_c2_model_loading(tmp_path):
    """Exported to detectron2, a Detectron model's rows are what detectron2's c2_model_loading makes
    of the same blobs: cls_score background moved from row 0 to last, the 4 background rows of
    bbox_pred and the background channel of the mask predictor removed, everything else as is."""
    m = model(*DETECTRON_INPUT)
    blobs, c2_table = _blobs(m)
    path = tmp_path / "model_final.pkl"
    _write(path, blobs)
    _load(m, path, *DETECTRON_INPUT)
    conversion, _ = mask_rcnn_to_detectron2(cfg(*DETECTRON_INPUT), m)
    d2_of_gn = {gn: d2 for d2, gn in detectron2_names(m).items()}
    for c2, gn in c2_table.items():
        blob = torch.from_numpy(blobs[c2])
        kind = predictor_kind(gn)
        if kind == "cls_score":
            want = torch.cat([blob[1:], blob[:1]])
        elif kind in ("bbox_pred", "mask"):
            want = blob[4:] if kind == "bbox_pred" else blob[1:]
        else:
            want = blob
        assert torch.equal(conversion.state_dict[d2_of_gn[gn]], want), c2
    assert conversion.state_dict["roi_heads.box_predictor.cls_score.weight"].shape[0] == K + 1


def test_imagenet_blobs_are_not_a_detector_and_agnostic_boxes_are_refused(tmp_path):
    assert find_caffe2_detector({"blobs": {"conv1_w": np.ones((64, 3, 7, 7)), "pred_w": np.ones((10, 4))}}) is None
    spellings = parse_names(["mask_fcn1_w", "_[mask]_fcn2_b", "_mask_fcn3_gn_s", "mask_fcn_logits_w"], "caffe2")
    assert [(p.module, p.index, p.norm, p.param) for p in spellings.values()] == [
        ("mask_conv", 1, False, "weight"), ("mask_conv", 2, False, "bias"), ("mask_conv", 3, True, "weight"),
        ("mask_predictor", 0, False, "weight")]
    m = model()
    blobs, _ = _blobs(m)
    blobs["bbox_pred_w"], blobs["bbox_pred_b"] = blobs["bbox_pred_w"][:8], blobs["bbox_pred_b"][:8]
    path = tmp_path / "agnostic.pkl"
    _write(path, blobs)
    with pytest.raises(CheckpointError, match="class-agnostic"):
        _load(m, path)
