"""CoordAttention: paper maths, official mip / bias / init, parameter count."""
import math

import pytest
import torch
import torch.nn as nn
from attention_reference import batch_norm_ref
from helpers import (assert_rel_close, assert_training_pass_matches,
                     randomize_)
from mmdet.models import ResNet

from mmattn.models.attention import CoordAttention


def coord_ref(module, x, training):
    """Sec. 3.2 with explicit sums: z^h, z^w directional means; shared
    1x1 conv + BN + h-swish over the H + W positions; sigmoid gates
    g^h (per row), g^w (per column); y = x g^h g^w."""
    b, c, h, w = x.shape
    z_h = x.sum(dim=3) / w  # (B, C, H)
    z_w = x.sum(dim=2) / h  # (B, C, W)
    z = torch.cat([z_h, z_w], dim=2)  # (B, C, H+W)
    f = torch.einsum('mc,bcp->bmp', module.conv1.weight[:, :, 0, 0], z)
    f = f + module.conv1.bias[None, :, None]
    f = batch_norm_ref(f, module.bn1, training)
    f = f * torch.clamp(f + 3, 0, 6) / 6  # h-swish as written in the paper
    f_h, f_w = f[:, :, :h], f[:, :, h:]
    g_h = torch.sigmoid(
        torch.einsum('cm,bmh->bch', module.conv_h.weight[:, :, 0, 0], f_h)
        + module.conv_h.bias[None, :, None])
    g_w = torch.sigmoid(
        torch.einsum('cm,bmw->bcw', module.conv_w.weight[:, :, 0, 0], f_w)
        + module.conv_w.bias[None, :, None])
    return x * g_h[:, :, :, None] * g_w[:, :, None, :]


@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('size', [(1, 1), (3, 5), (7, 7), (13, 21)],
                         ids=lambda s: f'{s[0]}x{s[1]}')
def test_matches_reference(training, size):
    module = randomize_(CoordAttention(48)).double().train(training)
    x = torch.randn(3, 48, *size, dtype=torch.float64)
    assert_rel_close(module(x), coord_ref(module, x, training))


def test_training_pass_matches_reference(channel_blocks):
    """The gates' product in channel blocks, the residual added in it:
    against autograd through Sec. 3.2."""
    module = randomize_(CoordAttention(48)).double()
    x = channel_blocks(torch.randn(3, 48, 7, 5, dtype=torch.float64))
    assert_training_pass_matches(
        module, lambda m, t: coord_ref(m, t, training=True), x)


def test_rows_and_columns_are_gated_separately():
    # A gate that depends on the row only and one on the column only: the
    # output over input is rank one per channel (g^h outer g^w).
    module = randomize_(CoordAttention(16)).double().eval()
    x = torch.rand(1, 16, 5, 9, dtype=torch.float64) + 1
    ratio = module(x) / x  # (1, C, H, W)
    rank = torch.linalg.matrix_rank(ratio[0])
    assert (rank == 1).all()


def test_official_widths_bias_and_act():
    module = CoordAttention(64)
    # official mip = max(8, inp // 32)
    assert module.conv1.weight.shape == (8, 64, 1, 1)
    assert CoordAttention(1024).conv1.out_channels == 32
    assert CoordAttention(300).conv1.out_channels == 9  # 300 // 32
    assert CoordAttention(64, rd_channels=5).conv_h.in_channels == 5
    assert CoordAttention(64, min_channels=1).conv1.out_channels == 2
    assert all(conv.bias is not None
               for conv in (module.conv1, module.conv_h, module.conv_w))
    assert CoordAttention(64, bias=False).conv_w.bias is None
    # h-swish x * ReLU6(x + 3) / 6 is nn.Hardswish
    assert isinstance(module.act, nn.Hardswish)
    t = torch.linspace(-6, 6, 101, dtype=torch.float64)
    torch.testing.assert_close(module.act(t),
                               t * torch.clamp(t + 3, 0, 6) / 6)
    assert module.default_position == 'after_conv3'


def check_official_init(module):
    for conv in (module.conv1, module.conv_h, module.conv_w):
        assert not conv.bias.any()
    assert torch.equal(module.bn1.weight, torch.ones_like(module.bn1.weight))
    assert not module.bn1.bias.any()


def test_official_init():
    torch.manual_seed(0)
    module = CoordAttention(512)  # mip 16
    check_official_init(module)
    # mbv2_ca.py: normal(0, sqrt(2 / (k * k * out_channels)))
    for conv in (module.conv1, module.conv_h, module.conv_w):
        expected = math.sqrt(2 / conv.out_channels)
        assert abs(conv.weight.std().item() / expected - 1) < 0.05
    assert abs(module.conv1.weight.mean().item()) < 0.02


def test_official_init_survives_mmdet_resnet_init():
    # mmdet's generic Kaiming(fan_out, bias 0) equals the official init in
    # distribution here; this guards that nothing else overrides it.
    # stage 1 only: the same init path at a fraction of the cost
    backbone = ResNet(
        depth=50, num_stages=1, strides=(1, ), dilations=(1, ),
        out_indices=(0, ), init_cfg=None,
        plugins=[dict(cfg=dict(type='CoordAttention'),
                      position='after_conv3')])
    blocks = [m for m in backbone.modules() if isinstance(m, CoordAttention)]
    assert len(blocks) == 3
    for module in blocks:
        randomize_(module)
    backbone.init_weights()
    for module in blocks:
        check_official_init(module)


@pytest.mark.parametrize('kwargs, arg', [
    (dict(rd_channels=0), 'rd_channels'),
    (dict(rd_ratio=0), 'rd_ratio'),
    (dict(rd_ratio=1 / 128, min_channels=0), 'rd_ratio'),
    (dict(rd_divisor=0), 'rd_divisor'),
    (dict(act_layer='nope'), 'act_layer'),
    (dict(gate_layer='nope'), 'gate_layer'),
])
def test_invalid_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        CoordAttention(64, **kwargs)


def test_half_precision_statistics():
    # Row / column means of a large fp16 map: an fp16 sum would overflow.
    module = CoordAttention(8).eval()
    x = torch.full((1, 8, 4, 600), 200.0)
    with torch.autocast('cpu', dtype=torch.float16):
        out = module(x.half())
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), module(x), rtol=2e-2, atol=2.0)


def test_resnet50_params():
    base = sum(p.numel() for p in ResNet(depth=50).parameters())
    with_ca = ResNet(depth=50, plugins=[
        dict(cfg=dict(type='CoordAttention'), position='after_conv3')])
    # Per block: conv1 C*mip + mip, BN 2*mip, conv_h/conv_w 2*(mip*C + C),
    # mip = max(8, C // 32), over (blocks, C) = (3,256),(4,512),(6,1024),
    # (3,2048).
    expected = sum(n * (3 * c * mip + 3 * mip + 2 * c)
                   for n, c, mip in [(3, 256, 8), (4, 512, 16),
                                     (6, 1024, 32), (3, 2048, 64)])
    assert expected == 1_917_832
    assert sum(p.numel() for p in with_ca.parameters()) - base == expected
