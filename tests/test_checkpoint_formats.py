"""Checkpoint names and formats: mapping name by name, round trips, and refused loads."""

import pickle

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from gn_det.checkpoint import (Checkpoint, CheckpointError, convert_name, detect_format, load_into_model,
                               load_pickle, make_meta, read_checkpoint, write_checkpoint)
from gn_det.convert import build_resnet_for_arch, convert_model, infer_resnet_arch, set_stride_in_1x1

torch.set_num_threads(1)

# (torchvision, detectron2, caffe2 BN, caffe2 GN); None: the scheme has no such parameter.
NAME_TABLE = [
    ("conv1.weight", "stem.conv1.weight", "conv1_w", "conv1_w"),
    ("bn1.weight", "stem.conv1.norm.weight", "res_conv1_bn_s", "conv1_gn_s"),
    ("bn1.bias", "stem.conv1.norm.bias", "res_conv1_bn_b", "conv1_gn_b"),
    ("bn1.running_mean", "stem.conv1.norm.running_mean", "res_conv1_bn_rm", None),
    ("bn1.running_var", "stem.conv1.norm.running_var", "res_conv1_bn_riv", None),
    ("bn1.num_batches_tracked", "stem.conv1.norm.num_batches_tracked", None, None),
    ("layer1.0.conv1.weight", "res2.0.conv1.weight", "res2_0_branch2a_w", "res2_0_branch2a_w"),
    ("layer1.0.bn1.weight", "res2.0.conv1.norm.weight", "res2_0_branch2a_bn_s", "res2_0_branch2a_gn_s"),
    ("layer1.0.bn2.bias", "res2.0.conv2.norm.bias", "res2_0_branch2b_bn_b", "res2_0_branch2b_gn_b"),
    ("layer2.3.conv3.weight", "res3.3.conv3.weight", "res3_3_branch2c_w", "res3_3_branch2c_w"),
    ("layer3.22.bn3.running_var", "res4.22.conv3.norm.running_var", "res4_22_branch2c_bn_riv", None),
    ("layer1.0.downsample.0.weight", "res2.0.shortcut.weight", "res2_0_branch1_w", "res2_0_branch1_w"),
    ("layer4.0.downsample.1.weight", "res5.0.shortcut.norm.weight", "res5_0_branch1_bn_s",
     "res5_0_branch1_gn_s"),
    ("layer4.0.downsample.1.bias", "res5.0.shortcut.norm.bias", "res5_0_branch1_bn_b", "res5_0_branch1_gn_b"),
    ("fc.weight", "linear.weight", "pred_w", "pred_w"),
    ("fc.bias", "linear.bias", "pred_b", "pred_b"),
]


@pytest.mark.parametrize("tv,d2,c2_bn,c2_gn", NAME_TABLE)
def test_names_map_between_schemes(tv, d2, c2_bn, c2_gn):
    assert convert_name(tv, "torchvision", "detectron2") == d2
    assert convert_name(d2, "detectron2", "torchvision") == tv
    assert convert_name(tv, "torchvision", "caffe2", caffe2_norm="bn") == c2_bn
    assert convert_name(tv, "torchvision", "caffe2", caffe2_norm="gn") == c2_gn
    for c2 in (c2_bn, c2_gn):
        if c2 is not None:
            assert convert_name(c2, "caffe2", "torchvision") == tv
            assert convert_name(c2, "caffe2", "detectron2") == d2


@pytest.mark.parametrize("name,scheme", [("layer5.0.conv1.weight", "torchvision"), ("fc.running_mean", "torchvision"),
                                         ("roi_heads.box_head.fc1.weight", "detectron2"), ("fpn_inner2_w", "caffe2"),
                                         ("res2_0_branch2a_w_momentum", "caffe2"), ("layer1.0.conv1.bias2", "torchvision")])
def test_non_resnet_names_map_to_nothing(name, scheme):
    assert convert_name(name, scheme, "torchvision") is None


def _caffe2_r50_blob_names(norm):
    """The blob names of a Detectron ResNet-50, written from the Caffe2 naming rules."""
    stem_norm = "res_conv1_bn" if norm == "bn" else "conv1_gn"
    names = ["conv1_w", f"{stem_norm}_s", f"{stem_norm}_b", "pred_w", "pred_b"]
    for stage, blocks in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        for block in range(blocks):
            branches = ["branch2a", "branch2b", "branch2c"] + (["branch1"] if block == 0 else [])
            for branch in branches:
                prefix = f"res{stage}_{block}_{branch}"
                names += [f"{prefix}_w", f"{prefix}_{norm}_s", f"{prefix}_{norm}_b"]
    return names


@pytest.fixture(scope="module")
def r50_state():
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.normal_()
                m.bias.normal_()
    return {k: v for k, v in model.state_dict().items()}


