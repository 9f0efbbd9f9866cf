"""SGE against the paper's equations, computed in float64 loops."""

import pytest
import torch
from helpers import (assert_rel_close, assert_training_pass_matches,
                     randomize_)

from mmattn.models.attention import SGE
from mmattn.models.attention.sge import SGEFunction
from mmattn.registry import MODELS


def reference_sge(x, gamma, beta, groups, eps=1e-5):
    b, c, h, w = x.shape
    cg = c // groups
    out = torch.empty_like(x)
    for i in range(b):
        for k in range(groups):
            feats = x[i, k * cg:(k + 1) * cg]  # (C/G, H, W)
            g = feats.mean(dim=(1, 2))  # global descriptor g
            sim = torch.einsum('chw,c->hw', feats, g)  # c_i = g . x_i
            centred = sim - sim.mean()
            # Normalise with the official unbiased std (divisor HW - 1).
            std = ((centred**2).sum() / (h * w - 1)).sqrt()
            a = gamma[k] * centred / (std + eps) + beta[k]
            out[i, k * cg:(k + 1) * cg] = feats * torch.sigmoid(a)
    return out


@pytest.mark.parametrize('size', [(3, 5), (7, 7), (1, 4)])
def test_matches_reference(size):
    torch.manual_seed(0)
    layer = randomize_(SGE(32, groups=8)).double()
    x = torch.randn(2, 32, *size, dtype=torch.float64)
    expected = reference_sge(x, layer.weight.detach().flatten(),
                             layer.bias.detach().flatten(), groups=8)
    assert_rel_close(layer(x), expected)


def test_default_groups_and_official_init():
    layer = MODELS.build(dict(type='SGE', in_channels=256))
    assert layer.groups == 64
    assert layer.weight.shape == layer.bias.shape == (1, 64, 1, 1)
    assert (layer.weight == 0).all() and (layer.bias == 1).all()
    x = torch.randn(2, 256, 5, 6)
    torch.testing.assert_close(layer(x), x * torch.sigmoid(torch.tensor(1.)))


def test_init_survives_mmdet_resnet_init():
    from mmdet.models import ResNet
    backbone = ResNet(depth=50, init_cfg=None,
                      plugins=[dict(cfg=dict(type='SGE'),
                                    position='after_conv3')])
    sges = [m for m in backbone.modules() if isinstance(m, SGE)]
    for m in sges:
        torch.nn.init.normal_(m.weight)
        torch.nn.init.normal_(m.bias)
    backbone.init_weights()
    assert len(sges) == 16
    for m in sges:
        assert (m.weight == 0).all() and (m.bias == 1).all()


