"""The norm factory and GroupNorm against plain references of the papers' formulas."""

import pytest
import torch
from torch import nn

from gn_det.layers import FrozenBatchNorm, create_norm, get_norm_layer, parse_norm


def group_norm_reference(x: torch.Tensor, groups: int, gamma, beta, eps=1e-5) -> torch.Tensor:
    """The GN paper's TensorFlow code, written out: reshape, moments, normalize, affine."""
    n, c = x.shape[:2]
    xg = x.reshape(n, groups, -1)
    mean = xg.mean(dim=2, keepdim=True)
    var = ((xg - mean) ** 2).mean(dim=2, keepdim=True)  # biased
    xg = (xg - mean) / torch.sqrt(var + eps)
    shape = (1, c) + (1,) * (x.dim() - 2)
    return xg.reshape(x.shape) * gamma.reshape(shape) + beta.reshape(shape)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("groups", [1, 2, 4, 8, 32])
def test_group_norm_matches_paper_formula(dim, groups):
    g = torch.Generator().manual_seed(groups * 10 + dim)
    channels = 64
    spatial = (5, 7) if dim == 2 else (3, 4, 5)
    x = torch.randn((3, channels) + spatial, generator=g, dtype=torch.float64) * 3 + 1
    norm = create_norm("GN", channels, dim=dim, num_groups=groups).double()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(channels, generator=g))
        norm.bias.copy_(torch.randn(channels, generator=g))
    expected = group_norm_reference(x, groups, norm.weight, norm.bias)
    torch.testing.assert_close(norm(x), expected, rtol=1e-10, atol=1e-10)


def test_channels_per_group():
    norm = create_norm("GN", 96, channels_per_group=16)
    assert norm.num_groups == 6


def test_ln_is_layer_norm_over_chw():
    x = torch.randn(4, 12, 6, 5, dtype=torch.float64)
    ln = create_norm("LN", 12).double()
    ref = nn.functional.layer_norm(x, x.shape[1:], eps=1e-5)
    torch.testing.assert_close(ln(x), ref)


def test_in_is_instance_norm():
    x = torch.randn(4, 12, 6, 5, dtype=torch.float64)
    inorm = create_norm("IN", 12).double()
    ref = nn.functional.instance_norm(x, eps=1e-5)
    torch.testing.assert_close(inorm(x), ref)


def test_indivisible_groups_is_an_error_naming_layer_and_numbers():
    with pytest.raises(ValueError, match=r"'layer3.0.bn2'.*100 channels.*32 groups"):
        create_norm("GN", 100, layer_name="layer3.0.bn2")
    with pytest.raises(ValueError, match="48 channels cannot be split into groups of 5"):
        create_norm("GN", 48, channels_per_group=5)


@pytest.mark.parametrize("dim,cls", [(1, nn.BatchNorm1d), (2, nn.BatchNorm2d), (3, nn.BatchNorm3d)])
def test_bn_picks_dim(dim, cls):
    assert type(create_norm("BN", 8, dim=dim)) is cls


def test_names_and_aliases():
    assert isinstance(create_norm("SyncBN", 8), nn.SyncBatchNorm)
    assert isinstance(create_norm("naiveSyncBN", 8), nn.SyncBatchNorm)
    assert isinstance(create_norm("FrozenBN", 8, dim=3), FrozenBatchNorm)
    assert isinstance(create_norm("", 8), nn.Identity)
    assert get_norm_layer("") is None
    spec = parse_norm("gn+ws")
    assert (spec.name, spec.ws) == ("GN", True)
    with pytest.raises(ValueError, match="Unknown norm 'BatchNorm'"):
        parse_norm("BatchNorm")


def test_frozen_bn_equals_bn_eval_and_loads_bn_checkpoint():
    bn = nn.BatchNorm3d(6)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    bn.eval()
    frozen = FrozenBatchNorm(6)
    frozen.load_state_dict(bn.state_dict())  # num_batches_tracked is accepted and dropped
    x = torch.randn(2, 6, 3, 4, 5)
    torch.testing.assert_close(frozen(x), bn(x))
    assert not list(frozen.parameters())
    torch.testing.assert_close(FrozenBatchNorm.from_batchnorm(bn)(x), bn(x))