def _write_caffe2(path, r50_state, norm, wrap_blobs=True, momentum=True):
    blobs = {}
    for blob in _caffe2_r50_blob_names(norm):
        blobs[blob] = r50_state[convert_name(blob, "caffe2", "torchvision")].numpy().copy()
        if momentum and blob.endswith("_w"):
            blobs[blob + "_momentum"] = np.zeros_like(blobs[blob])
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs} if wrap_blobs else blobs, f, protocol=4)


def test_caffe2_resnet50_blob_list_maps_onto_every_learned_parameter(r50_state):
    learned = {k for k in r50_state if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    for norm in ("bn", "gn"):
        mapped = [convert_name(b, "caffe2", "torchvision") for b in _caffe2_r50_blob_names(norm)]
        assert None not in mapped and len(set(mapped)) == len(mapped) == len(learned)
        assert set(mapped) == learned


def test_caffe2_bn_model_loads_as_frozen_bn_and_reproduces_scale_bias(tmp_path, r50_state):
    path = tmp_path / "R-50.pkl"
    _write_caffe2(path, r50_state, "bn")
    ckpt = read_checkpoint(path)
    assert ckpt.meta["source_format"] == "caffe2" and ckpt.meta["norm"] == "FrozenBN"
    assert ckpt.meta["stride_in_1x1"] is True  # MSRA convention
    assert sum(v == "optimizer momentum blob" for v in ckpt.dropped.values()) == 54
    model = build_resnet_for_arch("resnet50", "FrozenBN", stride_in_1x1=True)
    report = load_into_model(model, ckpt, stride_in_1x1=True)
    assert report.unused == [] and report.missing == []
    loaded = model.state_dict()
    for key, value in r50_state.items():
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(loaded[key], value), key
    bn = model.layer2[0].bn1  # folded BN: y = x * s + b, exact to float rounding
    x = torch.randn(2, 128, 3, 3)
    torch.testing.assert_close(bn(x), x * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1),
                               rtol=1e-6, atol=1e-6)


def test_caffe2_gn_model_flat_blobs(tmp_path, r50_state):
    path = tmp_path / "R-50-GN.pkl"
    _write_caffe2(path, r50_state, "gn", wrap_blobs=False, momentum=False)
    ckpt = read_checkpoint(path)
    assert ckpt.meta["norm"] == "GN" and ckpt.meta["stride_in_1x1"] is False  # FAIR GN models
    model = build_resnet_for_arch("resnet50", "GN")
    load_into_model(model, ckpt, stride_in_1x1=False)
    assert torch.equal(model.layer3[5].bn3.weight, r50_state["layer3.5.bn3.weight"])


@pytest.fixture()
def r18():
    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.normal_()
                m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.fill_(5)
    return model


@pytest.mark.parametrize("fmt", ["torchvision", "gn_det", "detectron2"])
def test_round_trip_key_by_key(tmp_path, r18, fmt):
    state = r18.state_dict()
    meta = make_meta("torchvision", "BN", stride_in_1x1=False, stride_source="test")
    path = tmp_path / ("m.pkl" if fmt == "detectron2" else "m.pth")
    skipped = write_checkpoint(Checkpoint(state, meta), path, fmt)
    back = read_checkpoint(path)
    assert back.meta["source_format"] == ("detectron2" if fmt == "detectron2" else "torchvision")
    assert back.meta["stride_in_1x1"] is False
    expected = {k for k in state if not (fmt == "detectron2" and k.endswith("num_batches_tracked"))}
    assert set(back.state_dict) == expected and set(skipped) == set(state) - expected
    for key in expected:
        assert torch.equal(back.state_dict[key], state[key]), key
    if fmt == "detectron2":
        raw = load_pickle(path)
        assert raw["matching_heuristics"] is True and "__author__" in raw
        assert set(raw["model"]) == {convert_name(k, "torchvision", "detectron2") for k in expected}
        assert isinstance(raw["model"]["res3.0.shortcut.norm.running_var"], np.ndarray)


def test_detect_format_and_unknown_content(tmp_path, r18):
    assert detect_format(r18.state_dict()) == "torchvision"
    d2 = {convert_name(k, "torchvision", "detectron2"): v for k, v in r18.state_dict().items()}
    assert detect_format(d2) == "detectron2"
    assert detect_format({"blobs": {}}) == "caffe2"
    with pytest.raises(CheckpointError, match="cannot tell the format of odd.pth"):
        detect_format({"optimizer": 3}, "odd.pth")
    path = tmp_path / "odd.pth"
    torch.save({"weights": [1, 2]}, path)
    with pytest.raises(CheckpointError, match="odd.pth"):
        read_checkpoint(path)


