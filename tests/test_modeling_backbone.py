"""ResNet (2D and 3D), FPN backbone and the conv-norm WS helper: names, norms, init, freezing, strides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from gn_det.config import get_cfg
from gn_det.convert import set_stride_in_1x1
from gn_det.layers import FrozenBatchNorm, WSConv2d, WSConv3d
from gn_det.layers.conv_norm import BATCH_NORM_TYPES, standardize_conv_norm_pairs
from gn_det.layers.norm import get_norm_layer
from gn_det.modeling.backbone.fpn import ResNetFPN, build_resnet_fpn_backbone
from gn_det.modeling.backbone.resnet import (OUT_FEATURE_NAMES, STAGE_NAMES, ResNet, build_resnet,
                                             build_resnet_from_cfg)

torch.set_num_threads(1)

NORMS = ["FrozenBN", "BN", "SyncBN", "GN", "GN+WS", "LN", "IN", ""]


def _expected_norm_type(norm: str) -> type | None:
    base = norm.replace("+WS", "")
    return {"FrozenBN": FrozenBatchNorm, "BN": nn.BatchNorm2d, "SyncBN": nn.SyncBatchNorm, "GN": nn.GroupNorm,
            "LN": nn.GroupNorm, "IN": nn.GroupNorm, "": None}[base]


def _norm_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules()
            if n.rsplit(".", 1)[-1].startswith("bn") or n.endswith("downsample.1")}


@pytest.mark.parametrize("depth,tv_builder", [(18, torchvision.models.resnet18), (50, torchvision.models.resnet50)])
def test_resnet_names_shapes_and_outputs_match_torchvision(depth, tv_builder):
    ours = build_resnet(depth, "BN", num_classes=1000).eval()
    ref = tv_builder().eval()
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in ref.named_modules()]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("depth,kwargs,tv_builder", [
    (34, {}, torchvision.models.resnet34),
    (101, {}, torchvision.models.resnet101),
    (50, {"groups": 32, "width_per_group": 4}, torchvision.models.resnext50_32x4d),
])
def test_other_depths_and_resnext_match_torchvision_shapes(depth, kwargs, tv_builder):
    ours = build_resnet(depth, "BN", num_classes=1000, **kwargs)
    ref = tv_builder()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert ours.layer1[0].conv2.groups == kwargs.get("groups", 1)
    with pytest.raises(ValueError, match="Unsupported ResNet depth 42"):
        build_resnet(42, "GN")


def test_torchvision_state_dict_loads_into_frozenbn_and_gn_bodies():
    ref = torchvision.models.resnet18()
    frozen = build_resnet(18, "FrozenBN")  # no fc: the classifier keys are the only unexpected ones
    result = frozen.load_state_dict(ref.state_dict(), strict=False)
    assert result.missing_keys == [] and sorted(result.unexpected_keys) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(frozen.layer3[1].bn2.running_var, ref.layer3[1].bn2.running_var)
    # FrozenBN applies exactly BN's eval-mode affine.
    x = torch.randn(1, 3, 64, 64)
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), nn.Sequential(*list(ref.children())[:-2])(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", NORMS)
def test_resnet_uses_exactly_the_requested_norm_and_conv(norm):
    model = build_resnet(18, norm)
    expected = _expected_norm_type(norm)
    layers = _norm_layers(model)
    assert len(layers) == 1 + 8 * 2 + 3  # stem + 2 per block + 3 downsample norms
    for name, m in layers.items():
        if expected is None:
            assert isinstance(m, nn.Identity), name
        else:
            assert type(m) is expected, name
    if norm in ("GN", "GN+WS", "LN", "IN"):
        assert not any(isinstance(m, BATCH_NORM_TYPES) for m in model.modules())
    groups = {n: m.num_groups for n, m in layers.items() if isinstance(m, nn.GroupNorm)}
    if norm.startswith("GN"):
        assert set(groups.values()) == {32}
    elif norm == "LN":
        assert set(groups.values()) == {1}
    elif norm == "IN":
        assert all(g == layers[n].num_channels for n, g in groups.items())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20
    assert all(isinstance(c, WSConv2d) == norm.endswith("+WS") for c in convs)
    assert all((c.bias is not None) == (norm == "") for c in convs)  # convs feeding no norm need a bias
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 512, 2, 2) and torch.isfinite(out).all()


def test_cfg_group_norm_settings_reach_the_layers():
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.NORM = 18, "GN+WS"
    cfg.MODEL.GROUP_NORM.NUM_GROUPS, cfg.MODEL.GROUP_NORM.EPS, cfg.MODEL.WS_MODE = 16, 1e-3, "timm"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    model = build_resnet_from_cfg(cfg)
    assert model.layer2[0].bn1.num_groups == 16 and model.layer2[0].bn1.eps == 1e-3
    assert model.layer2[0].conv1.ws_mode == "timm"
    cfg.MODEL.GROUP_NORM.CHANNELS_PER_GROUP = 16
    assert build_resnet_from_cfg(cfg).layer4[0].bn1.num_groups == 512 // 16
    cfg.MODEL.RESNETS.NORM = "GroupNorm"
    with pytest.raises(ValueError, match="MODEL.RESNETS.NORM"):
        build_resnet_from_cfg(cfg)


@pytest.mark.parametrize("norm", ["GN", "BN"])
def test_init_kaiming_convs_and_zero_gamma_on_last_norm_of_each_block(norm):
    model = build_resnet(50, norm)
    w = model.layer4[0].conv2.weight  # 512 x 512 x 3 x 3, fan_out = 512 * 9
    assert abs(w.std().item() / (2.0 / (512 * 9)) ** 0.5 - 1) < 0.05
    for stage in STAGE_NAMES[1:]:
        for block in getattr(model, stage):
            assert torch.all(block.bn3.weight == 0) and torch.all(block.bn1.weight == 1)
            assert torch.all(block.bn2.weight == 1)
    assert torch.all(model.bn1.weight == 1)
    plain = build_resnet(50, norm, zero_init_residual=False)
    assert torch.all(plain.layer2[1].bn3.weight == 1)
    # FrozenBN has no learnable gamma: zeroing it would kill every residual branch for good.
    assert torch.all(build_resnet(18, "FrozenBN").layer1[0].bn2.weight == 1)


@pytest.mark.parametrize("freeze_at", range(6))
def test_freeze_at_freezes_stages_and_their_bn_statistics(freeze_at):
    model = build_resnet(18, "BN", freeze_at=freeze_at, zero_init_residual=False)
    for i, stage in enumerate(STAGE_NAMES):
        frozen = i < freeze_at
        params = [p for m in model.stage_modules(stage) for p in m.parameters()]
        assert params and all(p.requires_grad != frozen for p in params), stage
        norms = [m for m in model.stage_modules(stage) for m in m.modules() if isinstance(m, BATCH_NORM_TYPES)]
        assert norms and all(isinstance(n, FrozenBatchNorm) == frozen for n in norms), stage
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    model.train()
    model(torch.randn(2, 3, 64, 64) * 3 + 1)
    after = model.state_dict()
    for k, v in before.items():
        stage_index = 0 if k.startswith("bn1") else int(k[5])  # "layerN..."
        changed = not torch.equal(v, after[k])
        assert changed == (stage_index >= freeze_at), k


def test_freeze_keeps_bn_checkpoint_keys_and_rejects_bad_values():
    model = build_resnet(18, "BN", freeze_at=2)
    ref = torchvision.models.resnet18()
    result = model.load_state_dict(ref.state_dict(), strict=False)
    assert result.missing_keys == []  # FrozenBN keeps BN's keys
    assert all(k.startswith("fc.") or k.endswith("num_batches_tracked") for k in result.unexpected_keys)
    gn = build_resnet(18, "GN", freeze_at=3)
    assert not any(p.requires_grad for p in gn.layer2.parameters())
    assert all(p.requires_grad for p in gn.layer3.parameters())
    with pytest.raises(ValueError, match="freeze_at must be in 0..5"):
        build_resnet(18, "GN", freeze_at=6)


def test_stride_in_1x1_moves_the_stride_to_the_first_conv():
    x = torch.randn(1, 3, 64, 64)
    for flag, s1, s2 in ((False, (1, 1), (2, 2)), (True, (2, 2), (1, 1))):
        model = build_resnet(50, "GN", stride_in_1x1=flag).eval()
        for stage in ("layer2", "layer3", "layer4"):
            block = getattr(model, stage)[0]
            assert block.conv1.stride == s1 and block.conv2.stride == s2 and block.downsample[0].stride == (2, 2)
        assert model.layer1[0].conv1.stride == (1, 1) and model.layer2[1].conv2.stride == (1, 1)
        assert model(x).shape == (1, 2048, 2, 2)


def test_resnet_3d_shapes_temporal_kernels_and_gn_over_time():
    temporal = [3, [3, 1, 3, 1], [3, 1, 3, 1, 3, 1], [1, 3, 1]]  # PySlowFast's I3D R-50 pattern
    model = build_resnet(50, "GN", dim=3, stem_temporal_kernel=5, temporal_kernels=temporal, num_classes=7)
    assert model.conv1.kernel_size == (5, 7, 7) and model.conv1.stride == (1, 2, 2)
    assert model.maxpool.kernel_size == (1, 3, 3)
    assert [b.conv1.kernel_size[0] for b in model.layer2] == [3, 1, 3, 1]
    assert [b.conv1.kernel_size[0] for b in model.layer4] == [1, 3, 1]
    assert model.layer3[0].conv2.kernel_size == (1, 3, 3) and model.layer3[0].conv2.stride == (1, 2, 2)
    # Same names as the 2D model, so 2D weights inflate key for key.
    assert list(model.state_dict()) == list(build_resnet(50, "GN", num_classes=7).state_dict())

    seen = {}
    model.layer1[0].bn1.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o.clone()))  # ReLU is in place
    x = torch.randn(2, 3, 4, 32, 32)
    assert model(x).shape == (2, 7)
    inp, out = seen["x"], seen["y"]
    n, c, t, h, w = inp.shape
    g = model.layer1[0].bn1.num_groups
    grouped = inp.reshape(n, g, c // g, t, h, w)  # GN paper: moments over (C/G, T, H, W)
    mean = grouped.mean(dim=(2, 3, 4, 5), keepdim=True)
    var = grouped.var(dim=(2, 3, 4, 5), unbiased=False, keepdim=True)
    ref = ((grouped - mean) / torch.sqrt(var + 1e-5)).reshape_as(inp)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)

    ws = build_resnet(18, "GN+WS", dim=3)
    assert all(isinstance(m, WSConv3d) for m in ws.modules() if isinstance(m, nn.Conv3d))
    with pytest.raises(ValueError, match="dim=3"):
        build_resnet(18, "GN", temporal_kernels=[3, 1, 1, 1])


def _fpn_cfg(fpn_norm: str, body_norm: str = "GN"):
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.NORM = 18, body_norm
    cfg.MODEL.FPN.NORM, cfg.MODEL.FPN.OUT_CHANNELS = fpn_norm, 64
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    return cfg


@pytest.mark.parametrize("norm", NORMS)
def test_fpn_norms_and_ws_convs(norm):
    backbone = build_resnet_fpn_backbone(_fpn_cfg(norm, body_norm="GN"))
    fpn = backbone.fpn
    expected = _expected_norm_type(norm)
    blocks = list(fpn.inner_blocks) + list(fpn.layer_blocks)
    assert len(blocks) == 8
    for block in blocks:
        conv = block[0]
        assert isinstance(conv, WSConv2d) == norm.endswith("+WS")
        assert (conv.bias is not None) == (expected is None)
        if expected is None:
            assert len(block) == 1
        else:
            assert type(block[1]) is expected
    if norm.startswith("GN"):
        assert not any(isinstance(m, BATCH_NORM_TYPES) for m in backbone.modules())
    backbone.eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 128, 96))
    assert list(feats) == ["0", "1", "2", "3", "pool"]
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(32, 24), (16, 12), (8, 6), (4, 3), (2, 2)]
    assert all(f.shape[1] == 64 for f in feats.values())


def test_fpn_out_features_subset_and_bad_names():
    cfg = _fpn_cfg("GN")
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    backbone = build_resnet_fpn_backbone(cfg)
    assert [b[0].in_channels for b in backbone.fpn.inner_blocks] == [128, 256, 512]
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res6"]
    with pytest.raises(ValueError, match="res6|OUT_FEATURES"):
        build_resnet_fpn_backbone(cfg)


def test_standardize_conv_norm_pairs_swaps_only_convs_feeding_norms():
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU()),  # no norm after it: stays plain
        nn.Conv2d(8, 4, 1),
        nn.Sequential(nn.Conv2d(4, 4, 1), FrozenBatchNorm(4)),
    )
    originals = [m.weight.clone() for m in module.modules() if isinstance(m, nn.Conv2d)]
    assert standardize_conv_norm_pairs(module, "GN") == 0
    assert standardize_conv_norm_pairs(module, "GN+WS") == 2
    assert isinstance(module[0][0], WSConv2d) and isinstance(module[3][0], WSConv2d)
    assert type(module[1][0]) is nn.Conv2d and type(module[2]) is nn.Conv2d
    torch.testing.assert_close(module[0][0].weight, originals[0])
    assert list(module.state_dict()) == ["0.0.weight", "0.0.bias", "0.1.weight", "0.1.bias", "1.0.weight",
                                         "1.0.bias", "2.weight", "2.bias", "3.0.weight", "3.0.bias",
                                         "3.1.weight", "3.1.bias", "3.1.running_mean", "3.1.running_var"]
    assert standardize_conv_norm_pairs(module, "GN+WS") == 0  # already WS: idempotent


# ---------------------------------------------------------------------------------------------
# Named outputs (out_features), temporal strides / pooling, and the ResNetFPN without copies.
# ---------------------------------------------------------------------------------------------

ALL_OUT = list(OUT_FEATURE_NAMES)


def _jitter_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Move every parameter off its init (zero gammas would hide a wrong residual path)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return module


@pytest.mark.parametrize("depth,channels", [(18, [64, 64, 128, 256, 512]), (50, [64, 256, 512, 1024, 2048])])
def test_out_features_2d_names_shapes_strides_and_same_values(depth, channels):
    full = _jitter_(build_resnet(depth, "GN")).eval()
    named = build_resnet(depth, "GN", out_features=["res5", "stem", "res3", "res2", "res4"]).eval()
    assert list(named.state_dict()) == list(full.state_dict())  # same torchvision keys
    named.load_state_dict(full.state_dict())
    assert named.out_features == ALL_OUT  # network order, whatever order was asked
    assert named.out_channels == dict(zip(ALL_OUT, channels))
    assert named.out_strides == {"stem": 4, "res2": 4, "res3": 8, "res4": 16, "res5": 32}
    assert named.out_temporal_strides == dict.fromkeys(ALL_OUT, 1)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feats = named(x)
        ref = full(x)
    assert list(feats) == ALL_OUT
    assert [tuple(f.shape) for f in feats.values()] == [
        (2, c, 64 // s, 96 // s) for c, s in zip(channels, [4, 4, 8, 16, 32])]
    torch.testing.assert_close(feats["res5"], ref, rtol=0, atol=0)
    stem = full.maxpool(full.relu(full.bn1(full.conv1(x))))
    with torch.no_grad():
        torch.testing.assert_close(feats["stem"], stem, rtol=0, atol=0)
        torch.testing.assert_close(feats["res3"], full.layer2(full.layer1(stem)), rtol=0, atol=0)
    # Without out_features: a tensor, and out_channels/out_strides still describe every stage.
    assert isinstance(ref, torch.Tensor) and full.out_features is None
    assert full.out_strides["res5"] == 32 and full.out_channels["res5"] == channels[-1]


def test_out_features_subset_builds_only_needed_stages():
    model = build_resnet(18, "GN", out_features=["res3", "res4"], freeze_at=5)
    assert [n for n, _ in model.named_children()] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2",
                                                      "layer3"]
    assert not any(k.startswith("layer4") for k in model.state_dict())
    assert model.out_channels == {"res3": 128, "res4": 256} and model.out_strides == {"res3": 8, "res4": 16}
    assert not any(p.requires_grad for p in model.parameters())  # freeze_at=5 skips the missing layer4
    feats = model(torch.randn(1, 3, 64, 64))
    assert list(feats) == ["res3", "res4"] and feats["res4"].shape == (1, 256, 4, 4)
    stem_only = build_resnet(18, "GN", out_features=["stem"])
    assert not hasattr(stem_only, "layer1") and stem_only(torch.randn(1, 3, 32, 32))["stem"].shape == (1, 64, 8, 8)


def test_out_features_errors_list_the_valid_names():
    with pytest.raises(ValueError, match=r"\['res1'\].*\['stem', 'res2', 'res3', 'res4', 'res5'\]"):
        build_resnet(18, "GN", out_features=["res1", "res2"])
    with pytest.raises(ValueError, match="layer4"):
        build_resnet(18, "GN", out_features=["layer4"])  # torchvision's module name is not an output name
    with pytest.raises(ValueError, match="twice"):
        build_resnet(18, "GN", out_features=["res2", "res2"])
    with pytest.raises(ValueError, match="at least one"):
        build_resnet(18, "GN", out_features=[])
    with pytest.raises(TypeError, match="list of names"):
        build_resnet(18, "GN", out_features="res5")
    with pytest.raises(ValueError, match="num_classes"):
        build_resnet(18, "GN", out_features=["res5"], num_classes=10)


def test_build_resnet_from_cfg_reads_out_features_only_when_asked():
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.NORM = 18, "GN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res5"]
    assert build_resnet_from_cfg(cfg).out_features is None  # as before: last stage only
    assert build_resnet_from_cfg(cfg, out_features=True).out_features == ["res3", "res5"]
    assert build_resnet_from_cfg(cfg, out_features=["stem"]).out_features == ["stem"]
    assert build_resnet_from_cfg(cfg, 3, temporal_pool=2).temporal_pool is not None  # kwargs still pass through


def test_out_features_3d_shapes_match_the_reported_strides():
    model = build_resnet(18, "GN", dim=3, out_features=ALL_OUT, temporal_strides=[1, 2, 1, 2],
                         temporal_pool=2).eval()
    x = torch.randn(1, 3, 16, 64, 64)
    with torch.no_grad():
        feats = model(x)
    assert model.out_temporal_strides == {"stem": 1, "res2": 1, "res3": 4, "res4": 4, "res5": 8}
    for name, f in feats.items():
        t_stride, stride = model.out_temporal_strides[name], model.out_strides[name]
        assert tuple(f.shape) == (1, model.out_channels[name], 16 // t_stride, 64 // stride, 64 // stride), name


@pytest.mark.parametrize("depth,stride_in_1x1", [(18, False), (50, False), (50, True)])
def test_temporal_strides_halve_time_where_asked(depth, stride_in_1x1):
    model = build_resnet(depth, "GN", dim=3, temporal_strides=[2, 1, 2, 1], stride_in_1x1=stride_in_1x1,
                         out_features=["res2", "res3", "res4", "res5"]).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 8, 32, 32))
    assert [f.shape[2] for f in feats.values()] == [4, 4, 2, 2]
    assert [f.shape[-1] for f in feats.values()] == [8, 4, 2, 1]
    strided = "conv1" if depth == 18 or stride_in_1x1 else "conv2"  # the conv with the spatial stride
    other = {"conv1": "conv2", "conv2": "conv1"}[strided]
    for stage, (t, s) in {"layer1": (2, 1), "layer2": (1, 2), "layer3": (2, 2), "layer4": (1, 2)}.items():
        first = getattr(model, stage)[0]
        assert getattr(first, strided).stride == (t, s, s), stage
        assert getattr(first, other).stride == (1, 1, 1), stage
        assert first.downsample[0].stride == (t, s, s), stage
        assert all(c.stride == (1, 1, 1) for b in getattr(model, stage)[1:] for c in b.modules()
                   if isinstance(c, nn.Conv3d)), stage
    if depth == 18:  # layer1 keeps its width, so the temporal stride alone asks for a shortcut conv
        assert build_resnet(18, "GN", dim=3).layer1[0].downsample is None
    with pytest.raises(ValueError, match="temporal_strides other than 1 need dim=3"):
        build_resnet(18, "GN", temporal_strides=[1, 2, 1, 1])
    with pytest.raises(ValueError, match="one positive int per stage"):
        build_resnet(18, "GN", dim=3, temporal_strides=[1, 2])


def test_temporal_pool_halves_time_after_res2_without_new_keys():
    plain = _jitter_(build_resnet(18, "GN", dim=3, out_features=ALL_OUT)).eval()
    pooled = build_resnet(18, "GN", dim=3, out_features=ALL_OUT, temporal_pool=2).eval()
    assert list(pooled.state_dict()) == list(plain.state_dict())
    pooled.load_state_dict(plain.state_dict())
    assert isinstance(pooled.temporal_pool, nn.MaxPool3d) and not list(pooled.temporal_pool.state_dict())
    assert pooled.temporal_pool.kernel_size == (2, 1, 1) and pooled.temporal_pool.stride == (2, 1, 1)
    assert plain.temporal_pool is None and "temporal_pool" not in dict(plain.named_modules())
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        a, b = plain(x), pooled(x)
        torch.testing.assert_close(b["res2"], a["res2"], rtol=0, atol=0)  # res2 is read before the pool
        torch.testing.assert_close(b["res3"], plain.layer2(nn.functional.max_pool3d(a["res2"], (2, 1, 1))),
                                   rtol=0, atol=0)
    assert [f.shape[2] for f in b.values()] == [8, 8, 4, 4, 4]
    # The plain (tensor) forward pools too.
    body = build_resnet(18, "GN", dim=3, temporal_pool=2).eval()
    assert body(x).shape == (1, 512, 4, 1, 1)
    with pytest.raises(ValueError, match="temporal_pool other than 1 needs dim=3"):
        build_resnet(18, "GN", temporal_pool=2)
    with pytest.raises(ValueError, match="positive int"):
        build_resnet(18, "GN", dim=3, temporal_pool=0)


def test_i3d_temporal_kernels_stem_and_padding():
    """PySlowFast's I3D R-50: stem 5x7x7 / (1, 2, 2), pool (1, 3, 3) / (1, 2, 2), pool1 [2, 1, 1]."""
    temporal = [3, [3, 1, 3, 1], [3, 1, 3, 1, 3, 1], [1, 3, 1]]
    model = build_resnet(50, "GN", dim=3, stem_temporal_kernel=5, temporal_kernels=temporal, temporal_pool=2,
                         out_features=ALL_OUT).eval()
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == ((5, 7, 7), (1, 2, 2), (2, 3, 3))
    assert (model.maxpool.kernel_size, model.maxpool.stride, model.maxpool.padding) == \
        ((1, 3, 3), (1, 2, 2), (0, 1, 1))
    assert [b.conv1.kernel_size[0] for b in model.layer1] == [3, 3, 3]
    assert [b.conv1.kernel_size[0] for b in model.layer3] == [3, 1, 3, 1, 3, 1]
    assert [b.conv1.kernel_size[0] for b in model.layer4] == [1, 3, 1]
    for m in model.modules():  # temporal padding k // 2: T is kept at temporal stride 1
        if isinstance(m, nn.Conv3d):
            assert m.padding[0] == m.kernel_size[0] // 2
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 8, 32, 32))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "stem": (1, 64, 8, 8, 8), "res2": (1, 256, 8, 8, 8), "res3": (1, 512, 4, 4, 4),
        "res4": (1, 1024, 4, 2, 2), "res5": (1, 2048, 4, 1, 1)}
    assert all(torch.isfinite(f).all() for f in feats.values())
    with pytest.raises(ValueError, match="odd"):
        build_resnet(18, "GN", dim=3, temporal_kernels=[2, 1, 1, 1])
    with pytest.raises(ValueError, match="odd"):
        build_resnet(18, "GN", dim=3, stem_temporal_kernel=4)


