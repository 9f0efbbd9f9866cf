"""NAM against the paper's equations, computed in float64, its
hand-written backward against autograd's, and the L1 sparsity hook."""
import copy
from types import SimpleNamespace

import pytest
import torch
from helpers import (assert_rel_close, assert_training_pass_matches,
                     randomize_)

from mmattn.engine.hooks import NAMSparsityHook
from mmattn.models.attention import NAM
from mmattn.models.attention import nam as nam_module
from mmattn.models.attention.nam import NAMChannelFunction
from mmattn.registry import MODELS

EPS = 1e-5


def batch_norm_ref(x, gamma, beta, mean, var):
    """gamma * (x - mean) / sqrt(var + eps) + beta along dim 1."""
    shape = (1, -1) + (1, ) * (x.dim() - 2)
    return (gamma.view(shape) * (x - mean.view(shape)) /
            torch.sqrt(var.view(shape) + EPS) + beta.view(shape))


def channel_ref(x, bn, training, detach=True):
    """M_c = sigmoid(w * BN(x)), w = |gamma| / sum |gamma|."""
    if training:  # batch statistics over (B, H, W), biased variance
        mean = x.mean(dim=(0, 2, 3))
        var = ((x - mean.view(1, -1, 1, 1))**2).mean(dim=(0, 2, 3))
    else:
        mean, var = bn.running_mean, bn.running_var
    gamma = bn.weight.detach() if detach else bn.weight
    w = gamma.abs() / gamma.abs().sum()
    x_hat = batch_norm_ref(x, bn.weight, bn.bias, mean, var)
    return torch.sigmoid(w.view(1, -1, 1, 1) * x_hat) * x


def pixel_ref(x, bn):
    """The pixel gate in train mode, position by position: each of the H*W
    pixels is normalised over batch and channels with its own gamma_p."""
    b, c, h, w = x.shape
    gamma = bn.weight.detach()
    lam = gamma.abs() / gamma.abs().sum()
    out = torch.empty_like(x)
    for p in range(h * w):
        i, j = divmod(p, w)
        v = x[:, :, i, j]  # (B, C)
        mean, var = v.mean(), ((v - v.mean())**2).mean()
        v_hat = bn.weight[p] * (v - mean) / torch.sqrt(var + EPS) + bn.bias[p]
        out[:, :, i, j] = torch.sigmoid(lam[p] * v_hat) * v
    return out


@pytest.mark.parametrize('size', [(3, 5), (7, 7), (1, 1)])
def test_channel_gate_train_mode(size):
    torch.manual_seed(0)
    layer = randomize_(NAM(16)).double().train()
    x = torch.randn(3, 16, *size, dtype=torch.float64) * 2 + 0.5
    expected = channel_ref(x, layer.channel_bn, training=True)
    assert_rel_close(layer(x), expected)


def test_channel_gate_eval_mode():
    torch.manual_seed(0)
    layer = randomize_(NAM(16)).double().eval()
    x = torch.randn(2, 16, 5, 4, dtype=torch.float64)
    expected = channel_ref(x, layer.channel_bn, training=False)
    assert_rel_close(layer(x), expected)


def test_importance_weights_carry_no_gradient():
    """The official code reads bn.weight.data: gamma learns only through
    BN(x), not through the normaliser |gamma| / sum |gamma|."""
    torch.manual_seed(0)
    layer = randomize_(NAM(8)).double().train()
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    layer(x).square().sum().backward()
    bn = layer.channel_bn
    grads = []
    for detach in (True, False):
        gamma = bn.weight.detach().clone().requires_grad_()
        ref_bn = SimpleNamespace(weight=gamma, bias=bn.bias.detach())
        channel_ref(x, ref_bn, training=True,
                    detach=detach).square().sum().backward()
        grads.append(gamma.grad)
    assert_rel_close(bn.weight.grad, grads[0])
    assert (bn.weight.grad - grads[1]).abs().max() > 1e-3


@pytest.mark.parametrize('size', [(3, 5), (1, 1)])
def test_pixel_gate_after_channel_gate(size):
    torch.manual_seed(0)
    layer = randomize_(NAM(16, spatial=True, spatial_size=size))
    layer = layer.double().train()
    x = torch.randn(2, 16, *size, dtype=torch.float64)
    after_channel = channel_ref(x, layer.channel_bn, training=True)
    expected = pixel_ref(after_channel, layer.spatial_bn)
    assert_rel_close(layer(x), expected)
    assert layer.spatial_bn.weight.shape == (size[0] * size[1], )


