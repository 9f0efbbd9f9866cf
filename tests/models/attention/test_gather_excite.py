"""GatherExcite: the three paper variants at every extent, the size-agnostic
global depthwise gather, official init, parameter counts."""
import functools
import math

import pytest
import torch
from attention_reference import batch_norm_ref
from helpers import assert_rel_close, randomize_
from mmdet.models import ResNet

from mmattn.models.attention import SE, GatherExcite

SIZES = [(1, 1), (3, 5), (7, 7), (13, 21)]


def avg_pool_ref(x, e):
    """Parameter-free gather of extent e: output (i, j) averages the
    (2e-1) x (2e-1) window centred on input (e i, e j), counting only cells
    inside the map; ceil(H/e) x ceil(W/e) outputs."""
    b, c, h, w = x.shape
    oh, ow = -(-h // e), -(-w // e)
    out = x.new_zeros(b, c, oh, ow)
    for i in range(oh):
        r0, r1 = max(0, e * i - e + 1), min(h, e * i + e)
        for j in range(ow):
            c0, c1 = max(0, e * j - e + 1), min(w, e * j + e)
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(dim=(2, 3))
    return out


def dw_conv3x3_s2_ref(x, weight):
    """Depthwise 3x3 stride-2 conv, zero padding 1:
    out[c, i, j] = sum_{u, v} w[c, u, v] x[c, 2i + u - 1, 2j + v - 1]."""
    b, c, h, w = x.shape
    oh, ow = (h + 1) // 2, (w + 1) // 2
    xp = x.new_zeros(b, c, h + 2, w + 2)
    xp[:, :, 1:h + 1, 1:w + 1] = x
    out = x.new_zeros(b, c, oh, ow)
    for u in range(3):
        for v in range(3):
            out += (weight[None, :, 0, u, v, None, None]
                    * xp[:, :, u:u + 2 * oh - 1:2, v:v + 2 * ow - 1:2])
    return out


def adaptive_avg_pool_ref(x, k):
    """Average over bins [floor(i H / k), ceil((i + 1) H / k))."""
    b, c, h, w = x.shape
    out = x.new_zeros(b, c, k, k)
    for i in range(k):
        r0, r1 = i * h // k, -(-(i + 1) * h // k)
        for j in range(k):
            c0, c1 = j * w // k, -(-(j + 1) * w // k)
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(dim=(2, 3))
    return out


def nearest_ref(g, size):
    """Nearest-neighbour resize: output (p, q) copies input
    (floor(p h / H), floor(q w / W))."""
    h, w = g.shape[-2:]
    rows = [p * h // size[0] for p in range(size[0])]
    cols = [q * w // size[1] for q in range(size[1])]
    return g[:, :, rows][:, :, :, cols]


def mlp_ref(mlp, g):
    """1x1 conv C -> C/16 + bias, ReLU, 1x1 conv C/16 -> C + bias."""
    hidden = torch.einsum('rc,bchw->brhw', mlp.fc1.weight[:, :, 0, 0], g)
    hidden = torch.relu(hidden + mlp.fc1.bias[None, :, None, None])
    out = torch.einsum('cr,brhw->bchw', mlp.fc2.weight[:, :, 0, 0], hidden)
    return out + mlp.fc2.bias[None, :, None, None]


def ge_ref(module, x, training):
    """y = x * sigmoid(NN(MLP(gather(x)))) for every variant."""
    e, gather = module.extent, module.gather
    if gather is None:
        g = x.mean(dim=(2, 3), keepdim=True) if e == 0 else avg_pool_ref(x, e)
    elif e == 0:  # sum_ij w_c(i, j) pooled_c(i, j): one full-grid kernel
        pooled = adaptive_avg_pool_ref(x, module.gather_size)
        g = torch.einsum('bcij,cij->bc', pooled, gather.conv1.weight[:, 0])
        g = batch_norm_ref(g, gather.norm1, training)[:, :, None, None]
        if module.mlp is not None:
            g = torch.relu(g)  # the GE-theta-plus prototxt's gather/relu
    else:
        g = x
        n = int(math.log2(e))
        for i in range(1, n + 1):
            g = dw_conv3x3_s2_ref(g, getattr(gather, f'conv{i}').weight)
            g = batch_norm_ref(g, getattr(gather, f'norm{i}'), training)
            if i < n or module.mlp is not None:
                g = torch.relu(g)
    if module.mlp is not None:
        g = mlp_ref(module.mlp, g)
    return x * nearest_ref(torch.sigmoid(g), x.shape[-2:])


@pytest.mark.parametrize('size', SIZES, ids=lambda s: f'{s[0]}x{s[1]}')
@pytest.mark.parametrize('extent', [0, 2, 4, 8])
@pytest.mark.parametrize('use_mlp', [False, True], ids=['plain', 'mlp'])
def test_parameter_free_gather_matches_reference(size, extent, use_mlp):
    module = randomize_(GatherExcite(32, extent=extent,
                                     use_mlp=use_mlp)).double()
    x = torch.randn(2, 32, *size, dtype=torch.float64)
    assert_rel_close(module(x), ge_ref(module, x, True))


@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('size', [(3, 5), (13, 21), (16, 16)],
                         ids=lambda s: f'{s[0]}x{s[1]}')
@pytest.mark.parametrize('extent', [2, 4, 8])
@pytest.mark.parametrize('use_mlp', [False, True], ids=['theta', 'plus'])
def test_conv_chain_gather_matches_reference(training, size, extent,
                                             use_mlp):
    module = randomize_(GatherExcite(
        32, extent=extent, extra_params=True, use_mlp=use_mlp)).double()
    module.train(training)
    assert len([m for m in module.gather if isinstance(
        m, torch.nn.Conv2d)]) == int(math.log2(extent))
    x = torch.randn(3, 32, *size, dtype=torch.float64)
    assert_rel_close(module(x), ge_ref(module, x, training))


@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('size', [(1, 1), (3, 5), (7, 7), (13, 21)],
                         ids=lambda s: f'{s[0]}x{s[1]}')
@pytest.mark.parametrize('use_mlp', [False, True], ids=['theta', 'plus'])
def test_global_depthwise_gather_matches_reference(training, size, use_mlp):
    module = randomize_(GatherExcite(
        32, extra_params=True, use_mlp=use_mlp, gather_size=5)).double()
    module.train(training)
    x = torch.randn(3, 32, *size, dtype=torch.float64)
    assert_rel_close(module(x), ge_ref(module, x, training))


@pytest.mark.parametrize('variant', [
    dict(), dict(use_mlp=True), dict(extra_params=True, gather_size=5),
    dict(extent=2)], ids=['plain', 'mlp', 'theta', 'extent2'])
def test_training_gradients_match_reference(variant):
    """Training through the lean channel product of a global gate
    (``scale_channels``: x and the (B, C, 1, 1) gate kept, the gate's
    gradient as per-channel dot products) and through the plain product of
    a spatial one: the gradients of x and every parameter are autograd's
    through the reference. (With a block's BN input and shortcut:
    ``test_lean_path_matches_mmdet_block``.)"""
    torch.manual_seed(0)
    module = randomize_(GatherExcite(32, **variant)).double().train()
    x = torch.randn(3, 32, 7, 6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn_like(x)
    out = module(x)
    channel_gate = variant.get('extent', 0) == 0
    assert (out.grad_fn.name() == '_ScaleChannelsBackward') == channel_gate
    # a residual block hands a channel gate its BN input and shortcut
    assert module.takes_norm_input == module.takes_residual == channel_gate
    params = [x, *module.parameters()]
    actual = torch.autograd.grad(out, params, upstream)
    expected = torch.autograd.grad(ge_ref(module, x, True), params,
                                   upstream)
    for a, e in zip(actual, expected):
        assert_rel_close(a, e, floor=1.0)
    shortcut = torch.randn_like(x)  # added in the product's pass (or after)
    assert_rel_close(module(x, residual=shortcut), out + shortcut)


def official_global_ref(module, x, kernel):
    """RN50-GEP: a depthwise conv with a kernel covering the whole map,
    BN, sigmoid; ``kernel`` is (C, H, W)."""
    g = torch.einsum('bchw,chw->bc', x, kernel)
    g = batch_norm_ref(g, module.gather.norm1, False)
    return x * torch.sigmoid(g)[:, :, None, None]


def test_global_gather_is_the_official_full_map_conv():
    module = randomize_(GatherExcite(16, extra_params=True,
                                     gather_size=7)).double().eval()
    weight = module.gather.conv1.weight[:, 0]  # (C, 7, 7)
    # On a 7 x 7 map (the last ResNet stage at 224 px): exactly RN50-GEP.
    x = torch.randn(2, 16, 7, 7, dtype=torch.float64)
    assert_rel_close(module(x), official_global_ref(module, x, weight))
    # On a 14 x 21 map: the full-map kernel constant over 2 x 3 cells,
    # scaled by 1 / cell area.
    x = torch.randn(2, 16, 14, 21, dtype=torch.float64)
    full = weight.repeat_interleave(2, dim=1).repeat_interleave(3, dim=2) / 6
    assert_rel_close(module(x), official_global_ref(module, x, full))


def test_global_gather_response_to_a_constant_map_is_size_free():
    module = randomize_(GatherExcite(8, extra_params=True)).double().eval()
    outs = [module(torch.full((1, 8, h, w), 2.0, dtype=torch.float64))
            for h, w in [(1, 1), (7, 7), (10, 33)]]
    gates = [o[:, :, 0, 0] for o in outs]
    for gate in gates[1:]:
        assert_rel_close(gate, gates[0])


def test_global_mlp_variant_without_params_is_se():
    ge = randomize_(GatherExcite(64, use_mlp=True)).eval()
    se = SE(64).eval()
    assert sum(p.numel() for p in ge.parameters()) == sum(
        p.numel() for p in se.parameters())
    se.fc1.load_state_dict(ge.mlp.fc1.state_dict())
    se.fc2.load_state_dict(ge.mlp.fc2.state_dict())
    x = torch.randn(2, 64, 6, 9)
    torch.testing.assert_close(ge(x), se(x))


def test_default_is_parameter_free_global():
    module = GatherExcite(64)
    assert module.extent == 0 and module.gather is None and module.mlp is None
    assert sum(p.numel() for p in module.parameters()) == 0
    assert module.default_position == 'after_conv3'
    x = torch.randn(1, 64, 5, 7)
    torch.testing.assert_close(
        module.train()(x), x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True)))


def test_global_theta_refuses_batch_one_in_training():
    module = GatherExcite(16, extra_params=True).train()
    x = torch.randn(1, 16, 9, 9)
    with pytest.raises(ValueError, match='batch'):
        module(x)
    assert module.eval()(x).shape == x.shape
    # local extents normalise maps, not vectors: batch 1 trains
    local = GatherExcite(16, extent=2, extra_params=True).train()
    assert local(x).shape == x.shape


def check_official_init(module):
    for m in module.gather.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert not m.bias.any()
    for fc in (module.mlp.fc1, module.mlp.fc2):
        assert not fc.bias.any()
        assert abs(fc.weight.std().item() / 0.01 - 1) < 0.1


def test_official_init():
    torch.manual_seed(0)
    module = GatherExcite(256, extra_params=True, use_mlp=True)
    check_official_init(module)
    # msra filler: std sqrt(2 / fan_in), fan_in = 7 * 7 per depthwise kernel
    std = module.gather.conv1.weight.std().item()
    assert abs(std / math.sqrt(2 / 49) - 1) < 0.05
    chain = GatherExcite(256, extent=4, extra_params=True)
    assert abs(chain.gather.conv2.weight.std().item() / math.sqrt(2 / 9)
               - 1) < 0.05


def test_official_init_survives_mmdet_resnet_init():
    # stage 1 only: the same init path at a fraction of the cost
    backbone = ResNet(
        depth=50, num_stages=1, strides=(1, ), dilations=(1, ),
        out_indices=(0, ), init_cfg=None,
        plugins=[dict(cfg=dict(type='GatherExcite', extra_params=True,
                            use_mlp=True),
                      position='after_conv3')])
    blocks = [m for m in backbone.modules() if isinstance(m, GatherExcite)]
    assert len(blocks) == 3
    for module in blocks:
        randomize_(module)
    backbone.init_weights()
    for module in blocks:  # mmdet's Kaiming: std 0.35 and 0.09, not 0.01
        check_official_init(module)


@pytest.mark.parametrize('kwargs, arg', [
    (dict(extent=1), 'extent'),
    (dict(extent=3), 'extent'),
    (dict(extent=6), 'extent'),
    (dict(extent=-2), 'extent'),
    (dict(extent=2.0), 'extent'),
    (dict(extent=True), 'extent'),
    (dict(gather_size=0), 'gather_size'),
    (dict(use_mlp=True, rd_ratio=1 / 128), 'rd_ratio'),
    (dict(use_mlp=True, rd_channels=0), 'rd_channels'),
    (dict(act_layer='nope'), 'act_layer'),
    (dict(gate_layer='nope'), 'gate_layer'),
])
def test_invalid_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        GatherExcite(64, **kwargs)


@functools.lru_cache(maxsize=None)
def resnet50_params():
    return sum(p.numel() for p in ResNet(depth=50).parameters())


def resnet50_added_params(cfg):
    base = resnet50_params()
    net = ResNet(depth=50, plugins=[dict(cfg=cfg, position='after_conv3')])
    return sum(p.numel() for p in net.parameters()) - base


BLOCKS = [(3, 256), (4, 512), (6, 1024), (3, 2048)]  # ResNet-50 (n, C)


def test_resnet50_params():
    assert resnet50_added_params(dict(type='GatherExcite')) == 0
    # GE-theta, extent 8: three depthwise 3x3 + BN per block
    expected = sum(n * 3 * (9 * c + 2 * c) for n, c in BLOCKS)
    assert expected == 498_432
    assert resnet50_added_params(
        dict(type='GatherExcite', extent=8, extra_params=True)) == expected
    # GE-theta-plus, global, 7 x 7 kernel: 49C + BN 2C + MLP C^2/8 + C/16 + C
    expected = sum(n * (52 * c + c * c // 8 + c // 16) for n, c in BLOCKS)
    assert expected == 3_301_296
    assert resnet50_added_params(dict(
        type='GatherExcite', extra_params=True, use_mlp=True)) == expected
