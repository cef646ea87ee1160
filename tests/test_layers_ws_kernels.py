"""The fused Weight Standardization forms (batch_norm for "paper"/"timm", a hand-written
backward for "authors") against the formula written out per channel, and their gradients
against autograd through the plain formula."""

import pytest
import torch
import torch.nn.functional as F

from gn_det.layers import WSConv2d, WSConv3d, standardize_weight

MODES = {"authors": (True, 1e-5, False), "paper": (False, 1e-5, True), "timm": (False, 1e-6, True)}
SHAPES = [(6, 4, 3, 3), (5, 3, 3, 1, 1), (4, 3, 1, 3, 3), (7, 12, 1, 1)]


def _per_channel(w: torch.Tensor, unbiased: bool, eps: float, inside: bool) -> torch.Tensor:
    """Each output channel by hand: its mean, its variance (biased or not), then eps."""
    out = torch.empty_like(w)
    for o in range(w.shape[0]):
        vals = w[o].reshape(-1)
        n = vals.numel()
        mean = vals.sum() / n
        var = ((vals - mean) ** 2).sum() / (n - 1 if unbiased else n)
        out[o] = (w[o] - mean) / (torch.sqrt(var + eps) if inside else torch.sqrt(var) + eps)
    return out


def _plain_autograd(w: torch.Tensor, unbiased: bool, eps: float, inside: bool) -> torch.Tensor:
    """The formula gn_det used before the fused forms: var_mean and four elementwise ops."""
    dims = tuple(range(1, w.dim()))
    var, mean = torch.var_mean(w, dim=dims, correction=int(unbiased), keepdim=True)
    return (w - mean) * torch.rsqrt(var + eps) if inside else (w - mean) / (var.sqrt() + eps)


def _weight(shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    # an offset mean and per-channel scales, as trained weights have
    scales = torch.rand(shape[0], *([1] * (len(shape) - 1)), generator=g, dtype=dtype) * 0.1 + 0.01
    return torch.randn(shape, generator=g, dtype=dtype) * scales + 0.02


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES)
def test_fused_ws_matches_per_channel_formula(mode, shape):
    w = _weight(shape)
    torch.testing.assert_close(standardize_weight(w, mode), _per_channel(w, *MODES[mode]), rtol=1e-10, atol=1e-10)
    w32 = w.float()
    torch.testing.assert_close(standardize_weight(w32, mode), _per_channel(w, *MODES[mode]).float(),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES)
def test_fused_ws_gradient_matches_plain_formula(mode, shape):
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 2e-4)):
        w = _weight(shape, dtype, seed=1)
        upstream = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
        fused = w.clone().requires_grad_()
        standardize_weight(fused, mode).backward(upstream)
        plain = w.clone().requires_grad_()
        _plain_autograd(plain, *MODES[mode]).backward(upstream)
        torch.testing.assert_close(fused.grad, plain.grad, rtol=tol, atol=tol)


def test_authors_backward_gradcheck():
    w = _weight((4, 3, 3, 3), seed=3).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: standardize_weight(t, "authors"), (w,))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cls,x_shape", [(WSConv2d, (2, 3, 8, 8)), (WSConv3d, (1, 3, 4, 6, 6))])
def test_ws_conv_training_step_gradients(mode, cls, x_shape):
    torch.manual_seed(0)
    conv = cls(3, 5, 3, padding=1, bias=True, ws_mode=mode).double()
    x = torch.randn(x_shape, dtype=torch.float64, requires_grad=True)
    conv(x).square().sum().backward()
    w = conv.weight.detach().clone().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    f = F.conv2d if cls is WSConv2d else F.conv3d
    f(x2, _plain_autograd(w, *MODES[mode]), conv.bias, padding=1).square().sum().backward()
    torch.testing.assert_close(conv.weight.grad, w.grad)
    torch.testing.assert_close(x.grad, x2.grad)
