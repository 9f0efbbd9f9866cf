"""SKConv and PSAConv against references written from the papers'
equations (float64, eval-mode BN as an affine map)."""
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_rel_close, randomize_
from mmcv.cnn import build_conv_layer

from mmattn.models.backbones import PSAConv, SKConv


def bn_eval(x, bn):
    """Eval-mode BatchNorm from its definition."""
    shape = (1, -1) + (1, ) * (x.dim() - 2)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (x - bn.running_mean.view(shape)) * scale.view(shape) + \
        bn.bias.view(shape)


def sk_reference(m: SKConv, x, stride, dilations, groups, split):
    """Li et al. eqs. 1-6: U_m = ReLU(BN(conv_m(X))), s = GAP(sum U),
    z = ReLU(BN(W_s s)), a = softmax_m(A_m z), V = sum_m a_m U_m."""
    parts = x.chunk(len(dilations), 1) if split else [x] * len(dilations)
    us = []
    for branch, part, d, g in zip(m.branches, parts, dilations, groups):
        u = F.conv2d(part, branch.conv.weight, stride=stride, padding=d,
                     dilation=d, groups=g)
        us.append(torch.relu(bn_eval(u, branch.bn)))
    s = sum(u.mean(dim=(2, 3)) for u in us)  # (B, C)
    z = torch.relu(bn_eval(s @ m.fc_reduce.weight[:, :, 0, 0].T, m.bn))
    logits = z @ m.fc_select.weight[:, :, 0, 0].T  # (B, M*C)
    logits = logits.view(x.shape[0], len(us), -1)
    a = torch.exp(logits) / torch.exp(logits).sum(dim=1, keepdim=True)
    return sum(a[:, i, :, None, None] * u for i, u in enumerate(us))


