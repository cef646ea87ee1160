"""GN calibration: per-channel output statistics match the BN reference, layer by layer."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gn_det.convert.calibrate import CalibrationError, _normalized_channel_moments, calibrate
from gn_det.convert.surgery import convert_model
from gn_det.layers import parse_norm

GN4 = parse_norm("GN", num_groups=4)


class TinyNet(nn.Module):
    """conv-BN-ReLU x3 with a residual add, pooled features, linear head.

    ``bn2`` is registered before ``bn1`` on purpose: module order differs from execution order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(x + self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))


def make_reference(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics and affine
            m.running_mean.normal_(0, 1.0)
            m.running_var.uniform_(0.2, 3.0)
            m.weight.data.uniform_(0.5, 2.0)
            m.bias.data.normal_(0, 0.5)
    return net.eval()


def make_images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # per-image brightness and contrast, so per-sample (GN) and fixed (BN) statistics differ
    x = torch.randn(n, 3, 12, 12, generator=g) * torch.rand(n, 1, 1, 1, generator=g) * 2
    return x + torch.randn(n, 3, 1, 1, generator=g)


def norm_output_stats(model: nn.Module, names, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Plain reference: per-channel (mean, std) of each named layer's output over all of ``x``."""
    outs = {}
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(lambda m, a, o, n=n: outs.__setitem__(n, o.double()))
               for n in names]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return {n: (o.mean((0, 2, 3)), o.std((0, 2, 3), unbiased=False)) for n, o in outs.items()}


def convert(reference: nn.Module, norm=GN4) -> nn.Module:
    return convert_model(copy.deepcopy(reference), norm=norm)[0]


NAMES = ["bn1", "bn2", "bn3"]


@pytest.mark.parametrize("norm", [GN4, parse_norm("GN+WS", num_groups=4)], ids=["GN", "GN+WS"])
def test_calibrated_outputs_match_reference_statistics(norm):
    ref = make_reference()
    gn = convert(ref, norm)
    x = make_images(24, seed=1)
    want = norm_output_stats(ref, NAMES, x)
    before = norm_output_stats(gn, NAMES, x)
    # the naive transfer is clearly off (else this test could not fail)
    assert max(float((before[n][0] - want[n][0]).abs().max()) for n in NAMES) > 0.3

    report = calibrate(ref, gn, x, batch_size=5, progress=False)
    got = norm_output_stats(gn, NAMES, x)
    for n in NAMES:
        torch.testing.assert_close(got[n][0], want[n][0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[n][1], want[n][1], atol=1e-4, rtol=1e-4)
    # execution order, not registration order; before/after mismatch reported
    assert [layer.name for layer in report.layers] == NAMES
    assert all(layer.after_mean_err < 1e-6 and layer.after_std_err < 1e-6 for layer in report.layers)
    assert report.summary()["before_mean_err"] > 0.1
    assert report.num_images == 24


def test_heldout_features_closer_than_naive():
    ref = make_reference()
    naive = convert(ref)
    calibrated = copy.deepcopy(naive)
    calibrate(ref, calibrated, make_images(64, seed=2), progress=False)
    held = make_images(64, seed=3)
    feats = {}
    for name, net in [("ref", ref), ("naive", naive), ("cal", calibrated)]:
        net.fc.register_forward_pre_hook(lambda m, a, name=name: feats.__setitem__(name, a[0]))
        with torch.no_grad():
            net(held)
    cos_naive = F.cosine_similarity(feats["ref"], feats["naive"]).mean()
    cos_cal = F.cosine_similarity(feats["ref"], feats["cal"]).mean()
    assert cos_cal > 0.97
    assert 1 - cos_cal < 0.5 * (1 - cos_naive)  # at least halves the gap


def test_upstream_layers_are_calibrated_first():
    """Setting every layer from the naive network's statistics in one shot leaves deep layers off;
    calibrate() sees calibrated upstream layers and matches them."""
    ref = make_reference()
    x = make_images(24, seed=1)
    want = norm_output_stats(ref, NAMES, x)

    one_shot = convert(ref)
    inputs = {}
    modules = dict(one_shot.named_modules())
    hs = [modules[n].register_forward_pre_hook(lambda m, a, n=n: inputs.__setitem__(n, a[0])) for n in NAMES]
    with torch.no_grad():
        one_shot(x)
    for h in hs:
        h.remove()
    with torch.no_grad():
        for n in NAMES:
            gn = modules[n]
            mean, std = _normalized_channel_moments(inputs[n], gn.num_groups, gn.eps)
            gn.weight.copy_(want[n][1] / std)
            gn.bias.copy_(want[n][0] - gn.weight.double() * mean)
    stale = norm_output_stats(one_shot, NAMES, x)
    torch.testing.assert_close(stale["bn1"][1], want["bn1"][1], atol=1e-4, rtol=1e-4)  # first layer fine
    assert float((stale["bn3"][1] - want["bn3"][1]).abs().max()) > 1e-2  # deeper layers are not

    calibrated = convert(ref)
    calibrate(ref, calibrated, x, progress=False)
    torch.testing.assert_close(norm_output_stats(calibrated, NAMES, x)["bn3"][1], want["bn3"][1],
                               atol=1e-4, rtol=1e-4)


def test_normalized_moments_match_plain_group_norm():
    torch.manual_seed(0)
    x = torch.randn(5, 12, 6, 7, dtype=torch.float64) * 3 + torch.randn(5, 12, 1, 1, dtype=torch.float64)
    mean, std = _normalized_channel_moments(x, num_groups=3, eps=1e-5)
    xhat = F.group_norm(x, 3, eps=1e-5)
    torch.testing.assert_close(mean, xhat.mean((0, 2, 3)))
    torch.testing.assert_close(std, xhat.std((0, 2, 3), unbiased=False))


def test_chunks_and_dataloader_batches_give_the_same_calibration():
    ref = make_reference()
    x = make_images(20, seed=4)
    whole, chunked = convert(ref), convert(ref)
    calibrate(ref, whole, x, measure_before=False, progress=False)
    calibrate(ref, chunked, [(b, torch.zeros(len(b))) for b in x.split(7)], batch_size=3, progress=False)
    for (n, p), q in zip(whole.named_parameters(), chunked.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6, msg=n)


def test_constant_reference_channel_gives_constant_gn_channel():
    ref = make_reference()
    ref.bn3.weight.data[5] = 0.0  # BN output of channel 5 is exactly its bias
    gn = convert(ref)
    x = make_images(16, seed=5)
    report = calibrate(ref, gn, x, progress=False)
    assert gn.bn3.weight[5].item() == 0
    assert gn.bn3.bias[5].item() == pytest.approx(ref.bn3.bias[5].item(), abs=1e-6)
    assert report.layers[-1].constant_channels == 1
    assert all(torch.isfinite(p).all() for p in gn.parameters())


def test_train_modes_restored_and_reference_unchanged():
    ref = make_reference().train()
    ref.bn1.eval()
    before = copy.deepcopy(ref.state_dict())
    gn = convert(ref).train()
    calibrate(ref, gn, make_images(8, seed=6), progress=False)
    assert ref.training and not ref.bn1.training and ref.bn2.training and gn.training
    for k, v in ref.state_dict().items():  # no running-stat update from the reference passes
        assert torch.equal(v, before[k]), k


def test_mismatched_models_are_refused():
    ref = make_reference()
    x = make_images(4, seed=7)
    with pytest.raises(CalibrationError, match="No GroupNorm layer"):
        calibrate(ref, copy.deepcopy(ref), x, progress=False)  # nothing converted
    renamed = nn.Sequential(convert(ref))  # names now start with "0."
    with pytest.raises(CalibrationError, match="No GroupNorm layer.*0.bn1"):
        calibrate(ref, renamed, x, progress=False)
    wrong = convert(ref)
    wrong.bn3 = nn.GroupNorm(4, 8)
    with pytest.raises(CalibrationError, match="'bn3'.*16 channels.*8"):
        calibrate(ref, wrong, x, progress=False)
    with pytest.raises(CalibrationError, match="no calibration images"):
        calibrate(ref, convert(ref), [], progress=False)


def test_measure_match_runs_the_networks_and_sees_float32_rounding():
    from gn_det.convert.calibrate import measure_match

    reference, images = make_reference(), make_images(32, seed=1)
    converted, _ = convert_model(copy.deepcopy(reference), GN4)
    before = measure_match(reference, converted, images)
    report = calibrate(reference, converted, images, progress=False)
    after = measure_match(reference, converted, images, batch_size=5)
    assert set(before) == set(after) == {"bn1", "bn2", "bn3"}
    assert min(max(m, s) for m, s in before.values()) > 0.05  # naive transfer: far off
    assert max(max(m, s) for m, s in after.values()) < 1e-5  # float32 forward: close, not exact
    # the report's own figure is the closed form (float64), far below what float32 can show
    assert max(max(layer.after_mean_err, layer.after_std_err) for layer in report.layers) < 1e-12
