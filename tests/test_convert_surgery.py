"""BN -> GN / GN+WS module surgery: what is replaced, what is WS'd, what moves, what the report says."""

import json

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d as TVFrozenBN

from gn_det.convert import BATCH_NORM_TYPES, convert_model, find_conv_norm_edges
from gn_det.layers import FrozenBatchNorm, NormSpec, WSConv2d, WSConv3d

torch.set_num_threads(1)
GN4 = NormSpec("GN", num_groups=4)
GN4_WS = NormSpec("GN", ws=True, num_groups=4)


class AllNorms(nn.Module):
    """One of every BN flavour, each fed by a conv (or linear) of the matching dims."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(3, 8, 3, padding=1)
        self.bn1d = nn.BatchNorm1d(8)
        self.c2 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn2d = nn.BatchNorm2d(8)
        self.c3 = nn.Conv2d(8, 8, 1)
        self.sync = nn.SyncBatchNorm(8)
        self.c4 = nn.Conv2d(8, 8, 1)
        self.tv_frozen = TVFrozenBN(8)
        self.c5 = nn.Conv3d(3, 8, 1)
        self.bn3d = nn.BatchNorm3d(8)
        self.c6 = nn.Conv3d(8, 8, 1)
        self.frozen = FrozenBatchNorm(8)

    def forward(self, x1, x2, x3):
        a = self.bn1d(self.c1(x1)).mean()
        b = self.tv_frozen(self.c4(self.sync(self.c3(self.bn2d(self.c2(x2)))))).mean()
        c = self.frozen(self.c6(self.bn3d(self.c5(x3)))).mean()
        return a + b + c


def _inputs(n=2):
    return (torch.randn(n, 3, 5), torch.randn(n, 3, 6, 6), torch.randn(n, 3, 2, 4, 4))


def _randomize_norms(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BATCH_NORM_TYPES):
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.randn_like(t))
                m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)


def test_every_bn_type_replaced_by_groupnorm():
    model = AllNorms()
    expected = {"bn1d": "BatchNorm1d", "bn2d": "BatchNorm2d", "sync": "SyncBatchNorm",
                "tv_frozen": "FrozenBatchNorm2d", "bn3d": "BatchNorm3d", "frozen": "FrozenBatchNorm"}
    model, report = convert_model(model, GN4, example_input=_inputs())
    assert not any(isinstance(m, BATCH_NORM_TYPES) for m in model.modules())
    assert {r.name: r.old_type for r in report.replaced} == expected
    for name in expected:
        gn = model.get_submodule(name)
        assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 4 and gn.num_channels == 8
    assert all(r.groups == 4 and r.channels == 8 and r.new_type == "GroupNorm" for r in report.replaced)
    model(*_inputs())  # still runs


def test_dim_of_dim_agnostic_norms_from_trace_and_from_feeding_conv():
    # Target "BN" makes the chosen dims visible: SyncBN and gn_det's FrozenBN have no dims of their own.
    traced, _ = convert_model(AllNorms(), "BN", example_input=_inputs())
    assert isinstance(traced.sync, nn.BatchNorm2d) and isinstance(traced.frozen, nn.BatchNorm3d)
    by_names, report = convert_model(AllNorms(), "BN")  # no input: the feeding conv decides
    assert report.edge_method == "names"
    assert isinstance(by_names.sync, nn.BatchNorm2d) and isinstance(by_names.frozen, nn.BatchNorm3d)
    assert isinstance(by_names.bn1d, nn.BatchNorm1d) and isinstance(by_names.tv_frozen, nn.BatchNorm2d)


class Branchy(nn.Module):
    """Convs that feed norms and convs that do not, seen only by tracing."""

    def __init__(self):
        super().__init__()
        self.feeds_bn = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.before_relu = nn.Conv2d(8, 8, 1)  # conv -> relu -> norm: the norm's input is not the conv's output
        self.bn_after_relu = nn.BatchNorm2d(8)
        self.feeds_gn = nn.Conv2d(8, 8, 1)
        self.gn = nn.GroupNorm(2, 8)  # already GN: left alone, but its conv is WS'd
        self.head = nn.Conv2d(8, 4, 1)  # feeds nothing
        self.c1d = nn.Conv1d(8, 8, 1)
        self.bn1d = nn.BatchNorm1d(8)

    def forward(self, x):
        x = self.bn(self.feeds_bn(x))
        x = self.bn_after_relu(torch.relu(self.before_relu(x)))
        x = self.gn(self.feeds_gn(x))
        y = self.bn1d(self.c1d(x.flatten(2)))
        return self.head(x).mean() + y.mean()


def test_gn_ws_converts_exactly_the_convs_feeding_norms():
    model, report = convert_model(Branchy(), GN4_WS, example_input=torch.randn(2, 3, 8, 8))
    assert sorted(report.ws_convs) == ["feeds_bn", "feeds_gn"]
    assert type(model.feeds_bn) is WSConv2d and type(model.feeds_gn) is WSConv2d
    assert type(model.before_relu) is nn.Conv2d and type(model.head) is nn.Conv2d
    assert type(model.c1d) is nn.Conv1d
    reasons = {a.name: a.reason for a in report.left_alone}
    assert reasons["head"] == reasons["before_relu"] == "does not feed a norm layer"
    assert "no WS counterpart" in reasons["c1d"]
    assert reasons["gn"] == "already a batch-independent norm"


def test_heuristic_and_trace_agree_on_torchvision_resnets():
    for builder in (torchvision.models.resnet18, torchvision.models.resnet50):
        model = builder()
        convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
        by_names = find_conv_norm_edges(model)
        traced = find_conv_norm_edges(model, torch.randn(1, 3, 32, 32))
        assert by_names.feeders == traced.feeders and (by_names.method, traced.method) == ("names", "trace")
        assert traced.feeding_convs() == convs  # every conv of a ResNet feeds a BN
        assert traced.feeders["layer1.0.bn1"] == ["layer1.0.conv1"]
        assert traced.feeders["layer2.0.downsample.1"] == ["layer2.0.downsample.0"]
        assert set(traced.dims.values()) == {2} and not traced.not_run and not traced.by_structure


def test_heuristic_pairs_sequential_and_d2_style_convs():
    class D2Conv(nn.Conv2d):  # detectron2's Conv2d: calls its own .norm inside forward
        def __init__(self, *a, norm=None, **k):
            super().__init__(*a, **k)
            self.norm = norm

        def forward(self, x):
            return self.norm(super().forward(x))

    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU(),
                          D2Conv(8, 8, 1, norm=nn.BatchNorm2d(8)), nn.Conv2d(8, 8, 1))
    for example in (None, torch.randn(1, 3, 4, 4)):
        edges = find_conv_norm_edges(model, example)
        assert edges.feeders == {"1": ["0"], "3.norm": ["3"]}
    converted, report = convert_model(model, GN4_WS)
    assert report.ws_convs == ["0"]
    assert isinstance(converted[3].norm, nn.GroupNorm) and type(converted[3]) is D2Conv
    assert "subclass" in {a.name: a.reason for a in report.left_alone}["3"]


def test_weight_transfer_key_by_key():
    model = AllNorms()
    _randomize_norms(model)
    conv_weights = {n: m.weight.clone() for n, m in model.named_modules() if hasattr(m, "kernel_size")}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    norm_names = [r for r in ("bn1d", "bn2d", "sync", "tv_frozen", "bn3d", "frozen")]
    model, report = convert_model(model, GN4_WS, example_input=_inputs())
    after = model.state_dict()
    for name in norm_names:
        for key in ("weight", "bias"):
            torch.testing.assert_close(after[f"{name}.{key}"], before[f"{name}.{key}"], rtol=0, atol=0)
    for name, weight in conv_weights.items():  # WS keeps the raw weights; standardization is in forward
        torch.testing.assert_close(after[f"{name}.weight"], weight, rtol=0, atol=0)
    expected_dropped = {f"{n}.{k}" for n in norm_names for k in ("running_mean", "running_var")}
    expected_dropped |= {f"{n}.num_batches_tracked" for n in ("bn1d", "bn2d", "sync", "bn3d")}
    assert set(report.dropped_keys) == expected_dropped
    assert set(before) - set(after) == expected_dropped
    assert all(sorted(r.transferred) == ["bias", "weight"] for r in report.replaced)


def test_no_transfer_leaves_identity_affine():
    model = AllNorms()
    _randomize_norms(model)
    model, report = convert_model(model, GN4, transfer_weights=False)
    assert torch.equal(model.bn2d.weight, torch.ones(8)) and torch.equal(model.bn2d.bias, torch.zeros(8))
    assert all(r.transferred == [] for r in report.replaced)


def test_report_counts_and_serializes():
    model = AllNorms()
    params_before = sum(p.numel() for p in model.parameters())
    model, report = convert_model(model, GN4_WS, example_input=_inputs())
    # BN layers keep 2*8 params each; the two frozen layers (buffers only) gain gamma/beta.
    assert report.params_before == params_before
    assert report.params_after == params_before + 2 * (2 * 8)
    assert report.params_after == sum(p.numel() for p in model.parameters())
    data = json.loads(json.dumps(report.to_dict()))
    assert data["norm"] == "GN+WS" and len(data["replaced"]) == 6 and data["edge_method"] == "trace"
    assert sorted(data["ws_convs"]) == ["c2", "c3", "c4", "c5", "c6"]  # c1 is a Conv1d
    text = report.to_text()
    for name in ("bn1d", "tv_frozen", "frozen", "FrozenBatchNorm2d", "GroupNorm", "c1"):
        assert name in text


def test_strict_group_error_names_every_offending_layer_and_changes_nothing():
    model = nn.Sequential(nn.Conv2d(3, 64, 1), nn.BatchNorm2d(64), nn.Conv2d(64, 24, 1), nn.BatchNorm2d(24),
                          nn.Conv2d(24, 40, 1), nn.BatchNorm2d(40), nn.Conv2d(40, 48, 1), nn.BatchNorm2d(48))
    with pytest.raises(ValueError) as info:
        convert_model(model, "GN+WS")
    message = str(info.value)
    assert "32 groups" in message and "of 3 layer(s)" in message and "--group-policy" in message
    for name, channels in (("3", 24), ("5", 40), ("7", 48)):
        assert f"'{name}' ({channels} channels)" in message
    assert "'1' (64" not in message and "\n" not in message
    assert all(isinstance(model[i], nn.BatchNorm2d) and type(model[i - 1]) is nn.Conv2d for i in (1, 3, 5, 7))


def test_trace_keeps_statistics_and_modes():
    model = torchvision.models.resnet18().train()
    find_conv_norm_edges(model, torch.randn(2, 3, 32, 32))
    # A train-mode forward would have moved the statistics and counted a batch.
    assert torch.equal(model.bn1.running_mean, torch.zeros(64)) and int(model.bn1.num_batches_tracked) == 0
    assert all(m.training for m in model.modules())
    model, _ = convert_model(model, GN4, example_input=torch.randn(2, 3, 32, 32))
    assert model.training and model.layer1[0].bn1.training  # the new GN layers inherit train mode


def test_root_norm_is_returned():
    new, report = convert_model(nn.BatchNorm2d(8), GN4)
    assert isinstance(new, nn.GroupNorm) and report.replaced[0].name == ""


def test_3d_ws():
    model = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8))
    model, report = convert_model(model, GN4_WS)
    assert type(model[0]) is WSConv3d and isinstance(model[1], nn.GroupNorm)


@pytest.mark.parametrize("norm", ["GN", "GN+WS"])
def test_converted_model_is_per_sample_in_train_mode(norm):
    torch.manual_seed(0)
    bn_model = torchvision.models.resnet18(num_classes=10).train()
    batch = torch.randn(4, 3, 64, 64)  # layer4 keeps 2x2 positions, so BN trains on one image
    with torch.no_grad():
        alone, together = bn_model(batch[:1]), bn_model(batch)[:1]
    assert (alone - together).abs().max() > 1e-3  # BN: a sample's output depends on its batch
    gn_model, _ = convert_model(bn_model, norm, example_input=batch[:1])
    gn_model.train()
    with torch.no_grad():
        alone, together = gn_model(batch[:1]), gn_model(batch)[:1]
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-5)
