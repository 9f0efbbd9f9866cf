"""SimAM against the paper's minimal energy (eq. 5), computed in float64."""
import pytest
import torch
from helpers import assert_rel_close, assert_training_pass_matches

from mmattn.models.attention import SimAM
from mmattn.models.attention.simam import SimAMFunction
from mmattn.registry import MODELS


def reference_simam(x: torch.Tensor, e_lambda: float) -> torch.Tensor:
    """x * sigmoid(1 / e*), e* = 4 (s2 + l) / ((t - mu)^2 + 2 s2 + 2 l),
    per channel, with mu the spatial mean and s2 = sum (t - mu)^2 / (HW - 1)
    (the official code's statistics)."""
    b, c, h, w = x.shape
    out = torch.empty_like(x)
    for i in range(b):
        for j in range(c):
            t = x[i, j]
            mu = t.sum() / (h * w)
            s2 = ((t - mu)**2).sum() / (h * w - 1)
            energy = 4 * (s2 + e_lambda) / ((t - mu)**2 + 2 * s2 +
                                            2 * e_lambda)
            out[i, j] = t * torch.sigmoid(1 / energy)
    return out


@pytest.mark.parametrize('e_lambda', [1e-4, 0.1])
@pytest.mark.parametrize('size', [(3, 5), (7, 7), (2, 1)])
def test_matches_energy_formula(e_lambda, size):
    torch.manual_seed(0)
    layer = MODELS.build(dict(type='SimAM', in_channels=8,
                              e_lambda=e_lambda)).double()
    x = torch.randn(2, 8, *size, dtype=torch.float64) * 3 + 1
    assert_rel_close(layer(x), reference_simam(x, e_lambda))


def test_default_lambda_and_no_parameters():
    layer = SimAM(16)
    assert layer.e_lambda == 1e-4
    assert list(layer.parameters()) == [] and list(layer.buffers()) == []


def test_one_by_one_map_is_sigmoid_half():
    """n = HW - 1 = 0: defined as v = 0, so E_inv = 1/2 (no 0/0)."""
    x = torch.randn(3, 8, 1, 1, dtype=torch.float64, requires_grad=True)
    out = SimAM(8).double()(x)
    assert_rel_close(out.detach(), x.detach() * torch.sigmoid(
        torch.tensor(0.5, dtype=torch.float64)))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_fp16_input_statistics_in_fp32():
    """A half-precision sum of squares over 64x64 at this scale overflows
    (200^2 * 4096 > 65504); the module's statistics must not."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 64, 64) * 200
    layer = SimAM(4)
    out = layer(x.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert_rel_close(out.float(), layer(x), tol=5e-3)


def test_invalid_lambda():
    with pytest.raises(ValueError, match='e_lambda'):
        SimAM(8, e_lambda=0)


def test_adds_no_parameters_to_resnet50():
    from mmdet.models import ResNet
    base = sum(p.numel() for p in ResNet(depth=50).parameters())
    with_simam = ResNet(depth=50, plugins=[
        dict(cfg=dict(type='SimAM'), position='after_conv3')])
    assert sum(p.numel() for p in with_simam.parameters()) == base
    assert sum(isinstance(m, SimAM) for m in with_simam.modules()) == 16


@pytest.mark.parametrize('size', [(3, 5), (7, 7), (2, 1), (1, 1)])
@pytest.mark.parametrize('e_lambda', [1e-4, 0.1])
def test_custom_backward_gradcheck(size, e_lambda, channel_blocks):
    """The hand-written backward of SimAMFunction against finite
    differences (float64)."""
    torch.manual_seed(0)
    x = channel_blocks(torch.randn(2, 3, *size, dtype=torch.float64) * 3 +
                       1).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: SimAMFunction.apply(t, e_lambda), (x, ))


def test_training_path_matches_autograd_of_reference(channel_blocks):
    """Training (custom backward) and inference give the eager module's
    output; the input gradient is autograd's through the energy formula."""
    torch.manual_seed(0)
    x = channel_blocks(torch.randn(2, 5, 6, 5, dtype=torch.float64) *
                       2).requires_grad_()
    grad = torch.randn_like(x)
    out = SimAM(5, e_lambda=0.1)(x)
    out.backward(grad)
    with torch.no_grad():
        assert torch.equal(SimAM(5, e_lambda=0.1)(x), out)
    expected_grad, = torch.autograd.grad(reference_simam(x, 0.1), x, grad)
    assert_rel_close(x.grad, expected_grad)


@pytest.mark.parametrize('channels_last', [False, True])
def test_training_pass_with_residual(channels_last, channel_blocks):
    """The block's shortcut, added in the product's pass (the forward's
    blocks), passes the upstream gradient on unchanged; output and
    gradients as autograd's through the energy formula plus the
    residual."""
    x = torch.randn(2, 5, 6, 5, dtype=torch.float64) * 2
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert_training_pass_matches(
        SimAM(5, e_lambda=0.1), lambda m, t: reference_simam(t, 0.1),
        channel_blocks(x))
    residual = torch.randn_like(x)
    with torch.no_grad():  # inference adds it in the same pass too
        torch.testing.assert_close(
            SimAM(5, e_lambda=0.1)(x, residual=residual),
            reference_simam(x, 0.1) + residual, rtol=1e-12, atol=1e-12)
