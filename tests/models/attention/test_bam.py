"""BAM: paper and official combinations, batch-1 refusal, init, params."""
import pytest
import torch
import torch.nn as nn
from attention_reference import batch_norm_ref, conv2d_ref
from helpers import (assert_rel_close, assert_training_pass_matches,
                     randomize_)

from mmattn.models.attention import BAM
from mmattn.models.attention.bam import BAMGateFunction, _PoolAndReduce
from mmattn.models.common import GradientHandoff
from mmattn.models.convs import PointwiseConv, ShiftedGemmConv2d


def channel_norm_ref(v, norm, training):
    if isinstance(norm, nn.BatchNorm1d):
        return batch_norm_ref(v, norm, training)
    if isinstance(norm, nn.LayerNorm):
        mean = v.mean(dim=1, keepdim=True)
        var = ((v - mean) ** 2).mean(dim=1, keepdim=True)
        return (v - mean) / torch.sqrt(var + norm.eps) * norm.weight \
            + norm.bias
    return v


def bam_ref(module, x, training, dilation=4):
    """Eqs. 1-4: M_c = W1 relu(norm(W0 GAP(x) + b0)) + b1; M_s = 1x1 ->
    [dilated 3x3]*n -> 1x1 with BN + ReLU between; out = x (1 + sigmoid(M_c
    + M_s)) or, as the official code, x (1 + sigmoid(M_c M_s))."""
    fc1, fc2 = module.fc1, module.fc2
    z = x.mean(dim=(2, 3))  # (B, C)
    hidden = torch.einsum('rc,bc->br', fc1.weight, z) + fc1.bias
    hidden = torch.relu(channel_norm_ref(hidden, module.norm, training))
    mc = torch.einsum('cr,br->bc', fc2.weight, hidden) + fc2.bias
    mc = mc[:, :, None, None]

    convs = [m for m in module.spatial if isinstance(m, nn.Conv2d)]
    bns = [m for m in module.spatial if isinstance(m, nn.BatchNorm2d)]
    ms = x
    for i, (conv, bn) in enumerate(zip(convs[:-1], bns)):
        ms = conv2d_ref(ms, conv.weight, conv.bias,
                        dilation=1 if i == 0 else dilation)
        ms = torch.relu(batch_norm_ref(ms, bn, training))
    ms = conv2d_ref(ms, convs[-1].weight, convs[-1].bias)
    att = mc + ms if module.combine == 'sum' else mc * ms
    return x * (1 + torch.sigmoid(att))


@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('size', [(1, 1), (3, 5), (13, 21)],
                         ids=lambda s: f'{s[0]}x{s[1]}')
@pytest.mark.parametrize('combine', ['sum', 'product'])
def test_matches_reference(training, size, combine):
    module = randomize_(BAM(32, combine=combine)).double().train(training)
    x = torch.randn(3, 32, *size, dtype=torch.float64)
    assert_rel_close(module(x), bam_ref(module, x, training))


@pytest.mark.parametrize('channel_norm', ['LN', None])
def test_other_channel_norms_match_reference(channel_norm):
    module = randomize_(BAM(32, channel_norm=channel_norm)).double()
    x = torch.randn(2, 32, 6, 5, dtype=torch.float64)
    assert_rel_close(module(x), bam_ref(module, x, True))


def test_dilation_and_depth_arguments():
    module = randomize_(BAM(32, rd_channels=4, dilation=2,
                            num_dilated_convs=3)).double()
    convs = [m for m in module.spatial if isinstance(m, nn.Conv2d)]
    assert len(convs) == 5
    assert all(c.dilation == (2, 2) and c.padding == (2, 2)
               for c in convs[1:-1])
    x = torch.randn(2, 32, 9, 7, dtype=torch.float64)
    assert_rel_close(module(x), bam_ref(module, x, True, dilation=2))
    assert len(BAM(32, num_dilated_convs=0).spatial) == 4


