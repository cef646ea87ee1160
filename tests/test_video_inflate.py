"""2D -> 3D inflation: identical frames give the 2D features (BN, GN, GN+WS), key-by-key values, centre
inflation, WS-aware kernels, and every checkpoint format through the one loading path."""

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gn_det.checkpoint.formats import make_meta, Checkpoint, write_checkpoint
from gn_det.checkpoint.inflate import inflate_conv_weight, inflate_state_dict
from gn_det.checkpoint.io import CheckpointError, atomic_save
from gn_det.config import load_config
from gn_det.engine.trainer import load_model_weights
from gn_det.layers.norm import parse_norm
from gn_det.layers.ws_conv import WS_MODES, standardize_weight
from gn_det.modeling.backbone.resnet import build_resnet
from gn_det.modeling.classifier import ResNetClassifier
from gn_det.modeling.video_resnet import build_video_model, i3d_resnet
from gn_det.tasks.video import VideoTask

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "video", "synthetic", "r3d_18_gn_test.yaml")


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Every float tensor gets its own random values (norm scales and variances positive), so a tensor
    loaded under the wrong key shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, v in model.state_dict().items():
            if not v.dtype.is_floating_point:
                continue
            if key.endswith("running_var"):
                v.copy_(torch.rand(v.shape, generator=g, dtype=v.dtype) + 0.5)
            elif v.dim() == 1 and key.endswith("weight") and "fc" not in key:  # norm gamma
                v.copy_(torch.rand(v.shape, generator=g, dtype=v.dtype) * 0.5 + 0.5)
            elif v.dim() == 1:
                v.copy_(torch.randn(v.shape, generator=g, dtype=v.dtype) * 0.1)
            else:  # He-like scale keeps activations finite through 50 layers
                v.copy_(torch.randn(v.shape, generator=g, dtype=v.dtype) * (2.0 / v[0].numel()) ** 0.5 + 0.01)
    return model


def _replicate_time_padding(model: nn.Module) -> None:
    """Pad time by repeating the edge frames instead of zeros (test only: see gn_det.checkpoint.inflate)."""
    for m in model.modules():
        if isinstance(m, nn.Conv3d) and m.padding[0] > 0:
            p = m.padding[0]
            m.padding = (0,) + tuple(m.padding[1:])
            m.register_forward_pre_hook(lambda mod, inp, p=p: (F.pad(inp[0], (0, 0, 0, 0, p, p), mode="replicate"),))


def _features_2d_3d(depth: int, norm: str, mode: str = "mean", eps: float = 1e-5, replicate: bool = True):
    """(2D pooled res5 feature of an image, 3D pooled feature of a clip of 8 copies), float64, eval mode."""
    spec = parse_norm(norm, eps=eps)
    net2d = _randomize(build_resnet(depth, spec, 2).double(), seed=depth).eval()
    net3d = i3d_resnet(depth, spec, num_classes=3).double().eval()
    state, report = inflate_state_dict({f"resnet.{k}": v for k, v in net2d.state_dict().items()}, net3d, mode)
    missing, unexpected = net3d.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("head.") for k in missing)
    if replicate:
        _replicate_time_padding(net3d)
    image = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        f2 = net2d(image).mean(dim=(2, 3))
        f3 = net3d.features(image.unsqueeze(2).repeat(1, 1, 8, 1, 1))
    return f2, f3, report


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("norm", ["BN", "GN", "GN+WS"])
def test_identical_frames_give_the_2d_features(norm):
    f2, f3, report = _features_2d_3d(50, norm)
    assert len(report.inflated) == 53 and dict(report.temporal_sizes) == {5: 1, 3: 9, 1: 43}
    # BN (eval) and GN: exact up to float64 rounding. GN+WS: the inflated WS conv outputs s times the
    # 2D one (s = 3 or 5 here), which GN removes except through its eps: GN(s z) uses eps / s^2.
    assert _rel(f3, f2) < (1e-5 if norm == "GN+WS" else 1e-11), norm
    if norm == "GN+WS":
        f2, f3, report = _features_2d_3d(50, norm, eps=0.0)  # without GN's eps the match is exact
        assert _rel(f3, f2) < 1e-11
        assert len(report.ws_inflated) == 53 and max(report.output_scale.values()) == pytest.approx(5.0, rel=1e-2)


def test_basic_block_nets_inflate_exactly_too():
    f2, f3, report = _features_2d_3d(18, "GN")
    assert _rel(f3, f2) < 1e-11 and dict(report.temporal_sizes) == {5: 1, 3: 5, 1: 14}