@pytest.mark.parametrize("temporal_strides", [None, [1, 2, 1, 1]])
def test_set_stride_in_1x1_moves_only_the_spatial_stride_in_3d(temporal_strides):
    model = build_resnet(50, "GN", dim=3, temporal_strides=temporal_strides).eval()
    t = 1 if temporal_strides is None else 2
    assert model.layer2[0].conv2.stride == (t, 2, 2)
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        shape = model(x).shape
    assert set_stride_in_1x1(model, True) == 3
    for stage in ("layer2", "layer3", "layer4"):
        block = getattr(model, stage)[0]
        tt = t if stage == "layer2" else 1
        assert block.conv1.stride == (1, 2, 2) and block.conv2.stride == (tt, 1, 1), stage  # never (2, 2, 2)
    with torch.no_grad():
        assert model(x).shape == shape
    assert set_stride_in_1x1(model, False) == 3
    assert model.layer2[0].conv1.stride == (1, 1, 1) and model.layer2[0].conv2.stride == (t, 2, 2)
    assert model.layer3[0].conv2.stride == (1, 2, 2)
    flat = build_resnet(50, "GN")  # 2D is unchanged
    set_stride_in_1x1(flat, True)
    assert flat.layer3[0].conv1.stride == (2, 2) and flat.layer3[0].conv2.stride == (1, 1)