def test_pixel_gate_square_size_and_wrong_input_size():
    layer = NAM(8, spatial=True, spatial_size=7)
    assert layer.spatial_size == (7, 7)
    assert layer(torch.randn(2, 8, 7, 7)).shape == (2, 8, 7, 7)
    with pytest.raises(ValueError, match='spatial_size'):
        layer(torch.randn(2, 8, 7, 8))


@pytest.mark.parametrize('kwargs, arg', [
    (dict(in_channels=8, spatial=True), 'spatial_size'),
    (dict(in_channels=8, spatial_size=(7, 7)), 'spatial=True'),
    (dict(in_channels=8, spatial=True, spatial_size=(0, 7)), 'spatial_size'),
    (dict(in_channels=8, spatial=True, spatial_size=(7, 7, 7)),
     'spatial_size'),
    (dict(in_channels=0), 'in_channels'),
])
def test_invalid_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        NAM(**kwargs)


def test_all_zero_scales_stay_finite():
    layer = NAM(8)
    with torch.no_grad():
        layer.channel_bn.weight.zero_()
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(layer(x), x * 0.5)


def test_official_init_also_inside_mmdet_resnet():
    from mmdet.models import ResNet
    layer = MODELS.build(dict(type='NAM', in_channels=8, spatial=True,
                              spatial_size=3))
    for bn in (layer.channel_bn, layer.spatial_bn):
        assert (bn.weight == 1).all() and (bn.bias == 0).all()
    backbone = ResNet(depth=50, plugins=[
        dict(cfg=dict(type='NAM'), position='after_conv3')])
    nams = [m for m in backbone.modules() if isinstance(m, NAM)]
    for m in nams:
        randomize_(m)
    backbone.init_weights()
    assert len(nams) == 16
    for m in nams:
        bn = m.channel_bn
        assert (bn.weight == 1).all() and (bn.bias == 0).all()


def test_resnet50_param_count():
    from mmdet.models import ResNet
    base = sum(p.numel() for p in ResNet(depth=50).parameters())
    with_nam = ResNet(depth=50, plugins=[
        dict(cfg=dict(type='NAM'), position='after_conv3')])
    assert sum(p.numel() for p in with_nam.parameters()) - base == 30208


# --------------------------------------------------------------------------
# L1 sparsity on gamma (NAMSparsityHook)
# --------------------------------------------------------------------------
class _Net(torch.nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.nam = NAM(8, spatial=True, spatial_size=4)


def _runner(model, optim_wrapper):
    return SimpleNamespace(model=model, optim_wrapper=optim_wrapper,
                           logger=SimpleNamespace(warning=print))


def _loss(net, x):
    return net.nam(net.conv(x)).square().mean()


@pytest.mark.parametrize('amp', [False, True])
def test_sparsity_hook_adds_s_sign_gamma_before_step(amp):
    """Official updateBN: grad += s * sign(gamma) on the NAM BN weights,
    then the optimizer step. With a loss scaler the term goes on the
    unscaled gradient (the scaler calls optimizer.step after unscaling)."""
    from mmengine.optim import OptimWrapper
    torch.manual_seed(0)
    net = _Net()
    randomize_(net.nam)
    with torch.no_grad():
        net.nam.channel_bn.weight[0] = 0.  # sign(0) = 0: left unchanged
    x = torch.randn(2, 3, 4, 4)
    lr, s = 0.1, 1e-2

    # Expected: plain SGD on grad + s * sign(gamma) for the NAM BN weights.
    ref = _Net()
    ref.load_state_dict(net.state_dict())
    _loss(ref, x).backward()
    gammas = {id(ref.nam.channel_bn.weight), id(ref.nam.spatial_bn.weight)}
    expected = {}
    for name, p in ref.named_parameters():
        grad = p.grad + (s * torch.sign(p) if id(p) in gammas else 0)
        expected[name] = p.detach() - lr * grad

    wrapper = OptimWrapper(torch.optim.SGD(net.parameters(), lr=lr))
    hook = NAMSparsityHook(s=s)
    runner = _runner(net, wrapper)
    hook.before_train(runner)
    if amp:
        scaler = torch.amp.GradScaler('cpu', init_scale=1024.)
        scaler.scale(_loss(net, x)).backward()
        scaler.step(wrapper.optimizer)
        scaler.update()
        wrapper.zero_grad()
    else:
        wrapper.update_params(_loss(net, x))
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name],
                                   rtol=1e-5, atol=1e-7, msg=name)

    # after_train removes the optimizer pre-hook: a plain step again.
    hook.after_train(runner)
    gamma = net.nam.channel_bn.weight
    before = gamma.detach().clone()
    _loss(net, x).backward()
    grad = gamma.grad.clone()
    wrapper.step()
    torch.testing.assert_close(gamma.detach(), before - lr * grad,
                               rtol=1e-5, atol=1e-7)