def test_zero_time_padding_breaks_mean_inflation_at_the_clip_ends_but_not_centre_inflation():
    f2, f3, _ = _features_2d_3d(18, "BN", replicate=False)
    assert _rel(f3, f2) > 1e-3  # the documented caveat: edge frames see the zero padding
    f2, f3, _ = _features_2d_3d(18, "GN", mode="center", replicate=False)
    assert _rel(f3, f2) < 1e-11


@pytest.mark.parametrize("ws_mode", sorted(WS_MODES))
@pytest.mark.parametrize("mode", ["mean", "center"])
def test_ws_inflated_kernel_standardizes_to_the_2d_kernel(ws_mode, mode):
    w2d = torch.randn(8, 4, 3, 3, dtype=torch.float64) * 0.02 + 0.003  # small std, non-zero mean: eps matters
    w3d, scale = inflate_conv_weight(w2d, 3, mode, ws_mode)
    hat2d, hat3d = standardize_weight(w2d, ws_mode), standardize_weight(w3d, ws_mode)
    torch.testing.assert_close(hat3d.sum(dim=2), scale * hat2d, rtol=1e-12, atol=1e-12)
    if mode == "mean":  # every time step holds the same multiple of the 2D standardized kernel
        for k in range(3):
            torch.testing.assert_close(hat3d[:, :, k], hat3d[:, :, 0], rtol=1e-12, atol=1e-12)
    else:  # off-centre taps standardize to zero
        assert hat3d[:, :, 0].abs().max() < 1e-12 and hat3d[:, :, 2].abs().max() < 1e-12
    # plain (not WS) inflation is the textbook formula, bit for bit
    plain, one = inflate_conv_weight(w2d.float(), 3, mode)
    want = w2d.float().unsqueeze(2).repeat(1, 1, 3, 1, 1) / 3 if mode == "mean" else torch.zeros_like(plain)
    if mode == "center":
        want[:, :, 1] = w2d.float()
    assert torch.equal(plain, want) and one == 1.0


def test_inflation_stays_on_the_weights_device():
    # "meta" stands in for a GPU here: any tensor the inflation makes on the CPU would clash with it
    for ws_mode in (None, "authors"):
        for mode in ("mean", "center"):
            w3d, _ = inflate_conv_weight(torch.empty(4, 2, 3, 3, device="meta"), 3, mode, ws_mode)
            assert w3d.device.type == "meta" and w3d.shape == (4, 2, 3, 3, 3)


# ------------------------------------------------------------------------ through the loading path
def _cfg(*opts):
    return load_config(CONFIG, list(opts))


