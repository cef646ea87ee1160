"""detectron2's own torchvision->d2 .pkl, and GN+WS weights written to formats without WS convs."""

import pickle

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from gn_det.checkpoint import (Checkpoint, CheckpointError, load_into_model, load_pickle, make_meta, read_checkpoint,
                               write_checkpoint)
from gn_det.checkpoint.formats import fold_ws_weights, ws_weight_keys
from gn_det.checkpoint.loading import check_resnet_compatible
from gn_det.cli.convert_checkpoint import main as convert_main
from gn_det.convert import build_resnet_for_arch
from gn_det.layers import WSConv2d, WSConv3d, standardize_weight

torch.set_num_threads(1)


def _all_different(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Fill every tensor of ``model`` with distinct values (a swapped or dropped tensor must show)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, (name, t) in enumerate(model.state_dict().items()):
            if name.endswith("num_batches_tracked"):
                t.fill_(1000 + i)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g))
    return {k: v.clone() for k, v in model.state_dict().items()}


def _convert_torchvision_to_d2(state: dict[str, torch.Tensor]) -> dict:
    """What detectron2's tools/convert-torchvision-to-d2.py writes, step by step."""
    newmodel = {}
    for k in list(state):
        old_k = k
        if "layer" not in k:
            k = "stem." + k
        for t in [1, 2, 3, 4]:
            k = k.replace(f"layer{t}", f"res{t + 1}")
        for t in [1, 2, 3]:
            k = k.replace(f"bn{t}", f"conv{t}.norm")
        k = k.replace("downsample.0", "shortcut")
        k = k.replace("downsample.1", "shortcut.norm")
        newmodel[k] = state[old_k].detach().numpy()
    return {"model": newmodel, "__author__": "torchvision", "matching_heuristics": True}


def test_detectron2_tool_pkl_of_current_torchvision_resnet50_loads_whole(tmp_path):
    source = torchvision.models.resnet50()
    state = _all_different(source)
    raw = _convert_torchvision_to_d2(state)
    assert raw["model"]["stem.conv1.norm.num_batches_tracked"].shape == ()  # 0-d, as the tool writes it
    assert "stem.fc.weight" in raw["model"] and "res2.0.shortcut.norm.running_var" in raw["model"]
    path = tmp_path / "R-50-tv.pkl"
    with open(path, "wb") as f:
        pickle.dump(raw, f)

    ckpt = read_checkpoint(path)
    assert ckpt.meta["source_format"] == "detectron2" and ckpt.meta["stride_in_1x1"] is False
    assert not ckpt.unmapped and not ckpt.dropped
    assert set(ckpt.state_dict) == set(state)  # 320 tensors, fc included
    for key, value in state.items():
        assert ckpt.state_dict[key].shape == value.shape, key
        assert torch.equal(ckpt.state_dict[key], value), key

    target = torchvision.models.resnet50()
    report = load_into_model(target, ckpt, stride_in_1x1=False)
    assert len(report.loaded) == len(state) == 320 and not report.unused
    for key, value in target.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_zero_d_and_fortran_arrays_keep_shape_and_values(tmp_path):
    fortran = np.asfortranarray(np.arange(64 * 3 * 7 * 7, dtype=np.float32).reshape(64, 3, 7, 7))
    raw = {"model": {"stem.conv1.weight": fortran, "stem.conv1.norm.num_batches_tracked": np.array(7)},
           "__author__": "someone", "matching_heuristics": True}
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(raw))
    ckpt = read_checkpoint(path)
    assert ckpt.state_dict["bn1.num_batches_tracked"].shape == () and int(ckpt.state_dict["bn1.num_batches_tracked"]) == 7
    assert torch.equal(ckpt.state_dict["conv1.weight"], torch.from_numpy(np.ascontiguousarray(fortran)))


def test_stem_fc_and_linear_together_are_refused(tmp_path):
    raw = {"model": {"stem.fc.weight": np.ones((3, 4), np.float32), "linear.weight": np.zeros((3, 4), np.float32)},
           "__author__": "torchvision"}
    path = tmp_path / "both.pkl"
    path.write_bytes(pickle.dumps(raw))
    with pytest.raises(CheckpointError, match="both stem.fc.* and linear.*"):
        read_checkpoint(path)


@pytest.mark.parametrize("cls,shape", [(WSConv2d, (2, 6, 9, 9)), (WSConv3d, (2, 6, 3, 7, 7))])
@pytest.mark.parametrize("mode", ["authors", "paper", "timm"])
def test_folded_weights_make_a_plain_conv_compute_the_ws_conv(cls, shape, mode):
    torch.manual_seed(0)
    net = nn.Sequential(cls(6, 8, 3, padding=1, bias=True, ws_mode=mode), nn.ReLU(), nn.Conv2d(8, 4, 1)
                        if cls is WSConv2d else nn.Conv3d(8, 4, 1))
    with torch.no_grad():
        net[0].weight.mul_(3).add_(0.7)  # far from standardized: folding must change it
    state = net.state_dict()
    keys = ws_weight_keys(net)
    assert keys == ["0.weight"]
    folded = fold_ws_weights(state, keys, mode)
    assert torch.equal(state["0.weight"], net[0].weight) and folded["2.weight"] is state["2.weight"]
    assert (folded["0.weight"] - state["0.weight"]).abs().max() > 0.5
    x = torch.randn(shape)
    conv = F.conv2d if cls is WSConv2d else F.conv3d
    plain = conv(x, folded["0.weight"], folded["0.bias"], padding=1)
    torch.testing.assert_close(plain, net[0](x), rtol=0, atol=0)  # the same computation: bit-exact


