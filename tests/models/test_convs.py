"""The convolutions of mmattn.models.convs: each path computes the conv it
replaces and is taken where documented (asserted by its autograd node)."""
import pytest
import torch
import torch.nn as nn

from mmattn.models import convs


def _ran(out: torch.Tensor) -> str:
    """The op that computed a PointwiseConv's output: its grad_fn, or the
    one under the view / indexing that reshapes a matrix product."""
    fn = out.grad_fn
    if fn.name() in ('ViewBackward0', 'UnsqueezeBackward0'):
        fn = fn.next_functions[0][0]
        while fn.name() == 'UnsqueezeBackward0':
            fn = fn.next_functions[0][0]
    return fn.name()


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('channels_last', [False, True])
def test_pointwise_conv_is_the_1x1_conv(bias, channels_last, monkeypatch):
    """Each path (linear on a descriptor, the batched product on an NCHW
    map, the convolution otherwise) computes the conv, and is taken where
    documented."""
    monkeypatch.setattr(convs.PointwiseConv, 'MIN_GEMM_POSITIONS', 12)
    conv = nn.Conv2d(6, 5, 1, bias=bias).double()
    fc = convs.PointwiseConv.from_conv(conv)
    assert fc.weight is conv.weight and fc.bias is conv.bias
    assert fc.state_dict().keys() == conv.state_dict().keys()
    gemm = 'BaddbmmBackward0' if bias else 'BmmBackward0'
    for size, path in [((1, 1), 'AddmmBackward0' if bias else 'MmBackward0'),
                       ((3, 4), gemm),  # 12 positions: the product
                       ((2, 3), 'ConvolutionBackward0')]:  # too small
        x = torch.randn(2, 6, *size, dtype=torch.float64,
                        requires_grad=True)
        if channels_last and size != (1, 1):
            x = x.to(memory_format=torch.channels_last)
            path = 'ConvolutionBackward0'
        out = fc(x)
        assert out.shape == (2, 5, *size)
        assert _ran(out) == path
        torch.testing.assert_close(out, conv(x), rtol=1e-12, atol=1e-12)
        assert torch.autograd.gradcheck(fc, (x, ))


def test_pointwise_conv_exports_the_conv(monkeypatch):
    """While exporting, a map that would run as the product runs the
    convolution (one ONNX op, for any input size)."""
    monkeypatch.setattr(convs.PointwiseConv, 'MIN_GEMM_POSITIONS', 1)
    conv = convs.PointwiseConv(6, 5)
    x = torch.randn(2, 6, 3, 4, requires_grad=True)
    assert _ran(conv(x)) == 'BaddbmmBackward0'
    monkeypatch.setattr(torch.onnx, 'is_in_onnx_export', lambda: True)
    assert _ran(conv(x)) == 'ConvolutionBackward0'


def test_pointwise_conv_under_autocast():
    """The batched product follows autocast as the convolution does."""
    conv = convs.PointwiseConv(8, 4)
    x = torch.randn(1, 8, 64, 64)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out, ref = conv(x), nn.Conv2d.forward(conv, x)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2,
                               atol=2e-2)


def test_pointwise_conv_builds_from_conv_cfg():
    """mmcv's ConvModule builds it by name, e.g. in Non-local's conv_cfg."""
    from mmcv.cnn import ConvModule
    module = ConvModule(8, 4, 1, conv_cfg=dict(type='PointwiseConv'))
    assert type(module.conv) is convs.PointwiseConv
    assert module(torch.randn(1, 8, 5, 5)).shape == (1, 4, 5, 5)


@pytest.mark.parametrize('field, value', [
    ('kernel_size', 3), ('stride', 2), ('padding', 1), ('dilation', 2),
    ('groups', 2)])
def test_pointwise_conv_refuses_other_arguments(field, value):
    with pytest.raises(ValueError, match=f'{field} must be'):
        convs.PointwiseConv(4, 4, **{field: value})


@pytest.mark.parametrize('conv', [
    nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 1, groups=2),
    nn.Conv2d(4, 4, 1, stride=2), nn.Conv2d(4, 4, 1, padding=1)])