def _expected(key: str, value: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
    if value.dim() == 4 and target.dim() == 5:
        t = target.shape[2]
        if mode == "mean":
            return value.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
        out = torch.zeros_like(target)
        out[:, :, t // 2] = value
        return out
    return value


@pytest.mark.parametrize("mode", ["mean", "center"])
def test_torchvision_bn_checkpoint_key_by_key_and_the_fc_left_at_init(tmp_path, mode):
    net2d = _randomize(build_resnet(18, "BN", num_classes=1000), seed=5)
    path = tmp_path / "resnet18.pth"
    torch.save(net2d.state_dict(), path)  # a torchvision state dict, fc of 1000 classes
    cfg = _cfg("MODEL.RESNETS.NORM", "BN", "MODEL.INFLATE", mode)
    model = build_video_model(cfg)
    fc_before = model.head.fc.weight.clone()
    report = load_model_weights(cfg, model, str(path), VideoTask())
    own, src = model.state_dict(), net2d.state_dict()
    for key, value in src.items():
        if key.startswith("fc."):
            continue
        assert torch.equal(own[f"resnet.{key}"], _expected(key, value, own[f"resnet.{key}"], mode)), key
    assert torch.equal(model.head.fc.weight, fc_before)  # 1000 classes vs 6: left at its init, reported
    assert {k for k, *_ in report.shape_mismatched} == {"head.fc.weight", "head.fc.bias"}
    assert not report.missing and not report.unexpected
    assert len(report.loaded) == len(src) - 2
    assert any(n.startswith(f"inflated 20 conv weights 2D -> 3D ({mode}") for n in report.notes)
    assert any(n.startswith("copied ") for n in report.notes)


def test_converter_gn_ws_output_and_ws_refused_by_a_plain_model(tmp_path):
    net2d = _randomize(build_resnet(18, parse_norm("GN+WS", num_groups=8)), seed=6)
    ckpt = Checkpoint({k: v for k, v in net2d.state_dict().items()},
                      make_meta("torchvision", "GN+WS", ws=True, stride_in_1x1=False, stride_source="test"))
    path = tmp_path / "R-18-gn-ws.pth"
    write_checkpoint(ckpt, path, "gn_det")
    cfg = _cfg("MODEL.RESNETS.NORM", "GN+WS")
    model = build_video_model(cfg)
    report = load_model_weights(cfg, model, str(path), VideoTask())
    assert any("feed Weight-Standardized convs" in n for n in report.notes)
    # layer2.0.conv1 is 3x3x3: each time step standardizes to alpha x the 2D kernel's standardization
    conv = model.resnet.layer2[0].conv1.weight.detach().double()
    n, t = 64 * 3 * 3, 3
    alpha = ((n * t - 1) / (t * (n - 1))) ** 0.5  # the authors' WS uses the unbiased std
    want = standardize_weight(net2d.layer2[0].conv1.weight.detach().double(), "authors")
    hat = standardize_weight(conv, "authors")
    for k in range(t):
        torch.testing.assert_close(hat[:, :, k], alpha * want, rtol=1e-5, atol=1e-5)
    plain_cfg = _cfg("MODEL.RESNETS.NORM", "GN")
    with pytest.raises(CheckpointError, match="Weight-Standardized"):
        load_model_weights(plain_cfg, build_video_model(plain_cfg), str(path), VideoTask())


def test_detectron2_pkl_loads_and_deeper_or_shallower_nets_are_refused(tmp_path):
    net2d = _randomize(build_resnet(18, "FrozenBN"), seed=7)
    ckpt = Checkpoint(dict(net2d.state_dict()), make_meta("detectron2", "FrozenBN", stride_in_1x1=False,
                                                          stride_source="test"))
    path = tmp_path / "R-18.pkl"
    write_checkpoint(ckpt, path, "detectron2")
    cfg = _cfg("MODEL.RESNETS.NORM", "FrozenBN")
    model = build_video_model(cfg)
    report = load_model_weights(cfg, model, str(path), VideoTask())
    assert torch.equal(model.resnet.bn1.running_var, net2d.bn1.running_var)
    assert torch.equal(model.resnet.conv1.weight, net2d.conv1.weight.unsqueeze(2).repeat(1, 1, 5, 1, 1) / 5)
    assert report.missing == ["head.fc.weight", "head.fc.bias"]  # a backbone-only file: the head stays at init
    deeper = tmp_path / "r34.pth"
    torch.save(build_resnet(34, "BN").state_dict(), deeper)
    bn_cfg = _cfg("MODEL.RESNETS.NORM", "BN")
    with pytest.raises(CheckpointError, match="deeper"):
        load_model_weights(bn_cfg, build_video_model(bn_cfg), str(deeper), VideoTask())
    shallower = tmp_path / "r18.pth"
    torch.save(build_resnet(18, "BN").state_dict(), shallower)
    r34_cfg = _cfg("MODEL.RESNETS.NORM", "BN", "MODEL.RESNETS.DEPTH", "34")
    with pytest.raises(CheckpointError, match="does not fill resnet"):
        load_model_weights(r34_cfg, build_video_model(r34_cfg), str(shallower), VideoTask())


def test_classification_checkpoint_inflates_fc_included_and_video_checkpoints_load_by_name(tmp_path):
    classifier = ResNetClassifier(_randomize(build_resnet(18, parse_norm("GN", num_groups=8), num_classes=6), seed=8),
                                  [0.0] * 3, [1.0] * 3)
    path = tmp_path / "model_final.pth"
    atomic_save({"model": classifier.state_dict(), "iteration": 99}, path)  # a classification training checkpoint
    cfg = _cfg()
    model = build_video_model(cfg)
    report = load_model_weights(cfg, model, str(path), VideoTask())
    assert torch.equal(model.head.fc.weight, classifier.resnet.fc.weight)  # 6 classes here too: it fits
    assert torch.equal(model.resnet.layer4[1].bn2.bias, classifier.resnet.layer4[1].bn2.bias)
    assert report.notes[0] == "gn_det classification checkpoint (resnet.* keys)"
    assert not report.missing and not report.shape_mismatched and not report.unexpected

    video_path = tmp_path / "video.pth"
    atomic_save({"model": model.state_dict(), "iteration": 3}, video_path)
    again = build_video_model(cfg)
    report = load_model_weights(cfg, again, str(video_path), VideoTask())
    assert report.notes == ["video checkpoint (3D): loaded by name, no inflation"]
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