def test_sparsity_hook_only_touches_its_optimizers_params():
    from mmengine.optim import OptimWrapper, OptimWrapperDict
    net = _Net()
    randomize_(net.nam)
    wrappers = OptimWrapperDict(
        conv=OptimWrapper(torch.optim.SGD(net.conv.parameters(), lr=1.)),
        nam=OptimWrapper(torch.optim.SGD(net.nam.parameters(), lr=1.)))
    hook = NAMSparsityHook(s=1.)
    hook.before_train(_runner(net, wrappers))
    assert len(hook._handles) == 1  # only the optimizer owning the gammas
    gamma = net.nam.channel_bn.weight
    before = gamma.detach().clone()
    _loss(net, torch.randn(2, 3, 4, 4)).backward()
    grad = gamma.grad.clone()
    for wrapper in wrappers.values():
        wrapper.step()
    torch.testing.assert_close(gamma.detach(),
                               before - (grad + torch.sign(before)))
    hook.after_train(None)
    assert hook._handles == []


def test_sparsity_hook_is_registered_and_validates():
    from mmengine.registry import HOOKS
    hook = HOOKS.build(dict(type='NAMSparsityHook'))
    assert isinstance(hook, NAMSparsityHook) and hook.s == 1e-4
    with pytest.raises(ValueError, match='s must'):
        NAMSparsityHook(s=-1.)