def _state_listing(module: nn.Module) -> list[str]:
    return [f"{k} {','.join(map(str, v.shape))}" for k, v in module.state_dict().items()]


@pytest.mark.parametrize("case", ["r18_gn", "r50_gnws", "r18_res3_res4"])
def test_fpn_state_dict_keys_and_shapes_unchanged(case):
    """Keys/shapes as the BackboneWithFPN version produced them (listed in _OLD_FPN_KEYS)."""
    depth, body_norm, fpn_norm, channels, feats = _OLD_FPN_CASES[case]
    cfg = _fpn_cfg(fpn_norm, body_norm=body_norm)
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.FPN.OUT_CHANNELS, cfg.MODEL.RESNETS.OUT_FEATURES = depth, channels, feats
    backbone = build_resnet_fpn_backbone(cfg)
    assert _state_listing(backbone) == _OLD_FPN_KEYS[case].split("\n")


def _old_backbone(body: ResNet, layers: list[str], out_channels: int, fpn_norm: str) -> BackboneWithFPN:
    """The previous implementation: torchvision's BackboneWithFPN (an IntermediateLayerGetter copy)."""
    ref = BackboneWithFPN(body, return_layers={layer: str(i) for i, layer in enumerate(layers)},
                          in_channels_list=[body.stage_channels[layer] for layer in layers],
                          out_channels=out_channels, extra_blocks=LastLevelMaxPool(),
                          norm_layer=get_norm_layer(fpn_norm))
    standardize_conv_norm_pairs(ref.fpn, fpn_norm)
    return ref


