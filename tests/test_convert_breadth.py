"""The converter beyond ResNets: group policies, WS coverage of torchvision's video / Inception
models, norms fed by several convs, flat BatchNorm1d, frozen layers, and the reasons it reports."""

import warnings

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import video as tv_video
from torchvision.ops import FrozenBatchNorm2d as TVFrozenBN

from gn_det.convert import convert_model, find_conv_norm_edges
from gn_det.layers import FrozenBatchNorm, NormSpec, WSConv2d, WSConv3d, group_count, standardize_weight

torch.set_num_threads(1)
DIVISOR_WS = NormSpec("GN", ws=True, group_policy="divisor")


def _divisors(c):
    return [d for d in range(1, c + 1) if c % d == 0]


@pytest.mark.parametrize("channels,divisor,per16", [(24, 24, 2), (40, 20, 2), (45, 15, 3), (16, 16, 1),
                                                    (64, 32, 4), (96, 32, 6), (7, 7, 1), (1152, 32, 72)])
def test_group_policies(channels, divisor, per16):
    assert group_count(NormSpec("GN", group_policy="divisor"), channels) == divisor
    assert group_count(NormSpec("GN", group_policy="channels_per_group", channels_per_group=16), channels) == per16
    if channels % 32:
        with pytest.raises(ValueError, match=f"{channels} channels are not divisible by 32 groups"):
            group_count(NormSpec("GN"), channels, "layer")
    else:
        assert group_count(NormSpec("GN"), channels) == 32


def test_group_policies_against_brute_force():
    for g in (1, 8, 32):
        for c in range(1, 300):
            got = group_count(NormSpec("GN", num_groups=g, group_policy="divisor"), c)
            assert got == max(d for d in _divisors(c) if d <= g)
    for cpg in (4, 16):
        for c in range(1, 300):
            size = c // group_count(NormSpec("GN", group_policy="channels_per_group", channels_per_group=cpg), c)
            best = min(abs(d - cpg) for d in _divisors(c))
            assert c % size == 0 and abs(size - cpg) == best


def test_group_policy_spec_errors():
    with pytest.raises(ValueError, match="Unknown group policy 'nearest'"):
        NormSpec("GN", group_policy="nearest")
    with pytest.raises(ValueError, match="needs a positive channels_per_group"):
        NormSpec("GN", group_policy="channels_per_group")


def test_mobilenet_v2_strict_lists_every_layer_divisor_reports_every_layer():
    model = torchvision.models.mobilenet_v2(num_classes=10)
    widths = {n: m.num_features for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    offending = {n: c for n, c in widths.items() if c % 32}
    assert len(widths) == 52 and len(offending) == 7
    with pytest.raises(ValueError) as info:
        convert_model(model, "GN+WS")
    for name, c in offending.items():
        assert f"'{name}' ({c} channels)" in str(info.value)
    assert f"of {len(offending)} layer(s)" in str(info.value)
    assert all(isinstance(model.get_submodule(n), nn.BatchNorm2d) for n in widths)  # nothing changed

    converted, report = convert_model(model, DIVISOR_WS, example_input=torch.randn(1, 3, 64, 64))
    assert [r.name for r in report.replaced] == list(widths)
    text = report.to_text()
    for r in report.replaced:
        gn = converted.get_submodule(r.name)
        assert r.groups == gn.num_groups == max(d for d in _divisors(widths[r.name]) if d <= 32)
        assert f"{r.name}  " in text
    assert sorted(r.name for r in report.groups_changed()) == sorted(offending)
    assert f"{len(offending)} layers changed by the policy" in text
    assert len(report.ws_convs) == len(report.convs_feeding_norms) == 52


@pytest.mark.parametrize("builder", [tv_video.r3d_18, tv_video.mc3_18])
def test_video_resnet_subclassed_convs_are_ws(builder):
    model = builder(num_classes=5)
    assert sum(type(m) is not nn.Conv3d for m in model.modules() if isinstance(m, nn.Conv3d)) == 16
    clip = torch.randn(1, 3, 4, 32, 32)
    converted, report = convert_model(model, "GN+WS", example_input=clip)
    assert len(report.replaced) == 20 and len(report.ws_convs) == len(report.convs_feeding_norms) == 20
    assert not [a for a in report.left_alone if "conv" in a.type.lower()]
    assert sum(type(m) is WSConv3d for m in converted.modules()) == 20
    # the Conv3DSimple / Conv3DNoTemporal replacements compute the standardized conv of the same weights
    conv = converted.layer2[0].conv1[0]
    x = torch.randn(1, conv.in_channels, 4, 8, 8)
    expected = nn.functional.conv3d(x, standardize_weight(conv.weight), None, conv.stride, conv.padding)
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=0)