def test_official_layer_shapes():
    module = BAM(256)
    assert module.fc1.weight.shape == (16, 256)
    assert isinstance(module.norm, nn.BatchNorm1d)
    convs = [m for m in module.spatial if isinstance(m, nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [
        (16, 256, 1, 1), (16, 16, 3, 3), (16, 16, 3, 3), (1, 16, 1, 1)]
    assert all(c.bias is not None for c in convs)
    assert all(c.dilation == (4, 4) and c.padding == (4, 4)
               for c in convs[1:3])
    assert module.default_position == 'after_stage'
    assert module.combine == 'sum'


def test_batch_one_training_is_refused_with_the_fix():
    x = torch.randn(1, 32, 5, 5)
    module = BAM(32).train()
    with pytest.raises(ValueError, match='batch') as err:
        module(x)
    assert 'BatchNorm1d' in str(err.value)
    assert 'channel_norm' in str(err.value)
    assert module.eval()(x).shape == x.shape
    for channel_norm in ('LN', None):
        out = BAM(32, channel_norm=channel_norm).train()(x)
        assert out.shape == x.shape and torch.isfinite(out).all()


def test_official_init():
    torch.manual_seed(0)
    fresh = BAM(1024)
    # PyTorch's default Linear init, which the official loop leaves alone:
    # |w| <= 1/sqrt(fan_in).
    assert fresh.fc1.weight.abs().max() <= 1024 ** -0.5
    assert fresh.fc2.weight.abs().max() <= 64 ** -0.5
    module = randomize_(BAM(1024))
    fc_weights = [module.fc1.weight.clone(), module.fc2.weight.clone()]
    module.init_weights()
    assert torch.equal(module.fc1.weight, fc_weights[0])
    assert torch.equal(module.fc2.weight, fc_weights[1])
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.BatchNorm1d,
                          nn.BatchNorm2d)):
            assert not m.bias.any()
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
    # kaiming_normal_ fan_out on the 1x1 reduce conv: std sqrt(2 / 64).
    std = module.spatial[0].weight.std().item()
    assert abs(std / (2 / 64) ** 0.5 - 1) < 0.03


@pytest.mark.parametrize('kwargs, arg', [
    (dict(combine='mul'), 'combine'),
    (dict(channel_norm='GN'), 'channel_norm'),
    (dict(dilation=0), 'dilation'),
    (dict(num_dilated_convs=-1), 'num_dilated_convs'),
    (dict(rd_ratio=1 / 128), 'rd_ratio'),
    (dict(rd_channels=0), 'rd_channels'),
    (dict(act_layer='nope'), 'act_layer'),
])
def test_invalid_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        BAM(64, **kwargs)


def test_three_bams_params():
    counts = [sum(p.numel() for p in BAM(c).parameters())
              for c in (256, 512, 1024)]
    assert counts == [17_361, 68_513, 272_193]
    # PytorchInsight: BAM-ResNet-50 25.92M = ResNet-50 + 358,067.
    assert sum(counts) == 358_067


@pytest.mark.parametrize('combine', ['sum', 'product'])
def test_gate_function_gradcheck(combine, channel_blocks):
    """The hand-written backward of x (1 + sigmoid(M_c (+|*) M_s)) against
    finite differences (float64), in channel blocks."""
    torch.manual_seed(0)
    x = channel_blocks(torch.randn(2, 5, 4, 3, dtype=torch.float64))
    mc = torch.randn(2, 5, 1, 1, dtype=torch.float64, requires_grad=True)
    ms = torch.randn(2, 1, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *args: BAMGateFunction.apply(*args, combine == 'product'),
        (x.requires_grad_(), mc, ms))