def test_pointwise_conv_refuses_other_convs(conv):
    with pytest.raises(ValueError, match='conv must be a plain 1x1'):
        convs.PointwiseConv.from_conv(conv)


def test_pointwise_convs_is_the_convs_concatenated():
    """One product of the concatenated weights (a missing bias counts as
    zeros): each conv's output, in order, and the same input gradient."""
    layers = [nn.Conv2d(6, 3, 1), nn.Conv2d(6, 2, 1, bias=False),
              convs.PointwiseConv(6, 4)]
    layers = [layer.double() for layer in layers]
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64, requires_grad=True)
    out = convs.pointwise_convs(x, layers)
    expected = torch.cat([layer(x) for layer in layers], dim=1)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda t: convs.pointwise_convs(t, layers), (x, ))


@pytest.mark.parametrize('conv, plain', [
    (nn.Conv2d(4, 2, 1), True), (convs.PointwiseConv(4, 2), True),
    (nn.Conv2d(4, 2, 3), False), (nn.Conv2d(4, 2, 1, stride=2), False),
    (nn.Conv2d(4, 2, 1, padding=1), False),
    (nn.Conv2d(4, 2, 1, dilation=2), False),
    (nn.Conv2d(4, 2, 1, groups=2), False)])
def test_is_plain_pointwise(conv, plain):
    assert convs.is_plain_pointwise(conv) is plain


def test_is_plain_pointwise_refuses_conv_subclasses():
    """A subclass may change the computation (mmcv's weight-standardised
    conv): only nn.Conv2d and PointwiseConv count."""
    from mmcv.cnn.bricks.conv_ws import ConvWS2d
    assert not convs.is_plain_pointwise(ConvWS2d(4, 2, 1))