def test_training_script_wrapper_and_ddp_prefix(tmp_path, r18):
    path = tmp_path / "checkpoint_ep3.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in r18.state_dict().items()}, "epoch": 3}, path)
    ckpt = read_checkpoint(path)
    assert ckpt.meta["source_format"] == "torchvision" and set(ckpt.state_dict) == set(r18.state_dict())
    assert list(ckpt.dropped) == ["epoch"]


def _ckpt(model, stride_in_1x1=False, **meta):
    return Checkpoint(dict(model.state_dict()), make_meta("torchvision", "BN", stride_in_1x1=stride_in_1x1,
                                                          stride_source="test", **meta), path="src.pth")


def test_shape_mismatch_is_refused_with_key_and_shapes(r18):
    ckpt = _ckpt(r18)
    target = torchvision.models.resnet18(num_classes=10)
    with pytest.raises(CheckpointError, match=r"fc\.weight: checkpoint \(7, 512\) vs model \(10, 512\)"):
        load_into_model(target, ckpt, stride_in_1x1=False)
    assert not torch.equal(target.conv1.weight, r18.conv1.weight)  # nothing was copied


def test_missing_refused_unless_allowed_and_unused_listed(r18):
    ckpt = _ckpt(r18)
    del ckpt.state_dict["layer1.0.conv1.weight"]
    ckpt.state_dict["extra.weight"] = torch.zeros(3)
    ckpt.unmapped["fpn_inner2_w"] = torch.zeros(3)
    target = torchvision.models.resnet18(num_classes=7)
    with pytest.raises(CheckpointError, match=r"1 model tensors have no value.*layer1\.0\.conv1\.weight"):
        load_into_model(target, ckpt, stride_in_1x1=False)
    init = target.layer1[0].conv1.weight.clone()
    report = load_into_model(target, ckpt, stride_in_1x1=False, allow_missing=True)
    assert report.missing == ["layer1.0.conv1.weight"]
    assert report.unused == ["extra.weight", "fpn_inner2_w"]
    assert torch.equal(target.layer1[0].conv1.weight, init)
    assert torch.equal(target.layer2[0].bn1.running_var, r18.layer2[0].bn1.running_var)


def test_stride_placement_mismatch_is_refused():
    src = torchvision.models.resnet50()
    set_stride_in_1x1(src, True)
    ckpt = _ckpt(src, stride_in_1x1=True)
    torchvision_style = torchvision.models.resnet50()
    with pytest.raises(CheckpointError, match="stride on the 1x1 conv.*model on the 3x3"):
        load_into_model(torchvision_style, ckpt, stride_in_1x1=False)
    with pytest.raises(CheckpointError, match="layer2.0 bottleneck has its stride on the 3x3"):
        load_into_model(torchvision_style, ckpt, stride_in_1x1=True)  # the model says otherwise
    set_stride_in_1x1(torchvision_style, True)
    assert torchvision_style.layer3[0].conv1.stride == (2, 2) and torchvision_style.layer3[0].conv2.stride == (1, 1)
    load_into_model(torchvision_style, ckpt, stride_in_1x1=True)
    unknown = _ckpt(src, stride_in_1x1=None)
    with pytest.raises(CheckpointError, match="does not record where its stride is"):
        load_into_model(torchvision_style, unknown, stride_in_1x1=True)


def test_prefix_loads_into_a_submodule(r18):
    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Module()
            self.backbone.body = torchvision.models.resnet18(num_classes=7)
            self.head = nn.Linear(3, 3)

    det = Detector()
    report = load_into_model(det, _ckpt(r18), stride_in_1x1=False, prefix="backbone.body")
    assert "backbone.body.layer1.0.conv1.weight" in report.loaded and report.unused == []
    assert torch.equal(det.backbone.body.layer4[1].bn2.weight, r18.layer4[1].bn2.weight)


def test_ws_weights_refused_by_a_model_without_ws(r18):
    ws_model, _ = convert_model(torchvision.models.resnet18(num_classes=7), "GN+WS")
    ckpt = Checkpoint(dict(ws_model.state_dict()), make_meta("gn_det", "GN", ws=True, stride_in_1x1=False,
                                                             stride_source="test"))
    plain_gn = build_resnet_for_arch("resnet18", "GN", num_classes=7)
    with pytest.raises(CheckpointError, match="Weight-Standardized"):
        load_into_model(plain_gn, ckpt, stride_in_1x1=False)
    load_into_model(build_resnet_for_arch("resnet18", "GN+WS", num_classes=7), ckpt, stride_in_1x1=False)


def test_infer_arch():
    for arch in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        with torch.device("meta"):  # only the key layout matters
            state = getattr(torchvision.models, arch)().state_dict()
        assert infer_resnet_arch(state) == arch
    with pytest.raises(ValueError, match=r"basic blocks \(1, 0, 0, 0\)"):
        infer_resnet_arch({"layer1.0.conv1.weight": None})
