"""ResidualAttention: the hourglass mask branch against an explicit
composition, Caffe pooling / interpolation sizes, (1 + M) x, init, counts."""
import math

import pytest
import torch
from attention_reference import batch_norm_ref, conv2d_ref
from helpers import assert_rel_close, randomize_
from mmdet.models import ResNet

from mmattn.models.attention import ResidualAttention
from mmattn.models.attention.residual_attention import PreActBottleneck


def pool_ref(x):
    """Caffe MAX 3x3/2: ceil((n - 3) / 2) + 1 windows [2i, 2i + 3) clipped
    to the map; skipped when it would leave one pixel."""
    h, w = x.shape[-2:]
    oh, ow = max(1, -(-(h - 3) // 2) + 1), max(1, -(-(w - 3) // 2) + 1)
    if oh * ow < 2:
        return x
    out = x.new_empty(*x.shape[:2], oh, ow)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = x[:, :, 2 * i:2 * i + 3,
                                2 * j:2 * j + 3].amax(dim=(2, 3))
    return out


def interp_matrix(n_in, n_out):
    """Linear interpolation with corners aligned (Caffe Interp): output p
    samples input position p (n_in - 1) / (n_out - 1)."""
    a = torch.zeros(n_out, n_in, dtype=torch.float64)
    for p in range(n_out):
        s = p * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        i0 = math.floor(s)
        i1, t = min(i0 + 1, n_in - 1), s - i0
        a[p, i0] += 1 - t
        a[p, i1] += t
    return a


def upsample_ref(x, size):
    a_h, a_w = interp_matrix(x.shape[2], size[0]), interp_matrix(
        x.shape[3], size[1])
    return torch.einsum('ph,bchw,qw->bcpq', a_h, x, a_w)


def conv1x1_ref(x, conv):
    return torch.einsum('oc,bchw->bohw', conv.weight[:, :, 0, 0], x)


def unit_ref(unit, x, training):
    """Pre-activation bottleneck:
    x + W3 relu(BN(W2 relu(BN(W1 relu(BN x)))))."""
    out = conv1x1_ref(torch.relu(batch_norm_ref(x, unit.bn1, training)),
                      unit.conv1)
    out = conv2d_ref(torch.relu(batch_norm_ref(out, unit.bn2, training)),
                     unit.conv2.weight)
    out = conv1x1_ref(torch.relu(batch_norm_ref(out, unit.bn3, training)),
                      unit.conv3)
    return x + out


def units_ref(units, x, training):
    for unit in units:
        x = unit_ref(unit, x, training)
    return x


def hourglass_ref(module, h, level, training):
    """Level ``level`` of the mask branch, written recursively: pool, r
    units; the lowest level adds r more units; every other level adds the
    upsampled inner level to its skip unit, then r units."""
    m = units_ref(module.down[level], pool_ref(h), training)
    if level == module.depth - 1:
        return units_ref(module.bottom, m, training)
    inner = hourglass_ref(module, m, level + 1, training)
    merged = upsample_ref(inner, m.shape[-2:]) + unit_ref(
        module.skips[level], m, training)
    return units_ref(module.up[level], merged, training)


def mask_ref(module, x, training):
    """M(x) = sigmoid(W2 relu(BN(W1 relu(BN(up(hourglass(x)))))))."""
    bn1, _, conv1, bn2, _, conv2 = module.head
    m = upsample_ref(hourglass_ref(module, x, 0, training), x.shape[-2:])
    m = conv1x1_ref(torch.relu(batch_norm_ref(m, bn1, training)), conv1)
    m = conv1x1_ref(torch.relu(batch_norm_ref(m, bn2, training)), conv2)
    return torch.sigmoid(m)


@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('size', [(1, 1), (3, 5), (7, 7), (13, 21), (16, 12)],
                         ids=lambda s: f'{s[0]}x{s[1]}')
@pytest.mark.parametrize('depth', [1, 2, 3])
def test_matches_reference(training, size, depth):
    module = randomize_(ResidualAttention(8, depth=depth)).double()
    module.train(training)
    x = torch.randn(2, 8, *size, dtype=torch.float64)
    mask = mask_ref(module, x, training)
    assert_rel_close(module.mask(x), mask)
    # attention residual learning: H = (1 + M(x)) * T(x), T = identity
    assert_rel_close(module(x), (1 + mask) * x)


def test_two_units_per_level_match_reference():
    module = randomize_(ResidualAttention(8, depth=2, num_units=2)).double()
    assert all(len(units) == 2 for units in module.down)
    assert len(module.bottom) == 2 and len(module.skips) == 1
    x = torch.randn(2, 8, 11, 9, dtype=torch.float64)
    assert_rel_close(module(x), (1 + mask_ref(module, x, True)) * x)


def test_caffe_pooling_sizes():
    pool = ResidualAttention._pool
    sizes = {56: 28, 28: 14, 14: 7, 7: 3, 13: 6, 21: 10, 4: 2, 3: 1}
    for n, expected in sizes.items():
        assert pool(torch.zeros(1, 1, n, 40)).shape[-2] == expected
    x = torch.randn(1, 1, 3, 4)
    assert pool(x).shape[-2:] == (1, 2)
    # a pooling that would leave one pixel is skipped
    for shape in [(1, 1), (1, 2), (2, 2), (3, 3)]:
        x = torch.randn(1, 1, *shape)
        assert torch.equal(pool(x), x)


def test_hourglass_levels_on_attention56_stage1_map():
    module = ResidualAttention(8).eval()
    seen = {}

    def record(name):
        def hook(mod, args):
            seen[name] = tuple(args[0].shape[-2:])
        return hook

    module.skips[0].register_forward_pre_hook(record('skip1'))
    module.skips[1].register_forward_pre_hook(record('skip2'))
    module.bottom.register_forward_pre_hook(record('bottom'))
    module(torch.randn(1, 8, 56, 56))
    assert seen == {'skip1': (28, 28), 'skip2': (14, 14), 'bottom': (7, 7)}


def test_batch_one_trains_on_tiny_maps():
    module = ResidualAttention(16).train()
    for shape in [(3, 3), (2, 5), (7, 9)]:
        x = torch.randn(1, 16, *shape, requires_grad=True)
        module(x).sum().backward()
        assert torch.isfinite(x.grad).all()


def test_gate_choice_and_range():
    module = randomize_(ResidualAttention(8, depth=1)).eval()
    x = torch.randn(2, 8, 9, 9)
    assert ((module.mask(x) > 0) & (module.mask(x) < 1)).all()
    tanh = ResidualAttention(8, depth=1, gate_layer='tanh').eval()
    tanh.load_state_dict(module.state_dict())
    torch.testing.assert_close(tanh.mask(x),
                               torch.tanh(torch.logit(module.mask(x))),
                               rtol=1e-4, atol=1e-4)
    # a zero last conv gives M = 1/2, i.e. 1.5 x
    torch.nn.init.zeros_(module.head[-1].weight)
    torch.testing.assert_close(module(x), 1.5 * x)


def unit_params(c, mid):
    return c * mid + 9 * mid * mid + mid * c + 2 * c + 4 * mid


def expected_params(c, depth, r=1, mid=None):
    mid = mid or c // 4
    units = r * depth + r + (depth - 1) + r * (depth - 1)
    return units * unit_params(c, mid) + 2 * c * c + 4 * c


@pytest.mark.parametrize('depth, r', [(1, 1), (2, 1), (3, 1), (3, 2)])
def test_param_count(depth, r):
    module = ResidualAttention(64, depth=depth, num_units=r)
    assert sum(p.numel() for p in module.parameters()) == expected_params(
        64, depth, r)
    # widths: C -> C/4 -> C/4 -> C bottlenecks, 1x1 C -> C head
    unit = module.down[0][0]
    assert isinstance(unit, PreActBottleneck)
    assert unit.conv1.weight.shape == (16, 64, 1, 1)
    assert unit.conv2.weight.shape == (16, 16, 3, 3)
    assert unit.conv3.weight.shape == (64, 16, 1, 1)
    assert all(m.bias is None for m in module.modules()
               if isinstance(m, torch.nn.Conv2d))


def test_defaults():
    module = ResidualAttention(256)
    assert module.depth == 3 and len(module.skips) == 2
    assert module.default_position == 'after_stage'
    assert sum(p.numel() for p in module.parameters()) == expected_params(
        256, 3)
    assert ResidualAttention(64, rd_channels=8).down[0][0].conv2.in_channels \
        == 8


def check_msra_init(module):
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert not m.bias.any()
    unit = module.down[0][0]
    for conv in (unit.conv1, unit.conv2, module.head[2]):
        fan_in = conv.weight[0].numel()
        ratio = conv.weight.std().item() / math.sqrt(2 / fan_in)
        assert abs(ratio - 1) < 0.05, ratio


def test_msra_init():
    torch.manual_seed(0)
    check_msra_init(ResidualAttention(256))


def test_init_survives_mmdet_resnet_init():
    # stage 1 only: the same init path at a fraction of the cost
    backbone = ResNet(
        depth=50, num_stages=1, strides=(1, ), dilations=(1, ),
        out_indices=(0, ), init_cfg=None,
        plugins=[dict(cfg=dict(type='ResidualAttention'),
                      position='after_conv3')])
    blocks = [m for m in backbone.modules()
              if isinstance(m, ResidualAttention)]
    assert len(blocks) == 3
    for module in blocks:
        randomize_(module)
    backbone.init_weights()
    for module in blocks:  # mmdet's fan_out Kaiming would double conv1's std
        check_msra_init(module)


@pytest.mark.parametrize('kwargs, arg', [
    (dict(depth=0), 'depth'),
    (dict(depth=2.0), 'depth'),
    (dict(num_units=0), 'num_units'),
    (dict(rd_ratio=1 / 128), 'rd_ratio'),
    (dict(rd_channels=0), 'rd_channels'),
    (dict(act_layer='nope'), 'act_layer'),
    (dict(gate_layer='nope'), 'gate_layer'),
])
def test_invalid_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        ResidualAttention(64, **kwargs)