@pytest.mark.parametrize("body_norm,fpn_norm,feats,freeze_at", [
    ("GN+WS", "GN+WS", ["res2", "res3", "res4", "res5"], 0),
    ("GN", "", ["res3", "res4"], 0),
    ("BN", "GN", ["res2", "res3", "res4", "res5"], 2),
])
def test_fpn_forward_equals_torchvision_backbone_with_fpn(body_norm, fpn_norm, feats, freeze_at):
    cfg = _fpn_cfg(fpn_norm, body_norm=body_norm)
    cfg.MODEL.RESNETS.OUT_FEATURES, cfg.MODEL.BACKBONE.FREEZE_AT = feats, freeze_at
    new = _jitter_(build_resnet_fpn_backbone(cfg)).eval()
    layers = [f"layer{int(f[3]) - 1}" for f in feats]
    old = _old_backbone(build_resnet(18, body_norm, freeze_at=freeze_at), layers, 64, fpn_norm).eval()
    assert _state_listing(new) == _state_listing(old)
    old.load_state_dict(new.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        a, b = new(x), old(x)
    assert list(a) == list(b) == [str(i) for i in range(len(feats))] + ["pool"]
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), k


def test_fpn_body_is_the_resnet_and_freeze_is_visible():
    cfg = _fpn_cfg("GN", body_norm="BN")
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    backbone = build_resnet_fpn_backbone(cfg)
    assert isinstance(backbone, ResNetFPN) and type(backbone.body) is ResNet
    assert backbone.in_features == ["res2", "res3", "res4", "res5"] and backbone.out_channels == 64
    assert backbone.body.out_strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    assert backbone.body.norm.name == "BN" and backbone.body.stride_in_1x1 is False
    assert isinstance(backbone.body.bn1, FrozenBatchNorm) and isinstance(backbone.body.layer1[0].bn1, FrozenBatchNorm)
    assert type(backbone.body.layer2[0].bn1) is nn.BatchNorm2d
    # Freezing later, through the detector's backbone, reaches what its forward runs.
    backbone.body.freeze(3)
    assert isinstance(backbone.get_submodule("body.layer2.0.bn1"), FrozenBatchNorm)
    assert not any(p.requires_grad for p in backbone.body.layer2.parameters())
    before = {k: v.clone() for k, v in backbone.state_dict().items() if "running_mean" in k}
    backbone.train()
    backbone(torch.randn(2, 3, 64, 64) * 3 + 1)
    changed = {k for k, v in backbone.state_dict().items() if k in before and not torch.equal(v, before[k])}
    assert changed and all(k.startswith(("body.layer3", "body.layer4")) for k in changed)
    with pytest.raises(ValueError, match="out_features"):
        ResNetFPN(build_resnet(18, "GN"), 64, "GN")
    with pytest.raises(ValueError, match="stem"):
        ResNetFPN(build_resnet(18, "GN", out_features=["stem", "res2"]), 64, "GN")
    with pytest.raises(ValueError, match="dim=2"):
        ResNetFPN(build_resnet(18, "GN", dim=3, out_features=["res2"]), 64, "GN")


# (depth, body norm, FPN norm, FPN channels, OUT_FEATURES) of the listings below.
_OLD_FPN_CASES = {
    "r18_gn": (18, "GN", "GN", 64, ["res2", "res3", "res4", "res5"]),
    "r50_gnws": (50, "GN+WS", "GN+WS", 256, ["res2", "res3", "res4", "res5"]),
    "r18_res3_res4": (18, "GN", "", 32, ["res3", "res4"]),  # the old body dropped layer4: no keys
}
# Generated with the BackboneWithFPN implementation (before ResNetFPN used the ResNet as-is):
# "<state-dict key> <shape>" per line, in state-dict order.
_OLD_FPN_KEYS = {name: "\n".join(lines) for name, lines in json.loads(
    (Path(__file__).parent / "data" / "fpn_keys_before_resnetfpn.json").read_text()).items()}
