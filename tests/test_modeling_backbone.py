"""ResNet (2D and 3D), FPN backbone and the conv-norm WS helper: names, norms, init, freezing, strides."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from gn_det.config import get_cfg
from gn_det.layers import FrozenBatchNorm, WSConv2d, WSConv3d
from gn_det.layers.conv_norm import BATCH_NORM_TYPES, standardize_conv_norm_pairs
from gn_det.modeling.backbone.fpn import build_resnet_fpn_backbone
from gn_det.modeling.backbone.resnet import STAGE_NAMES, build_resnet, build_resnet_from_cfg

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