def _graph_functions(out: torch.Tensor) -> set:
    """Names of the autograd nodes that ``out`` was computed through."""
    seen, stack = set(), [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is not None and fn not in seen:
            seen.add(fn)
            stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return {type(fn).__name__ for fn in seen}


@pytest.mark.parametrize('layout', ['nchw', 'channels_last', 'strided'])
@pytest.mark.parametrize('gemm', [True, False], ids=['gemm', 'conv'])
@pytest.mark.parametrize('combine', ['sum', 'product'])
def test_training_path_matches_autograd_of_reference(combine, gemm, layout,
                                                     channel_blocks,
                                                     monkeypatch):
    """Training (custom backward) gives the eager output (up to the last
    bit of the sigmoid) and autograd's gradients through the paper's
    equations, parameters included: the lean pass (pooling and 1x1
    reduction in one function, whose backward completes the gate's input
    gradient) on NCHW and channels-last inputs, with the reduction as a
    matrix product or as oneDNN's conv, and the plain composition on a
    strided input; the dilated convs' weight gradient as shifted matrix
    products or as oneDNN's (with the reduction)."""
    if gemm:
        monkeypatch.setattr(PointwiseConv, 'MIN_GEMM_POSITIONS', 1)
        monkeypatch.setattr(ShiftedGemmConv2d, 'MIN_CHANNELS', 1)
        monkeypatch.setattr(ShiftedGemmConv2d, 'MIN_POSITIONS', 1)
    torch.manual_seed(0)
    module = randomize_(BAM(32, combine=combine)).double()
    x = torch.randn(2, 32, 6, 5, dtype=torch.float64)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == 'strided':
        x = torch.randn(2, 32, 6, 10, dtype=torch.float64)[..., ::2]
    x = channel_blocks(x).requires_grad_()
    grad = torch.randn_like(x)
    out = module(x)
    assert ('_PoolAndReduceBackward' in _graph_functions(out)) == (
        layout != 'strided')
    assert ('_ShiftedGemmConv2dFunctionBackward' in _graph_functions(out)
            ) == gemm
    with torch.no_grad():
        torch.testing.assert_close(module(x), out, rtol=1e-14, atol=0)
    params = [x, *module.parameters()]
    actual = torch.autograd.grad(out, params, grad)
    expected = torch.autograd.grad(bam_ref(module, x, True), params, grad)
    for a, e in zip(actual, expected):  # (biases before a BN: 0 + noise)
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-12)


def test_pool_and_reduce_gradcheck(monkeypatch):
    """The pooling + 1x1 reduction alone (no gradient handed over)
    against finite differences, as a matrix product and as a conv."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 5, 1, 1, dtype=torch.float64,
                         requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    for positions in (1, 10 ** 9):
        monkeypatch.setattr(PointwiseConv, 'MIN_GEMM_POSITIONS', positions)
        assert torch.autograd.gradcheck(
            lambda *args: _PoolAndReduce.apply(*args, GradientHandoff()),
            (x, weight, bias))


@pytest.mark.parametrize('memory_format',
                         [torch.channels_last, torch.contiguous_format])
def test_pool_and_reduce_takes_either_gradient_layout(memory_format):
    """The reduction's gradient arrives channels-last on the CPU (the
    layout of the convs after it) and NCHW elsewhere: the backward builds
    its products from either, with the gradients of mean and conv."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 5, 1, 1, dtype=torch.float64,
                         requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    z, h = _PoolAndReduce.apply(x, weight, bias, GradientHandoff())
    grad_z = torch.randn_like(z)
    grad_h = torch.randn_like(h).contiguous(memory_format=memory_format)
    actual = torch.autograd.grad((z, h), (x, weight, bias),
                                 (grad_z, grad_h))
    expected = torch.autograd.grad(
        (x.mean((2, 3), keepdim=True), nn.functional.conv2d(x, weight, bias)),
        (x, weight, bias), (grad_z, grad_h))
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_parameters_only_training_and_inference_take_plain_passes():
    """An input that needs no gradient (the first layer) trains the
    parameters through the plain pooling and reduction, and inference
    matches training mode's output."""
    torch.manual_seed(0)
    module = randomize_(BAM(16)).double()
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    out = module(x)
    assert '_PoolAndReduceBackward' not in _graph_functions(out)
    out.sum().backward()
    assert all(p.grad is not None for p in module.parameters())
    with torch.no_grad():
        torch.testing.assert_close(module(x), out, rtol=1e-14, atol=0)


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('combine', ['sum', 'product'])
def test_training_pass_with_residual(combine, channels_last,
                                     channel_blocks):
    """A residual block's shortcut, added in the gate's pass: output and
    gradients (x, residual, parameters) as autograd's through the
    equations plus the residual; inference adds it in the same pass."""
    torch.manual_seed(0)
    module = randomize_(BAM(32, combine=combine)).double()
    x = torch.randn(2, 32, 6, 5, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert_training_pass_matches(
        module, lambda m, t: bam_ref(m, t, True), channel_blocks(x))
    residual = torch.randn_like(x)
    with torch.no_grad():
        torch.testing.assert_close(module(x, residual=residual),
                                   bam_ref(module, x, True) + residual,
                                   rtol=1e-12, atol=1e-12)
