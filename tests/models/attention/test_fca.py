"""MultiSpectralAttention (FcaNet) against the paper's 2D DCT pooling,
computed in float64 loops."""
import copy
import math

import pytest
import torch
from helpers import assert_rel_close, randomize_

from mmattn.models.attention import MultiSpectralAttention
from mmattn.models.attention.fca import (DEFAULT_DCT_SIZES, dct_filters,
                                         frequency_indices)
from mmattn.registry import MODELS


def basis_ref(u, v, h, w):
    """B_{u,v}(i, j) = c_u c_v cos(pi u (i + 1/2) / H) cos(pi v (j + 1/2) / W)
    with the orthonormal DCT-II scale c_0 = sqrt(1/N), c_f = sqrt(2/N)."""
    cu = math.sqrt((1 if u == 0 else 2) / h)
    cv = math.sqrt((1 if v == 0 else 2) / w)
    out = torch.empty(h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            out[i, j] = cu * cv * math.cos(math.pi * u * (i + .5) / h) * \
                math.cos(math.pi * v * (j + .5) / w)
    return out


def adaptive_avg_pool_ref(x, out_h, out_w):
    """Bin i covers [floor(i H / out_h), ceil((i + 1) H / out_h))."""
    b, c, h, w = x.shape
    out = torch.empty(b, c, out_h, out_w, dtype=x.dtype)
    for i in range(out_h):
        h0, h1 = (i * h) // out_h, -((-(i + 1) * h) // out_h)
        for j in range(out_w):
            w0, w1 = (j * w) // out_w, -((-(j + 1) * w) // out_w)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(dim=(2, 3))
    return out


def reference_fca(x, layer):
    b, c, h, w = x.shape
    dh, dw = layer.dct_size
    pooled = x if (h, w) == (dh, dw) else adaptive_avg_pool_ref(x, dh, dw)
    n = len(layer.freqs)
    freq = torch.empty(b, c, dtype=torch.float64)
    for ch in range(c):
        u, v = layer.freqs[ch // (c // n)]  # part i of C/n channels
        freq[:, ch] = (pooled[:, ch] * basis_ref(u, v, dh, dw)).sum((1, 2))
    hidden = torch.relu(freq @ layer.fc1.weight.T)
    s = torch.sigmoid(hidden @ layer.fc2.weight.T)
    return x * s.view(b, c, 1, 1)


def test_frequency_tables_and_scaling():
    assert frequency_indices('top4') == ((0, 0), (0, 1), (6, 0), (0, 5))
    assert frequency_indices('low4') == ((0, 0), (0, 1), (1, 0), (1, 1))
    assert frequency_indices('bot2') == ((6, 6), (1, 4))
    assert len(set(frequency_indices('top32'))) == 32
    layer = MultiSpectralAttention(64, dct_size=14, freq_sel='top4')
    assert layer.freqs == ((0, 0), (0, 2), (12, 0), (0, 10))
    layer = MultiSpectralAttention(64, dct_size=(56, 7), freq_sel='top4')
    assert layer.freqs == ((0, 0), (0, 1), (48, 0), (0, 5))


@pytest.mark.parametrize('size', [(7, 7), (14, 14), (8, 11)])
def test_dct_filter_matches_formula(size):
    layer = MultiSpectralAttention(32, dct_size=size, freq_sel='top16')
    assert layer.dct_filter.shape == (32, *size)
    for ch in range(32):
        u, v = layer.freqs[ch // 2]
        assert_rel_close(layer.dct_filter[ch], basis_ref(u, v, *size))


def test_dct_basis_is_orthonormal():
    freqs = [(u, v) for u in range(7) for v in range(5)]
    basis = dct_filters(len(freqs), (7, 5), freqs).flatten(1)  # (35, 35)
    assert_rel_close(basis @ basis.T, torch.eye(35, dtype=torch.float64))


def test_lowest_frequency_is_scaled_gap():
    layer = MultiSpectralAttention(16, dct_size=7, freq_sel='low1').double()
    x = torch.randn(2, 16, 7, 7, dtype=torch.float64)
    assert_rel_close(layer.spectral_pool(x), 7 * x.mean(dim=(2, 3)))


@pytest.mark.parametrize('size', [(7, 7), (13, 21), (3, 5), (1, 1)])
def test_matches_reference(size):
    """(7, 7) is used as is; other sizes are adaptive-average-pooled."""
    torch.manual_seed(0)
    layer = MultiSpectralAttention(32, dct_size=7, freq_sel='top16')
    layer = randomize_(layer).double()
    x = torch.randn(2, 32, *size, dtype=torch.float64)
    assert_rel_close(layer(x), reference_fca(x, layer))


def test_fc_without_bias_and_basis_not_learned():
    layer = MODELS.build(dict(type='MultiSpectralAttention',
                              in_channels=256))
    assert layer.fc1.bias is None and layer.fc2.bias is None
    assert layer.fc1.weight.shape == (16, 256)
    assert layer.freq_sel == 'top16' and len(layer.freqs) == 16
    assert all(not n.startswith('dct') for n, _ in layer.named_parameters())
    assert 'dct_filter' not in layer.state_dict()


def test_default_dct_sizes():
    for channels, size in [(256, 56), (512, 28), (1024, 14), (2048, 7),
                           (64, 56), (128, 28), (96, 7)]:
        layer = MultiSpectralAttention(channels)
        assert layer.dct_size == (size, size), channels
    assert DEFAULT_DCT_SIZES[2048] == 7
    assert MultiSpectralAttention(256, dct_size=14).dct_size == (14, 14)


@pytest.mark.parametrize('kwargs, args', [
    (dict(in_channels=64, freq_sel='top3'), ['freq_sel']),
    (dict(in_channels=64, freq_sel='mid16'), ['freq_sel']),
    (dict(in_channels=40), ['in_channels', 'num_freq']),
    (dict(in_channels=64, freq_sel='top32', dct_size=7), []),
    (dict(in_channels=48, freq_sel='top32'), ['in_channels', 'num_freq']),
    (dict(in_channels=64, dct_size=5), ['dct_size']),
    (dict(in_channels=64, dct_size=(7, 7, 7)), ['dct_size']),
    (dict(in_channels=64, rd_ratio=1 / 128), ['rd_ratio']),
])
def test_argument_validation(kwargs, args):
    if not args:
        assert MultiSpectralAttention(**kwargs).dct_size == (7, 7)
        return
    with pytest.raises(ValueError) as info:
        MultiSpectralAttention(**kwargs)
    for arg in args:
        assert arg in str(info.value)


def test_fp16_input_pools_in_fp32():
    torch.manual_seed(0)
    layer = randomize_(MultiSpectralAttention(32, dct_size=7))
    x = torch.randn(2, 32, 7, 7) * 3000  # DC coefficient 7 * mean
    freq = layer.spectral_pool(x.half())
    assert freq.dtype == torch.float32
    assert_rel_close(freq, layer.spectral_pool(x), tol=2e-3)
    out = layer.half()(x.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


def test_resnet50_param_count():
    """SE without FC biases: 2 C^2 / 16 per block; the DCT bases are
    buffers."""
    from mmdet.models import ResNet
    base = sum(p.numel() for p in ResNet(depth=50).parameters())
    with_fca = ResNet(depth=50, plugins=[
        dict(cfg=dict(type='MultiSpectralAttention'),
             position='after_conv3')])
    added = sum(p.numel() for p in with_fca.parameters()) - base
    assert added == 2_514_944
    sizes = {m.dct_size for m in with_fca.modules()
             if isinstance(m, MultiSpectralAttention)}
    assert sizes == {(56, 56), (28, 28), (14, 14), (7, 7)}


# --------------------------------------------------------------------------
# spectral pooling through a full-resolution filter
# --------------------------------------------------------------------------
def pool_then_dct(layer, x):
    """The pooling as the paper writes it (and a traced graph computes it):
    adaptive average pooling to dct_size, then the DCT-weighted sum."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.jit, 'is_tracing', lambda: True)
        return layer.spectral_pool(x)


@pytest.mark.parametrize('size', [(7, 14), (7, 7), (13, 21), (3, 5),
                                  (1, 1), (30, 29), (64, 96)])
def test_pooling_filter_equals_pool_then_dct(size):
    """(7, 14) is dct_size itself (no pooling); the others are pooled
    down, up, or both."""
    layer = MultiSpectralAttention(32, dct_size=(7, 14), freq_sel='top16')
    layer = layer.double()
    x = torch.randn(2, 32, *size, dtype=torch.float64)
    torch.testing.assert_close(layer.spectral_pool(x),
                               pool_then_dct(layer, x), rtol=1e-12,
                               atol=1e-12)
    assert layer.pooling_filter(x).shape == (16, size[0] * size[1], 1)


def test_pooling_filter_cached_per_size_and_dtype():
    layer = MultiSpectralAttention(32, dct_size=7)
    x = torch.randn(2, 32, 13, 21)
    filt = layer.pooling_filter(x)
    assert layer.pooling_filter(torch.randn(1, 32, 13, 21)) is filt
    assert layer.pooling_filter(x.half()) is filt  # fp32 for fp16 inputs
    other = layer.pooling_filter(torch.randn(2, 32, 14, 21))
    assert other is not filt and other.shape == (16, 14 * 21, 1)
    layer.double()
    assert layer.pooling_filter(x.double()).dtype == torch.float64


@pytest.mark.parametrize('size', [(7, 7), (9, 11)])
def test_gradcheck(size):
    torch.manual_seed(0)
    layer = MultiSpectralAttention(16, dct_size=7, rd_channels=4)
    layer = randomize_(layer).double()
    x = torch.randn(2, 16, *size, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x, ), fast_mode=True)


def test_float32_gradients_match_float64():
    torch.manual_seed(0)
    layer = randomize_(MultiSpectralAttention(32, dct_size=7))
    ref = copy.deepcopy(layer).double()
    x = torch.randn(2, 32, 13, 21, requires_grad=True)
    x_ref = x.detach().double().requires_grad_()
    out, expected = layer(x), reference_fca(x_ref, ref)
    assert_rel_close(out, expected)
    grad = torch.randn_like(x)
    out.backward(grad)
    expected.backward(grad.double())
    assert_rel_close(x.grad, x_ref.grad, tol=1e-5)
    assert_rel_close(layer.fc1.weight.grad, ref.fc1.weight.grad, tol=1e-5)


def test_autocast_pools_in_fp32():
    """The matrix-vector products run outside autocast: no bf16 copy of x,
    and fp32 coefficients."""
    torch.manual_seed(0)
    layer = randomize_(MultiSpectralAttention(32, dct_size=7))
    x = torch.randn(2, 32, 13, 21) * 100
    with torch.autocast('cpu', dtype=torch.bfloat16):
        freq = layer.spectral_pool(x)  # builds the filter, in fp32 too
    assert freq.dtype == layer.pooling_filter(x).dtype == torch.float32
    torch.testing.assert_close(freq, layer.spectral_pool(x))


def test_trace_pools_to_dct_size():
    """A traced graph pools as the paper writes it, with no filter built
    within it (nor any other state: torch.jit.trace's check that a second
    trace gives the same graph passes)."""
    torch.manual_seed(0)
    layer = randomize_(MultiSpectralAttention(32, dct_size=7)).eval()
    x = torch.randn(2, 32, 13, 21)
    traced = torch.jit.trace(layer, (x, ))
    graph = str(traced.inlined_graph)
    assert 'aten::adaptive_avg_pool2d' in graph
    assert 'aten::matmul' not in graph and 'aten::eye' not in graph
    torch.testing.assert_close(traced(x), layer(x))
