"""NAM against the paper's equations, computed in float64, and the L1
sparsity hook."""
from types import SimpleNamespace

import pytest
import torch
from helpers import assert_rel_close, randomize_

from mmattn.engine.hooks import NAMSparsityHook
from mmattn.models.attention import NAM
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