@pytest.mark.parametrize('kwargs,groups,split', [
    (dict(dilations=(1, 2), groups=4), (4, 4), False),  # SKNet
    (dict(dilations=(1, 1), branch_groups=(1, 8), min_channels=1), (1, 8),
     False),  # PytorchInsight SK-ResNet50*
    (dict(dilations=(1, 2), split_input=True, rd_ratio=1 / 8,
          rd_divisor=16, min_channels=1), (1, 1), True),  # timm
])
@pytest.mark.parametrize('stride', [1, 2])
def test_sk_matches_paper_equations(kwargs, groups, split, stride):
    m = SKConv(16, 32, 3, stride=stride, **kwargs)
    randomize_(m).double().eval()
    x = torch.randn(2, 16, 9, 11, dtype=torch.float64)
    out = m(x)
    expected = sk_reference(m, x, stride, kwargs['dilations'], groups, split)
    assert out.shape == (2, 32, (9 - 1) // stride + 1, (11 - 1) // stride + 1)
    assert_rel_close(out, expected)


def test_sk_widths():
    # d = max(C / r, L): SKNet-50 stage widths 128..1024 give 32, 32, 32, 64
    assert [SKConv(c, c, groups=32).fc_reduce.out_channels
            for c in (128, 256, 512, 1024)] == [32, 32, 32, 64]
    # timm skresnet18: C / 8 rounded to 16
    assert [SKConv(c, c, split_input=True, rd_ratio=1 / 8, rd_divisor=16,
                   min_channels=1).fc_reduce.out_channels
            for c in (64, 128, 256, 512)] == [16, 16, 32, 64]
    m = SKConv(64, 64, dilations=(1, 1), branch_groups=(1, 32),
               min_channels=1)
    assert m.fc_reduce.out_channels == 4
    assert [b.conv.groups for b in m.branches] == [1, 32]


def test_sk_builds_as_a_conv_layer():
    conv = build_conv_layer(dict(type='SKConv'), 64, 64, 3, stride=2,
                            padding=1, dilation=1, groups=32, bias=False)
    assert isinstance(conv, SKConv) and conv.includes_norm_act
    assert [b.conv.groups for b in conv.branches] == [32, 32]
    assert [b.conv.dilation for b in conv.branches] == [(1, 1), (2, 2)]
    # a stage dilation multiplies every branch's
    conv = build_conv_layer(dict(type='SKConv'), 64, 64, 3, padding=2,
                            dilation=2, bias=False)
    assert [b.conv.dilation for b in conv.branches] == [(2, 2), (4, 4)]
    assert conv(torch.randn(2, 64, 7, 7)).shape == (2, 64, 7, 7)


@pytest.mark.parametrize('kwargs,match', [
    (dict(kernel_size=5), 'kernel_size'),
    (dict(bias=True), 'bias'),
    (dict(dilations=(1, )), 'dilations'),
    (dict(branch_groups=(1, 2, 4)), 'branch_groups'),
    (dict(branch_groups=(1, 5)), 'branch_groups'),
    (dict(split_input=True, dilations=(1, 2, 3)), 'len\\(dilations\\)'),
    (dict(rd_ratio=1 / 128, min_channels=0), 'rd_ratio'),
])
def test_sk_invalid_arguments(kwargs, match):
    args = dict(in_channels=64, out_channels=64)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        SKConv(**args)


def test_sk_autocast_and_channels_last():
    m = SKConv(32, 32, groups=4).eval()
    x = torch.randn(2, 32, 13, 21)
    out = m(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, m(x), rtol=1e-5, atol=1e-5)
    x = x * 300
    ref = m(x)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast('cpu', dtype=dtype):
            half = m(x)
        assert torch.isfinite(half).all()
        rel = (half.float() - ref).abs().mean() / ref.abs().mean()
        assert rel < 0.05


def psa_reference(m: PSAConv, x, stride, kernels, groups):
    """Zhang et al. eqs. 3-9: F_i = Conv_{k_i, G_i}(X), Z_i = SEWeight(F_i)
    (one shared module), att = softmax over i, Y = Cat(att_i * F_i), in the
    official (reversed) order."""
    feats = [F.conv2d(x, conv.weight, stride=stride, padding=k // 2,
                      groups=g)
             for conv, k, g in zip(m.convs, kernels, groups)]
    se = m.se
    zs = []
    for f in feats:
        pooled = f.mean(dim=(2, 3))  # (B, C')
        h = torch.relu(pooled @ se.fc1.weight[:, :, 0, 0].T + se.fc1.bias)
        zs.append(torch.sigmoid(h @ se.fc2.weight[:, :, 0, 0].T +
                                se.fc2.bias))
    e = [torch.exp(z) for z in zs]
    att = [ei / sum(e) for ei in e]
    weighted = [a[:, :, None, None] * f for a, f in zip(att, feats)]
    return torch.cat(weighted[::-1], dim=1)


@pytest.mark.parametrize('stride', [1, 2])
def test_psa_matches_paper_equations(stride):
    kernels, groups = (3, 5, 7, 9), (1, 4, 8, 16)
    m = randomize_(PSAConv(32, 64, stride=stride)).double()
    x = torch.randn(2, 32, 11, 9, dtype=torch.float64)
    out = m(x)
    assert_rel_close(out, psa_reference(m, x, stride, kernels, groups))
    # the paper's order is the same splits, not reversed
    m.reverse_concat = False
    paper = torch.cat(psa_reference(m, x, stride, kernels, groups).chunk(4, 1)
                      [::-1], dim=1)
    assert_rel_close(m(x), paper)


def test_psa_official_shapes():
    # EPSABlock(planes=64): 4 splits of 16, SE 16 -> 1 -> 16
    m = PSAConv(64, 64)
    assert [tuple(c.weight.shape) for c in m.convs] == [
        (16, 64, 3, 3), (16, 16, 5, 5), (16, 8, 7, 7), (16, 4, 9, 9)]
    assert tuple(m.se.fc1.weight.shape) == (1, 16, 1, 1)
    assert m.se.fc1.bias is not None and not m.includes_norm_act


@pytest.mark.parametrize('kwargs,match', [
    (dict(kernel_size=5), 'kernel_size'),
    (dict(groups=2), 'groups'),
    (dict(kernels=(3, 4, 7, 9)), 'kernels'),
    (dict(branch_groups=(1, 4)), 'branch_groups'),
    (dict(out_channels=66), 'len\\(kernels\\)'),
    (dict(branch_groups=(1, 4, 8, 32)), 'branch_groups'),
])
def test_psa_invalid_arguments(kwargs, match):
    args = dict(in_channels=64, out_channels=64)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        PSAConv(**args)


def test_psa_autocast_finite():
    m = PSAConv(32, 64)
    x = torch.randn(2, 32, 24, 20) * 300
    ref = m(x)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast('cpu', dtype=dtype):
            half = m(x)
        assert torch.isfinite(half).all()
        rel = (half.float() - ref).abs().mean() / ref.abs().mean()
        assert rel < 0.05