def test_r2plus1d_without_example_input_covers_all_37():
    model = tv_video.r2plus1d_18(num_classes=5)
    names = find_conv_norm_edges(model)
    traced = find_conv_norm_edges(model, torch.randn(1, 3, 4, 32, 32))
    assert names.feeders == traced.feeders and len(names.feeders) == 37
    assert names.feeders["layer1.0.conv1.1"] == ["layer1.0.conv1.0.3"]  # Conv2Plus1D's temporal conv
    _, report = convert_model(model, DIVISOR_WS)
    assert report.edge_method == "names" and len(report.ws_convs) == 37


# Inception v3's aux head needs a 17x17 map at Mixed_6e (299 px) to run; its trace runs at 80 px.
@pytest.mark.parametrize("name,trace_size,train_size,aux", [
    ("googlenet", 64, 64, ["aux1.conv.bn", "aux2.conv.bn"]),
    ("inception_v3", 80, 299, ["AuxLogits.conv0.bn", "AuxLogits.conv1.bn"])])
def test_aux_head_convs_are_ws_and_every_train_mode_norm_input_is_standardized(name, trace_size, train_size, aux):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = torchvision.models.get_model(name, weights=None, num_classes=10, init_weights=False)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    converted, report = convert_model(model, DIVISOR_WS, example_input=torch.randn(1, 3, trace_size, trace_size))
    assert report.norms_by_structure == aux
    assert len(report.ws_convs) == len(report.convs_feeding_norms) == n_bn
    assert "did not run in the traced pass" in report.to_text()
    # in train mode the aux heads run: every GroupNorm's input must come straight from a WS conv
    ws_outputs, seen = set(), []
    hooks = [m.register_forward_hook(lambda mod, a, out: ws_outputs.add(id(out)))
             for m in converted.modules() if isinstance(m, WSConv2d)]
    hooks += [m.register_forward_pre_hook(lambda mod, a: seen.append(id(a[0]) in ws_outputs))
              for m in converted.modules() if isinstance(m, nn.GroupNorm)]
    converted.train()
    with torch.no_grad():
        out = converted(torch.randn(1, 3, train_size, train_size))
    for h in hooks:
        h.remove()
    assert out.aux_logits is not None if name == "inception_v3" else out.aux_logits2 is not None
    assert len(seen) == n_bn and all(seen)


class SharedNorm(nn.Module):
    """One BN module normalizing two different convs' outputs (two calls)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn(self.a(x)) + self.bn(self.b(x))


def test_norm_fed_by_two_convs_gets_both_standardized():
    edges = find_conv_norm_edges(SharedNorm(), torch.randn(1, 3, 6, 6))
    assert edges.feeders == {"bn": ["a", "b"]}
    converted, report = convert_model(SharedNorm(), NormSpec("GN", ws=True, num_groups=4),
                                      example_input=torch.randn(1, 3, 6, 6))
    assert report.ws_convs == ["a", "b"] and type(converted.a) is type(converted.b) is WSConv2d


class Odd(nn.Module):
    """Convs that feed a norm but cannot be WS'd, and convs that feed none, each for its own reason."""

    class OwnForward(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    def __init__(self):
        super().__init__()
        self.c1d = nn.Conv1d(3, 8, 1)
        self.bn1d = nn.BatchNorm1d(8)
        self.up = nn.ConvTranspose2d(3, 8, 2, stride=2)
        self.bn_up = nn.BatchNorm2d(8)
        self.own = Odd.OwnForward(3, 8, 1)
        self.bn_own = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 1, groups=8)  # one weight per output channel
        self.bn_dw = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 2, 1)
        self.never = nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU())  # never called in eval mode

    def forward(self, x):
        a = self.bn1d(self.c1d(x.flatten(2))).mean()
        b = self.bn_up(self.up(x)).mean()
        y = self.bn_own(self.own(x))
        y = self.bn_dw(self.dw(y))
        if self.training:
            y = self.never(y)
        return a + b + self.head(y).mean()


def test_every_left_alone_conv_has_its_true_reason():
    _, report = convert_model(Odd(), NormSpec("GN", ws=True, num_groups=4), example_input=torch.randn(2, 3, 4, 4))
    reasons = {a.name: a.reason for a in report.left_alone}
    assert report.ws_convs == [] and sorted(report.convs_feeding_norms) == ["c1d", "dw", "own", "up"]
    assert "Conv1d (WS exists for Conv2d/Conv3d only)" in reasons["c1d"]
    assert "ConvTranspose2d (WS exists for Conv2d/Conv3d only)" in reasons["up"]
    assert "subclass with its own forward" in reasons["own"]
    assert "one weight per output channel" in reasons["dw"]
    assert reasons["head"] == "does not feed a norm layer"
    assert reasons["never.0"].startswith("did not run in the traced forward pass")
    assert set(reasons) == {"c1d", "up", "own", "dw", "head", "never.0"}