def test_fold_refuses_missing_and_non_conv_keys():
    with pytest.raises(CheckpointError, match="'a.weight': missing"):
        fold_ws_weights({}, ["a.weight"])
    with pytest.raises(CheckpointError, match="not a conv weight"):
        fold_ws_weights({"fc.weight": torch.ones(3, 4)}, ["fc.weight"])


def _gn_ws_resnet18():
    torch.manual_seed(0)
    model = build_resnet_for_arch("resnet18", "GN+WS", stride_in_1x1=False, num_classes=10).eval()
    _all_different(model, seed=1)
    return model


@pytest.mark.parametrize("fmt", ["detectron2", "caffe2"])
def test_gn_ws_written_without_ws_convs_is_folded_and_exact(tmp_path, fmt):
    ws_model = _gn_ws_resnet18()
    meta = make_meta("gn_det", "GN", ws=True, stride_in_1x1=False, stride_source="test")
    path = tmp_path / f"r18_gnws_{fmt}.pkl"
    write_checkpoint(Checkpoint(ws_model.state_dict(), meta), path, fmt)

    raw = load_pickle(path)
    stored = raw["model"]["res2.0.conv1.weight"] if fmt == "detectron2" else raw["blobs"]["res2_0_branch2a_w"]
    expected = standardize_weight(ws_model.layer1[0].conv1.weight.detach(), "authors")
    assert torch.equal(torch.from_numpy(stored), expected)
    saved_meta = raw["gn_det_meta"]
    assert saved_meta["ws"] is False and saved_meta["ws_folded"] is True and saved_meta["ws_folded_convs"] == 20

    ckpt = read_checkpoint(path)
    plain = build_resnet_for_arch("resnet18", "GN", stride_in_1x1=False, num_classes=10).eval()
    load_into_model(plain, ckpt, stride_in_1x1=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference, folded = ws_model(x), plain(x)
        torch.testing.assert_close(folded, reference, rtol=1e-5, atol=1e-5)
        # what a detectron2 file of the raw (unfolded) weights computed: far off
        unfolded = build_resnet_for_arch("resnet18", "GN", stride_in_1x1=False, num_classes=10).eval()
        unfolded.load_state_dict(ws_model.state_dict())
        assert (unfolded(x) - reference).abs().max() > 1.0


def test_caffe2_output_folds_bn_and_reads_back_as_frozen_bn(tmp_path):
    bn_model = build_resnet_for_arch("resnet18", "BN", stride_in_1x1=False, num_classes=10).eval()
    state = _all_different(bn_model, seed=2)
    meta = make_meta("torchvision", "BN", stride_in_1x1=False, stride_source="test")
    path = tmp_path / "r18_bn_c2.pkl"
    skipped = write_checkpoint(Checkpoint(state, meta), path, "caffe2")
    assert sorted({k.rsplit(".", 1)[1] for k in skipped}) == ["num_batches_tracked", "running_mean", "running_var"]
    blobs = load_pickle(path)["blobs"]
    scale = state["layer3.1.bn2.weight"] / (state["layer3.1.bn2.running_var"] + 1e-5).sqrt()
    torch.testing.assert_close(torch.from_numpy(blobs["res4_1_branch2b_bn_s"]), scale)
    torch.testing.assert_close(torch.from_numpy(blobs["res4_1_branch2b_bn_b"]),
                               state["layer3.1.bn2.bias"] - state["layer3.1.bn2.running_mean"] * scale)
    ckpt = read_checkpoint(path)
    assert ckpt.meta["norm"] == "FrozenBN" and ckpt.meta["stride_in_1x1"] is False  # from gn_det_meta
    frozen = build_resnet_for_arch("resnet18", "FrozenBN", stride_in_1x1=False, num_classes=10).eval()
    load_into_model(frozen, ckpt, stride_in_1x1=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), bn_model(x), rtol=1e-4, atol=1e-4)


def test_ws_refusals_name_the_way_out(tmp_path):
    ws_model = _gn_ws_resnet18()
    meta = make_meta("gn_det", "GN", ws=True, stride_in_1x1=False, stride_source="test")
    path = tmp_path / "r18_gnws.pth"
    write_checkpoint(Checkpoint(ws_model.state_dict(), meta), path, "gn_det")
    with pytest.raises(CheckpointError, match="torchvision ResNets have no WS convs.*detectron2 / caffe2"):
        write_checkpoint(Checkpoint(ws_model.state_dict(), meta), tmp_path / "tv.pth", "torchvision")

    plain = build_resnet_for_arch("resnet18", "GN", stride_in_1x1=False, num_classes=10).eval()
    ckpt = read_checkpoint(path)
    with pytest.raises(CheckpointError, match=rf"gn-det-convert {path} --norm gn"):
        check_resnet_compatible(ckpt, plain, stride_in_1x1=False)
    # the command the message names folds WS, and its output loads into the plain model exactly
    out = tmp_path / "r18_gn.pth"
    assert convert_main([str(path), "--norm", "gn", "--output", str(out)]) == 0
    load_into_model(plain, read_checkpoint(out), stride_in_1x1=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), ws_model(x), rtol=1e-5, atol=1e-5)