def test_few_channel_conv_layout():
    x = torch.randn(2, 3, 4, 5)
    assert x.is_contiguous()
    assert convs.few_channel_conv_layout(x).is_contiguous(
        memory_format=torch.channels_last)
    assert convs.few_channel_conv_layout(x.transpose(2, 3)).is_contiguous(
        memory_format=torch.channels_last)


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('size', [(3, 4), (2, 3)])  # the product, too small
def test_pointwise_conv_channels_last(bias, channels_last, size,
                                      monkeypatch):
    """The 1x1 conv, laid out channels-last, from either layout: the
    product where it has the positions and autograd does not derive x's
    gradient, the conv and a copy otherwise."""
    monkeypatch.setattr(convs.PointwiseConv, 'MIN_GEMM_POSITIONS', 12)
    conv = nn.Conv2d(6, 5, 1, bias=bias).double()
    x = torch.randn(2, 6, *size, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    for x_grad in (False, True):
        x.requires_grad_(x_grad)
        out = convs.pointwise_conv_channels_last(x, conv.weight, conv.bias)
        assert out.is_contiguous(memory_format=torch.channels_last)
        # the product's (B, HW, C') rows permuted to (B, C', H, W)
        assert (out.grad_fn.name() == 'PermuteBackward0') == (
            size == (3, 4) and not x_grad)
        torch.testing.assert_close(out, conv(x), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda *args: convs.pointwise_conv_channels_last(x.detach(), *args),
        (conv.weight, conv.bias))


def _shifted_cases():
    """(kernel_size, dilation, padding, size) of the width-keeping convs:
    every sign of tap offset, taps past the map's first and last rows, and
    outputs taller and shorter than x."""
    for kernel_size, dilation, pad_rows in [
            ((3, 3), (1, 1), 1), ((3, 3), (4, 2), 4), ((5, 3), (2, 3), 0),
            ((1, 7), (1, 1), 0), ((7, 7), (1, 1), 5), ((1, 1), (1, 1), 0),
            ((3, 5), (3, 1), 7)]:
        padding = (pad_rows, dilation[1] * (kernel_size[1] - 1) // 2)
        for size in [(9, 11), (6, 4), (2, 13)]:
            rows_out = size[0] + 2 * pad_rows - dilation[0] * (
                kernel_size[0] - 1)
            if size[1] > padding[1] and rows_out > 0:
                yield kernel_size, dilation, padding, size


@pytest.mark.parametrize('kernel_size, dilation, padding, size',
                         list(_shifted_cases()))
@pytest.mark.parametrize('channels_last', [True, False])
def test_shifted_gemm_weight_grad_is_the_conv_weight_grad(
        kernel_size, dilation, padding, size, channels_last):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    rows_out = size[0] + 2 * padding[0] - dilation[0] * (kernel_size[0] - 1)
    grad = torch.randn(2, 5, rows_out, size[1], dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
        grad = grad.to(memory_format=torch.channels_last)
    expected = torch.nn.grad.conv2d_weight(x, (5, 3, *kernel_size), grad,
                                           1, padding, dilation)
    out = convs.shifted_gemm_weight_grad(x, grad, kernel_size, padding,
                                         dilation)
    assert out.is_contiguous()
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('width, padding', [(8, 0), (8, 2), (1, 1)])
def test_shifted_gemm_weight_grad_refuses_other_widths(width, padding):
    """A conv that changes the width (3x3, padding 0 or 2), or a map no
    wider than the padding."""
    x = torch.randn(1, 2, 4, width)
    grad = torch.randn(1, 2, 4, width + 2 * padding - 2)
    with pytest.raises(ValueError, match='keeps the width'):
        convs.shifted_gemm_weight_grad(x, grad, (3, 3), (1, padding),
                                       (1, 1))


def _shifted_conv(monkeypatch, **kwargs) -> convs.ShiftedGemmConv2d:
    monkeypatch.setattr(convs.ShiftedGemmConv2d, 'MIN_CHANNELS', 4)
    monkeypatch.setattr(convs.ShiftedGemmConv2d, 'MIN_POSITIONS', 20)
    return convs.ShiftedGemmConv2d(4, 4, 3, **kwargs).double()


@pytest.mark.parametrize('kwargs', [dict(padding=2, dilation=2),
                                    dict(padding=(0, 1), bias=False)])
def test_shifted_gemm_conv_is_the_conv(kwargs, monkeypatch):
    conv = _shifted_conv(monkeypatch, **kwargs)
    plain = nn.Conv2d(4, 4, 3, **kwargs).double()
    assert conv.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    out = conv(x)
    assert out.grad_fn.name() == '_ShiftedGemmConv2dFunctionBackward'
    torch.testing.assert_close(out, plain(x), rtol=1e-12, atol=1e-12)
    weight = conv.weight.detach().requires_grad_()
    bias = None if conv.bias is None else conv.bias.detach().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda *args: convs._ShiftedGemmConv2dFunction.apply(
            *args, conv.padding, conv.dilation), (x, weight, bias))


@pytest.mark.parametrize('case, kwargs', [
    ('stride', dict(stride=2)), ('groups', dict(groups=2)),
    ('same', dict(padding='same')), ('width', dict(padding=(1, 0))),
    ('channels', {}), ('positions', {}), ('no_grad', {}), ('autocast', {}),
    ('bfloat16', {})])
def test_shifted_gemm_conv_runs_the_conv_elsewhere(case, kwargs,
                                                   monkeypatch):
    """Outside the conditions it was measured for, ShiftedGemmConv2d is
    nn.Conv2d."""
    conv = _shifted_conv(monkeypatch, **{'padding': 1, **kwargs}).float()
    if case == 'channels':
        monkeypatch.setattr(convs.ShiftedGemmConv2d, 'MIN_CHANNELS', 5)
    x = torch.randn(2, 4, 5, 3 if case == 'positions' else 6)
    if case == 'bfloat16':
        conv, x = conv.bfloat16(), x.bfloat16()
    with torch.set_grad_enabled(case != 'no_grad'), torch.autocast(
            'cpu', enabled=case == 'autocast'):
        out = conv(x)
    assert (out.grad_fn is None) == (case == 'no_grad')
    assert out.grad_fn is None or out.grad_fn.name() == (
        'ConvolutionBackward0')


def test_shifted_gemm_conv_builds_from_conv_cfg():
    """mmcv's ConvModule builds it by name."""
    from mmcv.cnn import ConvModule
    module = ConvModule(4, 4, 3, padding=1,
                        conv_cfg=dict(type='ShiftedGemmConv2d'))
    assert type(module.conv) is convs.ShiftedGemmConv2d