# --------------------------------------------------------------------------
# hand-written backward of the channel gate (NAMChannelFunction)
# --------------------------------------------------------------------------
def eager_forward(layer, x):
    """The module's plain-op path, under autograd as well."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nam_module, 'needs_grad', lambda *tensors: False)
        return layer(x)


@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('momentum', [0.1, None])
@pytest.mark.parametrize('size', [(13, 21), (1, 1)])
def test_function_forward_and_running_stats_equal_eager(
        training, momentum, size, channel_blocks):
    """Output as the plain ops give (bit for bit but for the last bit of
    the sigmoid, whose vector and scalar code round differently when the
    gate runs in channel blocks) and running statistics (momentum None:
    the cumulative average) exactly, over three steps; then the gradients
    of x, gamma and beta."""
    torch.manual_seed(0)
    layer = randomize_(NAM(6, momentum=momentum)).train(training)
    ref = copy.deepcopy(layer)
    x = channel_blocks(torch.randn(3, 6, *size) * 2 + .5).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    for _ in range(3):
        out, expected = layer(x), eager_forward(ref, x_ref)
        torch.testing.assert_close(out, expected, rtol=2**-22, atol=0)
    for name in ('running_mean', 'running_var', 'num_batches_tracked'):
        assert torch.equal(getattr(layer.channel_bn, name),
                           getattr(ref.channel_bn, name)), name
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    bn, bn_ref = layer.channel_bn, ref.channel_bn
    for actual, wanted in [(x.grad, x_ref.grad),
                           (bn.weight.grad, bn_ref.weight.grad),
                           (bn.bias.grad, bn_ref.bias.grad)]:
        assert_rel_close(actual, wanted, tol=1e-5)


@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_function_gradcheck(training, channel_blocks):
    """x, gamma and beta; the importance w is an input held constant, as
    the module takes it without gradient."""
    torch.manual_seed(0)
    x = channel_blocks(torch.randn(2, 5, 3, 4, dtype=torch.float64))
    x.requires_grad_()
    gamma = torch.randn(5, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(5, dtype=torch.float64, requires_grad=True)
    importance = gamma.detach().abs() / gamma.detach().abs().sum() * 4
    running_mean = torch.randn(5, dtype=torch.float64)
    running_var = torch.rand(5, dtype=torch.float64) + .5

    def gate(x, gamma, beta):
        return NAMChannelFunction.apply(x, gamma, beta, importance, EPS,
                                        running_mean, running_var,
                                        training, 0.)

    assert torch.autograd.gradcheck(gate, (x, gamma, beta))


@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_function_matches_paper_equations(training):
    """Forward and gradients in float32 against the float64 reference."""
    torch.manual_seed(0)
    layer = randomize_(NAM(16)).train(training)
    x = (torch.randn(2, 16, 9, 11) * 2 + .5).requires_grad_()
    ref_bn = copy.deepcopy(layer.channel_bn).double()
    x_ref = x.detach().double().requires_grad_()
    expected = channel_ref(x_ref, ref_bn, training)
    out = layer(x)
    assert_rel_close(out, expected)
    grad = torch.randn_like(x)
    out.backward(grad)
    expected.backward(grad.double())
    assert_rel_close(x.grad, x_ref.grad, tol=1e-5)
    assert_rel_close(layer.channel_bn.weight.grad, ref_bn.weight.grad,
                     tol=1e-5)
    assert_rel_close(layer.channel_bn.bias.grad, ref_bn.bias.grad, tol=1e-5)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_function_half_input(dtype, training):
    """A half-precision input with an fp32 BN: the plain ops' output bit for
    bit; the gradients, computed from fp32 statistics, near float64's."""
    torch.manual_seed(0)
    layer = randomize_(NAM(16)).train(training)
    ref = copy.deepcopy(layer)
    x = (torch.randn(2, 16, 9, 11) * 2 + .5).to(dtype).requires_grad_()
    out = layer(x)
    assert out.dtype == dtype
    assert torch.equal(out, eager_forward(ref, x.detach()))
    ref_bn = copy.deepcopy(ref.channel_bn).double()
    x_ref = x.detach().double().requires_grad_()
    expected = channel_ref(x_ref, ref_bn, training)
    grad = torch.randn_like(x)
    out.backward(grad)
    expected.backward(grad.double())
    assert x.grad.dtype == dtype
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    assert_rel_close(x.grad, x_ref.grad, tol=tol)
    assert_rel_close(layer.channel_bn.weight.grad, ref_bn.weight.grad,
                     tol=tol)


def test_function_refuses_one_value_per_channel_like_batch_norm():
    layer = NAM(8).train()
    x = torch.randn(1, 8, 1, 1, requires_grad=True)
    with pytest.raises(ValueError, match='more than 1 value per channel'):
        layer(x)
    with pytest.raises(ValueError, match='more than 1 value per channel'):
        eager_forward(layer, x)


def test_function_only_for_plain_batch_norm():
    """Grad mode with a BatchNorm2d takes the Function; a BN of another
    type (here a subclass standing in for SyncBN) and inference take the
    plain ops."""

    class OtherBN(torch.nn.BatchNorm2d):
        pass

    layer = NAM(8)
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    assert type(layer(x).grad_fn).__name__ == 'NAMChannelFunctionBackward'
    with torch.no_grad():
        assert layer(x).grad_fn is None
    layer.channel_bn = OtherBN(8)
    assert type(layer(x).grad_fn).__name__ != 'NAMChannelFunctionBackward'


@pytest.mark.parametrize('spatial', [False, True],
                         ids=['channel', 'channel+pixel'])
def test_training_pass_with_residual(spatial, channel_blocks):
    """A residual block's shortcut: added in the channel gate's pass when
    that gate is the last, after the pixel gate otherwise; output and
    gradients (x, residual, BN parameters) as autograd's through the
    equations plus the residual."""
    torch.manual_seed(0)
    kwargs = dict(spatial=True, spatial_size=(4, 5)) if spatial else {}
    layer = randomize_(NAM(6, **kwargs)).double()
    x = channel_blocks(torch.randn(3, 6, 4, 5, dtype=torch.float64))

    def reference(m, t):
        out = channel_ref(t, m.channel_bn, training=True)
        return pixel_ref(out, m.spatial_bn) if spatial else out

    assert_training_pass_matches(layer, reference, x)
