"""GC (mmcv's ContextBlock): the init_weights hook that keeps GC the
identity after ResNet.init_weights(), the paper's equations in float64, and
the parameter count of the paper's r16 c3-c5 setting."""
import pytest
import torch
from helpers import assert_rel_close, randomize_
from mmcv.cnn.bricks.context_block import ContextBlock as MMCVContextBlock
from mmdet.models import ResNet
from self_attention_checks import plugin_io_in_resnet50

from mmattn.models.attention import ContextBlock
from mmattn.registry import MODELS

GC_R16_C3_C5 = dict(cfg=dict(type='ContextBlock', ratio=1. / 16),
                    stages=(False, True, True, True))


def test_is_mmcvs_registered_class_with_the_hook():
    assert ContextBlock is MMCVContextBlock is MODELS.get('ContextBlock')
    assert ContextBlock.init_weights is ContextBlock.reset_parameters


def test_identity_on_c3_c5_of_resnet50_after_init_weights():
    # Fails without the hook: ResNet's Kaiming(layer='Conv2d') init reaches
    # the last conv of channel_add_conv and nothing restores its zero init.
    io = plugin_io_in_resnet50(**GC_R16_C3_C5)
    assert len(io) == 4 + 6 + 3
    assert all(torch.equal(inp, out) for inp, out in io)


def test_resnet_init_breaks_identity_without_the_hook(monkeypatch):
    # The failure the hook fixes, shown on mmcv's class as shipped.
    monkeypatch.delattr(MMCVContextBlock, 'init_weights')
    io = plugin_io_in_resnet50(**GC_R16_C3_C5)
    assert not any(torch.equal(inp, out) for inp, out in io)


def test_init_weights_restores_the_official_init():
    block = randomize_(ContextBlock(64, ratio=1 / 4,
                                    fusion_types=('channel_add',
                                                  'channel_mul')))
    block.init_weights()
    for branch in (block.channel_add_conv, block.channel_mul_conv):
        assert branch[-1].weight.abs().max() == 0
        assert branch[-1].bias.abs().max() == 0
    assert block.conv_mask.bias.abs().max() == 0  # kaiming_init: bias 0
    x = torch.randn(2, 64, 5, 6)
    # channel_mul starts at sigmoid(0) = 0.5, channel_add at 0.
    torch.testing.assert_close(block(x), 0.5 * x)


def layer_norm_ref(z, ln):
    """LayerNorm over all of (C', 1, 1), biased variance."""
    mean = z.mean(dim=(1, 2, 3), keepdim=True)
    var = ((z - mean)**2).mean(dim=(1, 2, 3), keepdim=True)
    return (z - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def transform_ref(branch, c):
    """W_v2 ReLU(LN(W_v1 c)), c of shape (B, C)."""
    conv1, ln, _, conv2 = branch
    z = torch.einsum('pc,bc->bp', conv1.weight[:, :, 0, 0], c) + conv1.bias
    z = torch.relu(layer_norm_ref(z[:, :, None, None], ln))[:, :, 0, 0]
    return torch.einsum('cp,bp->bc', conv2.weight[:, :, 0, 0], z) + \
        conv2.bias


def context_block_ref(block, x):
    """Eq. 4: c = sum_j softmax_j(W_k x_j + b_k) x_j (or the mean, for
    'avg'); z = x * sigmoid(T_mul(c)) + T_add(c)."""
    xf = x.flatten(2)  # (B, C, N)
    if block.pooling_type == 'att':
        logits = torch.einsum('c,bcn->bn', block.conv_mask.weight[0, :, 0, 0],
                              xf) + block.conv_mask.bias
        weights = torch.exp(logits - logits.amax(dim=1, keepdim=True))
        weights = weights / weights.sum(dim=1, keepdim=True)
        c = torch.einsum('bn,bcn->bc', weights, xf)
    else:
        c = xf.mean(dim=2)
    out = x
    if block.channel_mul_conv is not None:
        out = out * torch.sigmoid(transform_ref(block.channel_mul_conv, c))[
            :, :, None, None]
    if block.channel_add_conv is not None:
        out = out + transform_ref(block.channel_add_conv, c)[:, :, None, None]
    return out


@pytest.mark.parametrize('pooling_type', ['att', 'avg'])
@pytest.mark.parametrize('fusion_types', [('channel_add', ), ('channel_mul', ),
                                          ('channel_add', 'channel_mul')],
                         ids=['add', 'mul', 'add_mul'])
def test_matches_paper_equations_float64(pooling_type, fusion_types):
    block = ContextBlock(32, ratio=1 / 4, pooling_type=pooling_type,
                         fusion_types=fusion_types)
    block = randomize_(block).double()
    x = torch.randn(2, 32, 5, 7, dtype=torch.float64)
    with torch.no_grad():
        assert_rel_close(block(x), context_block_ref(block, x))


def test_parameter_count_r16_c3_c5():
    plain = sum(p.numel() for p in ResNet(depth=50).parameters())
    with_gc = sum(p.numel() for p in ResNet(
        depth=50, plugins=[dict(GC_R16_C3_C5,
                                position='after_conv3')]).parameters())
    # conv_mask C + 1; transform C C/16 + C/16, LN 2 C/16, C/16 C + C.
    expected = sum(n * (c + 1 + 2 * c * (c // 16) + 3 * (c // 16) + c)
                   for n, c in [(4, 512), (6, 1024), (3, 2048)])
    assert with_gc - plain == expected == 2_521_741  # the paper's +2.52M