class MLPHead(nn.Module):
    """Conv features, then Linear -> BatchNorm1d over flat (N, C) features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 32)
        self.bn_flat = nn.BatchNorm1d(32, eps=1e-3)
        self.out = nn.Linear(32, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        return self.out(torch.relu(self.bn_flat(self.fc(x))))


@pytest.mark.parametrize("traced", [True, False])
def test_flat_batchnorm1d_is_frozen_as_bn_inference(traced):
    torch.manual_seed(0)
    model = MLPHead().eval()
    with torch.no_grad():
        model.bn_flat.weight.uniform_(0.5, 2)
        model.bn_flat.bias.normal_()
        model.bn_flat.running_mean.normal_()
        model.bn_flat.running_var.uniform_(0.2, 3)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        flat_in = model.fc(torch.relu(model.bn(model.conv(x))).mean((2, 3)))
        bn_eval = model.bn_flat(flat_in)
    converted, report = convert_model(model, NormSpec("GN", num_groups=4), example_input=x if traced else None)
    frozen = converted.bn_flat
    assert type(frozen) is FrozenBatchNorm and frozen.eps == 1e-3
    assert isinstance(converted.bn, nn.GroupNorm)
    note = {r.name: r.note for r in report.replaced}["bn_flat"]
    assert note.startswith("flat (N, C) features")
    converted.train()  # frozen: the same in train mode, and batch-independent
    with torch.no_grad():
        torch.testing.assert_close(frozen(flat_in), bn_eval, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(converted(x[:1]), converted(x)[:1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="'bn_flat'.*flat \\(N, C\\) features"):
        convert_model(MLPHead(), NormSpec("GN", num_groups=4), example_input=x, flat_norm="refuse")


def test_conv1d_batchnorm1d_is_not_flat():
    model = nn.Sequential(nn.Conv1d(3, 8, 3), nn.BatchNorm1d(8))
    converted, report = convert_model(model, NormSpec("GN", num_groups=4))
    assert isinstance(converted[1], nn.GroupNorm) and report.replaced[0].note == ""


def test_frozen_layers_stay_frozen():
    model = torchvision.models.resnet18(num_classes=10)
    for p in list(model.conv1.parameters()) + list(model.bn1.parameters()) + list(model.layer1.parameters()):
        p.requires_grad_(False)
    model.layer2[0].bn1.bias.requires_grad_(False)  # a single frozen tensor
    expected = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert len(expected) == 3 + 2 * 6 + 1  # stem conv + bn, layer1's 2 blocks, one bias
    converted, _ = convert_model(model, "GN+WS", example_input=torch.randn(1, 3, 32, 32))
    assert {n for n, p in converted.named_parameters() if not p.requires_grad} == expected
    assert type(converted.conv1) is WSConv2d and isinstance(converted.layer1[0].bn1, nn.GroupNorm)


@pytest.mark.parametrize("traced", [True, False])
def test_buffer_only_frozen_bn_follows_its_conv(traced):
    # torchvision's detection backbones: FrozenBatchNorm2d everywhere, stem and layer1 convs frozen.
    model = torchvision.models.resnet18(norm_layer=TVFrozenBN, num_classes=10)
    for p in list(model.conv1.parameters()) + list(model.layer1.parameters()):
        p.requires_grad_(False)
    converted, _ = convert_model(model, "GN", example_input=torch.randn(1, 3, 32, 32) if traced else None)
    gn = {n: m for n, m in converted.named_modules() if isinstance(m, nn.GroupNorm)}
    assert len(gn) == 20
    still = {n for n, m in gn.items() if not m.weight.requires_grad and not m.bias.requires_grad}
    assert still == {"bn1"} | {f"layer1.{b}.bn{i}" for b in (0, 1) for i in (1, 2)}
    assert all(m.weight.requires_grad and m.bias.requires_grad for n, m in gn.items() if n not in still)


def test_cli_group_policy_and_caffe2_output_with_ws_folded(tmp_path, capsys):
    import json

    from gn_det.checkpoint import read_checkpoint
    from gn_det.cli.convert_checkpoint import main

    src = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), src)
    assert main([str(src), "--norm", "gn+ws", "--num-groups", "24", "--group-policy", "divisor",
                 "--output-format", "caffe2"]) == 0
    out = tmp_path / "r18_gnws.pkl"  # the default name takes the .pkl suffix
    assert "caffe2 will fine-tune them as plain convs" in capsys.readouterr().out
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    groups = {r["name"]: (r["channels"], r["groups"]) for r in report["conversion"]["replaced"]}
    assert len(groups) == 20 and set(groups.values()) == {(64, 16), (128, 16), (256, 16), (512, 16)}
    assert report["conversion"]["group_policy"] == "divisor"
    ckpt = read_checkpoint(out)
    assert ckpt.meta["ws"] is False and ckpt.meta["ws_folded"] is True and ckpt.meta["source_format"] == "caffe2"
    source = torch.load(src, weights_only=True)["layer3.0.conv2.weight"]
    torch.testing.assert_close(ckpt.state_dict["layer3.0.conv2.weight"], standardize_weight(source), rtol=0, atol=0)
