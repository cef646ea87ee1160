"""FrozenBatchNorm's fused forward (one F.batch_norm call): values, gradients, dtypes, any dims."""

import pytest
import torch
from torch import nn

from gn_det.layers import FrozenBatchNorm


def _frozen(c: int, seed: int = 0) -> FrozenBatchNorm:
    g = torch.Generator().manual_seed(seed)
    bn = FrozenBatchNorm(c, eps=1e-3)
    with torch.no_grad():  # four buffers that all differ, so a swapped one shows
        bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=g))
        bn.running_mean.copy_(torch.randn(c, generator=g) * 2)
        bn.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.1)
    return bn


def _by_hand(bn: FrozenBatchNorm, x: torch.Tensor) -> torch.Tensor:
    """The formula written out per channel, in float64."""
    out = torch.empty_like(x, dtype=torch.float64)
    for c in range(x.shape[1]):
        std = (bn.running_var[c].double() + bn.eps) ** 0.5
        out[:, c] = (x[:, c].double() - bn.running_mean[c].double()) / std * bn.weight[c].double() + bn.bias[c].double()
    return out


@pytest.mark.parametrize("shape", [(3, 6), (2, 6, 5), (2, 6, 7, 5), (2, 6, 3, 7, 5)])
@pytest.mark.parametrize("grad", [False, True])  # batch_norm path / addcmul path
def test_frozen_bn_matches_formula_any_dims(shape, grad):
    bn = _frozen(6)
    x = torch.randn(shape, requires_grad=grad)
    torch.testing.assert_close(bn(x).double(), _by_hand(bn, x.detach()), rtol=1e-5, atol=1e-5)
    scale, shift = bn.scale_and_shift()  # the affine view other modules use agrees
    view = (1, -1) + (1,) * (x.dim() - 2)
    torch.testing.assert_close(bn(x), x * scale.reshape(view) + shift.reshape(view))


@pytest.mark.parametrize("shape", [(2, 6, 7, 5), (2, 6, 3, 7, 5)])
def test_frozen_bn_gradient_reaches_input_not_buffers(shape):
    bn = _frozen(6, seed=1)
    x = torch.randn(shape, requires_grad=True)
    upstream = torch.randn(shape)
    bn(x).backward(upstream)
    scale, _ = bn.scale_and_shift()
    torch.testing.assert_close(x.grad, upstream * scale.reshape((1, -1) + (1,) * (x.dim() - 2)))
    assert all(b.grad is None and not b.requires_grad for b in bn.buffers())
    assert list(bn.parameters()) == []


def test_frozen_bn_keeps_no_activation_for_backward():
    # F.batch_norm's backward would keep x (one activation per layer); the grad path keeps only
    # per-channel tensors, so FrozenBN costs no training memory.
    bn = _frozen(6, seed=4)
    x = torch.randn(2, 6, 8, 8, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        bn(x)
    assert saved and max(saved) == 6
    with_grad = bn(x).detach()
    with torch.no_grad():  # without grad: the single batch_norm call, same values
        torch.testing.assert_close(bn(x), with_grad)


def test_frozen_bn_dtypes():
    bn = _frozen(6, seed=2)
    x = torch.randn(2, 6, 5, 5)
    ref = _by_hand(bn, x)
    # bfloat16 input with the float32 buffers: bfloat16 out, computed in float32 inside
    out = bn(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=5e-2)
    # float64 input: the buffers are cast (batch_norm does not mix float64 with float32)
    out64 = bn(x.double())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64, ref, rtol=1e-6, atol=1e-6)
    # float64 module on a float64 input, as ``.double()`` makes it
    torch.testing.assert_close(bn.double()(x.double()), ref)


def test_frozen_bn_under_cpu_autocast():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 6, 3), _frozen(6, seed=3)
    x = torch.randn(2, 3, 9, 9)
    ref = bn(conv(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bn(conv(x))
    assert out.dtype == torch.bfloat16  # the conv's dtype passes through; buffers stay float32
    assert bn.running_var.dtype == torch.float32
    torch.testing.assert_close(out.float(), ref, rtol=3e-2, atol=5e-2)
