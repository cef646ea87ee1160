"""Weight Standardization: the formula, the conventions, folding, and batch independence."""

import pytest
import torch
from torch import nn

from gn_det.layers import WSConv2d, WSConv3d, create_conv, create_norm, fold_ws, standardize_weight


def ws_reference(w: torch.Tensor, unbiased: bool, eps: float, inside: bool) -> torch.Tensor:
    flat = w.reshape(w.shape[0], -1)
    mean = flat.mean(1, keepdim=True)
    n = flat.shape[1]
    var = ((flat - mean) ** 2).sum(1, keepdim=True) / (n - 1 if unbiased else n)
    out = (flat - mean) / (torch.sqrt(var + eps) if inside else torch.sqrt(var) + eps)
    return out.reshape(w.shape)


@pytest.mark.parametrize("mode,unbiased,eps,inside", [
    ("authors", True, 1e-5, False), ("paper", False, 1e-5, True), ("timm", False, 1e-6, True)])
def test_standardize_weight_conventions(mode, unbiased, eps, inside):
    w = torch.randn(16, 8, 3, 3, dtype=torch.float64) * 0.05 + 0.01
    torch.testing.assert_close(standardize_weight(w, mode), ws_reference(w, unbiased, eps, inside))


@pytest.mark.parametrize("cls,shape", [(WSConv2d, (2, 4, 9, 9)), (WSConv3d, (2, 4, 5, 9, 9))])
def test_ws_conv_is_conv_with_standardized_weight(cls, shape):
    conv = cls(4, 6, 3, padding=1, bias=True).double()
    x = torch.randn(shape, dtype=torch.float64)
    w = ws_reference(conv.weight, True, 1e-5, False)
    f = nn.functional.conv2d if cls is WSConv2d else nn.functional.conv3d
    torch.testing.assert_close(conv(x), f(x, w, conv.bias, padding=1))
    # WS output is invariant to affine changes of the raw weight (up to eps: std + 1e-5).
    with torch.no_grad():
        conv.weight.mul_(3.0).add_(0.5)
    torch.testing.assert_close(conv(x), f(x, w, conv.bias, padding=1), rtol=1e-3, atol=1e-2)


def test_ws_conv_keys_match_plain_conv():
    assert WSConv2d(3, 4, 3).state_dict().keys() == nn.Conv2d(3, 4, 3).state_dict().keys()
    plain = nn.Conv3d(3, 4, 3, bias=False)
    ws = WSConv3d.from_conv(plain)
    ws.load_state_dict(plain.state_dict())
    torch.testing.assert_close(ws.weight, plain.weight)


def _tiny_net(norm: str, dim: int = 2) -> nn.Module:
    layers = []
    c_in = 3
    for c_out in (16, 32):
        layers += [create_conv(c_in, c_out, 3, dim=dim, norm=norm), create_norm(norm, c_out, dim=dim,
                                                                                num_groups=8), nn.ReLU()]
        c_in = c_out
    return nn.Sequential(*layers)


@pytest.mark.parametrize("dim", [2, 3])
def test_fold_ws_keeps_outputs(dim):
    torch.manual_seed(0)
    net = _tiny_net("GN+WS", dim).eval()
    x = torch.randn((2, 3) + (6,) * dim)
    before = net(x)
    assert fold_ws(net) == 2
    assert not any(isinstance(m, (WSConv2d, WSConv3d)) for m in net.modules())
    torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["GN", "GN+WS", "LN", "IN"])
def test_group_norms_are_batch_independent_in_train_mode(norm):
    torch.manual_seed(0)
    net = _tiny_net(norm).train()
    x = torch.randn(4, 3, 8, 8)
    alone = net(x[:1])
    with_others = net(torch.cat([x[:1], torch.randn(3, 3, 8, 8) * 5 + 2]))[:1]
    torch.testing.assert_close(alone, with_others, rtol=1e-5, atol=1e-5)


def test_batch_norm_depends_on_batch_in_train_mode():
    torch.manual_seed(0)
    net = _tiny_net("BN").train()
    x = torch.randn(4, 3, 8, 8)
    alone = net(x[:2])[:1]
    with_others = net(torch.cat([x[:2], torch.randn(3, 3, 8, 8) * 5 + 2]))[:1]
    assert (alone - with_others).abs().max() > 0.1