def test_one_by_one_map_gives_sigmoid_beta():
    """HW = 1: the centred similarity is 0 and the std is taken as 0, so
    the gate is sigmoid(beta) (the official unbiased std would be NaN)."""
    layer = randomize_(SGE(16, groups=4)).double()
    x = torch.randn(2, 16, 1, 1, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    gate = torch.sigmoid(layer.bias).repeat_interleave(4, dim=1)
    assert_rel_close(out, x * gate)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_constant_map_has_finite_gradients():
    """mmdet's zero_init_residual makes bn3 output 0 in a fresh ResNet."""
    layer = randomize_(SGE(16, groups=4))
    x = torch.zeros(2, 16, 5, 5, requires_grad=True)
    out = layer(x)
    (out.sum() + layer.weight.sum()).backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert torch.isfinite(layer.weight.grad).all()
    assert torch.isfinite(layer.bias.grad).all()


def test_channels_last_and_fp16_input():
    torch.manual_seed(0)
    layer = randomize_(SGE(64, groups=8))
    x = torch.randn(2, 64, 9, 11) * 50
    expected = layer(x)
    torch.testing.assert_close(
        layer(x.to(memory_format=torch.channels_last)), expected)
    out = layer(x.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert_rel_close(out.float(), expected, tol=5e-3)


@pytest.mark.parametrize('kwargs, arg', [
    (dict(in_channels=48, groups=64), 'groups'),
    (dict(in_channels=64, groups=0), 'groups'),
    (dict(in_channels=0), 'in_channels'),
])
def test_invalid_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        SGE(**kwargs)


def test_resnet50_param_count():
    from mmdet.models import ResNet
    base = sum(p.numel() for p in ResNet(depth=50).parameters())
    with_sge = ResNet(depth=50, plugins=[
        dict(cfg=dict(type='SGE'), position='after_conv3')])
    assert sum(p.numel() for p in with_sge.parameters()) - base == 2048


@pytest.mark.parametrize('size', [(3, 5), (4, 4), (1, 4), (1, 1)])
def test_custom_backward_gradcheck(size, channel_blocks):
    """The hand-written backward of SGEFunction (input, gamma, beta)
    against finite differences (float64)."""
    torch.manual_seed(0)
    x = channel_blocks(torch.randn(2, 8, *size, dtype=torch.float64) * 2 +
                       0.5).requires_grad_()
    weight = torch.randn(1, 4, 1, 1, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(1, 4, 1, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *args: SGEFunction.apply(*args, 4, 1e-5), (x, weight, bias))


def test_training_path_matches_autograd_of_reference(channel_blocks):
    """Training (custom backward) and inference give the same output; all
    gradients are autograd's through the paper's equations."""
    torch.manual_seed(0)
    layer = randomize_(SGE(32, groups=8)).double()
    x = channel_blocks(torch.randn(2, 32, 5, 6, dtype=torch.float64)
                       ).requires_grad_()
    grad = torch.randn_like(x)
    out = layer(x)
    out.backward(grad)
    with torch.no_grad():
        assert torch.equal(layer(x), out)
    gamma = layer.weight.detach().flatten().requires_grad_()
    beta = layer.bias.detach().flatten().requires_grad_()
    expected = torch.autograd.grad(
        reference_sge(x, gamma, beta, groups=8), (x, gamma, beta), grad)
    assert_rel_close(x.grad, expected[0])
    assert_rel_close(layer.weight.grad.flatten(), expected[1])
    assert_rel_close(layer.bias.grad.flatten(), expected[2])


def test_half_input_gradient(channel_blocks):
    """An fp16 x trains with its statistics and gradient sums in fp32 (the
    backward's scratch block, whose copy rounds x's gradient once): the
    gradients of x, gamma and beta are the fp32 module's to fp16
    precision."""
    torch.manual_seed(0)
    layer = randomize_(SGE(32, groups=8))
    x = channel_blocks(torch.randn(2, 32, 5, 6)).half().requires_grad_()
    grad = torch.randn(x.shape).half()
    layer(x).backward(grad)
    half_grads = [p.grad.clone() for p in (layer.weight, layer.bias)]
    layer.zero_grad()
    expected_x = x.detach().float().requires_grad_()
    layer(expected_x).backward(grad.float())
    assert x.grad.dtype == torch.float16
    assert_rel_close(x.grad.float(), expected_x.grad, tol=5e-3)
    for half, param in zip(half_grads, (layer.weight, layer.bias)):
        assert_rel_close(half, param.grad, tol=5e-3)


@pytest.mark.parametrize('channels_last', [False, True])
def test_training_pass_with_residual(channels_last, channel_blocks):
    """A residual block's shortcut, added in the product's pass: output
    and gradients (x, residual, gamma, beta) as autograd's through the
    paper's equations plus the residual; inference adds it too."""
    torch.manual_seed(0)
    layer = randomize_(SGE(32, groups=8)).double()
    x = torch.randn(2, 32, 5, 6, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def reference(m, t):
        return reference_sge(t, m.weight.flatten(), m.bias.flatten(), 8)

    assert_training_pass_matches(layer, reference, channel_blocks(x))
    residual = torch.randn_like(x)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, residual=residual),
                                   reference(layer, x) + residual,
                                   rtol=1e-12, atol=1e-12)
