"""CrissCrossAttention: literal per-pixel loops of the paper, shared-weight
recurrence, identity at init, no (HW x HW) tensor, parameter count."""
import pytest
import torch
from helpers import assert_rel_close, randomize_
from mmdet.models import ResNet
from self_attention_checks import LargestTensor, plugin_io_in_resnet50

from mmattn.models.attention import CrissCrossAttention


def conv1x1_ref(x, conv):
    return torch.einsum('oc,bchw->bohw', conv.weight[:, :, 0, 0], x) + \
        conv.bias.view(1, -1, 1, 1)


def cca_pass_ref(module, x):
    """One criss-cross pass, pixel by pixel: position (i, j) scores
    Q_ij . K_v over its column (v = (g, j), g != i) and its row (v = (i, g),
    self included once), one softmax over those H + W - 1 scores,
    out_ij = x_ij + gamma * sum_v A_v V_v."""
    q, k, v = (conv1x1_ref(x, conv) for conv in (
        module.query_conv, module.key_conv, module.value_conv))
    b, c, h, w = x.shape
    out = x.clone()
    for n in range(b):
        for i in range(h):
            for j in range(w):
                path = [(g, j) for g in range(h) if g != i] + \
                    [(i, g) for g in range(w)]
                scores = torch.stack(
                    [q[n, :, i, j] @ k[n, :, a, bb] for a, bb in path])
                attn = torch.exp(scores - scores.max())
                attn = attn / attn.sum()
                agg = sum(attn[t] * v[n, :, a, bb]
                          for t, (a, bb) in enumerate(path))
                out[n, :, i, j] = x[n, :, i, j] + module.gamma * agg
    return out


def cca_ref(module, x):
    for _ in range(module.recurrence):
        x = cca_pass_ref(module, x)
    return x


@pytest.mark.parametrize('size', [(4, 5), (1, 4), (3, 1), (1, 1)],
                         ids=lambda s: f'{s[0]}x{s[1]}')
@pytest.mark.parametrize('recurrence', [1, 2])
def test_matches_per_pixel_loops_float64(size, recurrence):
    module = randomize_(CrissCrossAttention(16, recurrence=recurrence))
    module = module.double()
    x = torch.randn(2, 16, *size, dtype=torch.float64)
    with torch.no_grad():
        assert_rel_close(module(x), cca_ref(module, x))


def test_recurrence_shares_weights():
    twice = randomize_(CrissCrossAttention(16, recurrence=2)).double()
    once = CrissCrossAttention(16, recurrence=1).double()
    once.load_state_dict(twice.state_dict())
    assert sum(p.numel() for p in twice.parameters()) == \
        sum(p.numel() for p in once.parameters())
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        assert_rel_close(twice(x), once(once(x)))


def test_official_defaults_and_init():
    module = CrissCrossAttention(64)
    assert module.recurrence == 2
    assert module.query_conv.out_channels == 8  # C / 8
    assert module.key_conv.out_channels == 8
    assert module.value_conv.out_channels == 64
    assert module.query_conv.bias is not None  # official convs have bias
    assert module.gamma.shape == (1, ) and module.gamma.item() == 0
    x = torch.randn(2, 64, 7, 9)
    assert torch.equal(module(x), x)


def test_init_weights_restores_official_init():
    module = randomize_(CrissCrossAttention(64))
    module.init_weights()
    assert module.gamma.item() == 0
    # PyTorch's default conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1 / 64**0.5
    for conv in (module.query_conv, module.key_conv, module.value_conv):
        assert conv.weight.abs().max() <= bound
        assert conv.weight.std() > bound / 3


def test_identity_in_resnet50_after_init_weights():
    io = plugin_io_in_resnet50(dict(type='CrissCrossAttention'),
                               stages=(True, True, False, False))
    assert len(io) == 3 + 4
    assert all(torch.equal(inp, out) for inp, out in io)


def test_no_hw_squared_tensor():
    module = randomize_(CrissCrossAttention(16))
    x = torch.randn(1, 16, 24, 24, requires_grad=True)
    with LargestTensor() as rec:
        module(x).sum().backward()
    hw = 24 * 24
    # Largest: the (B, H, W, H + W) energies, HW (H + W) = HW^2 / 12 here.
    assert rec.numel <= 24 * 24 * 48 < hw * hw // 8


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_autocast_energies_in_fp32(dtype):
    torch.manual_seed(0)
    module = randomize_(CrissCrossAttention(16))
    # Q.K ~ 1e5 and more: fp16 energies would overflow to inf / NaN.
    x = torch.randn(2, 16, 9, 11) * 300
    with torch.autocast('cpu', dtype=dtype):
        out = module(x)
    assert torch.isfinite(out).all()
    # Moderate activations: close to fp32.
    x = torch.randn(2, 16, 9, 11) * 0.5
    ref = module(x)
    with torch.autocast('cpu', dtype=dtype):
        out = module(x)
    rel = (out.float() - ref).abs().mean() / ref.abs().mean()
    assert rel < 0.02


def test_parameter_count_in_resnet50():
    plain = sum(p.numel() for p in ResNet(depth=50).parameters())
    with_cca = sum(p.numel() for p in ResNet(depth=50, plugins=[
        dict(cfg=dict(type='CrissCrossAttention'),
             position='after_conv3')]).parameters())
    # 2 (C C/8 + C/8) + C^2 + C + 1 per bottleneck, C = 256 ... 2048.
    expected = sum(n * (2 * (c * (c // 8) + c // 8) + c * c + c + 1)
                   for n, c in [(3, 256), (4, 512), (6, 1024), (3, 2048)])
    assert with_cca - plain == expected == 25_168_336


def test_invalid_arguments():
    with pytest.raises(ValueError, match='recurrence'):
        CrissCrossAttention(16, recurrence=0)
    with pytest.raises(ValueError, match='rd_ratio'):
        CrissCrossAttention(4, rd_ratio=1 / 8)
    with pytest.raises(ValueError, match='rd_channels'):
        CrissCrossAttention(16, rd_channels=0)
    with pytest.raises(ValueError, match='in_channels'):
        CrissCrossAttention(0)
