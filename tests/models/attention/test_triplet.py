"""Triplet attention: rotated-branch maths, official init, parameter count."""
import pytest
import torch
from attention_reference import zpool_gate_ref
from helpers import (assert_rel_close, assert_training_pass_matches,
                     randomize_)
from mmdet.models import ResNet

from mmattn.models.attention import TripletAttention


def gated_ref(x, gate, training):
    return x * zpool_gate_ref(x, gate, training)


def triplet_ref(module, x, training):
    """The paper's three branches, each on its rotated copy of x and rotated
    back: C-W via permute (0, 2, 1, 3), H-C via permute (0, 3, 2, 1), plain
    H-W; the mean of the three (of the two rotated ones with no_spatial)."""
    y_cw = gated_ref(x.permute(0, 2, 1, 3), module.cw,
                     training).permute(0, 2, 1, 3)
    y_hc = gated_ref(x.permute(0, 3, 2, 1), module.hc,
                     training).permute(0, 3, 2, 1)
    if module.hw is None:
        return (y_cw + y_hc) / 2
    return (gated_ref(x, module.hw, training) + y_cw + y_hc) / 3


@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('size', [(1, 1), (3, 5), (13, 21)],
                         ids=lambda s: f'{s[0]}x{s[1]}')
@pytest.mark.parametrize('no_spatial', [False, True],
                         ids=['full', 'no_spatial'])
def test_matches_reference(training, size, no_spatial):
    module = randomize_(TripletAttention(6, no_spatial=no_spatial)).double()
    module.train(training)
    x = torch.randn(2, 6, *size, dtype=torch.float64)
    assert_rel_close(module(x), triplet_ref(module, x, training))


@pytest.mark.parametrize('no_spatial', [False, True],
                         ids=['full', 'no_spatial'])
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
def test_training_pass_matches_reference(no_spatial, layout, channel_blocks):
    """The pooling's backward completes the product's gradient of x (one
    tensor written), residual added in the product: against autograd
    through the rotated branches."""
    module = randomize_(TripletAttention(6, no_spatial=no_spatial)).double()
    x = channel_blocks(torch.randn(2, 6, 9, 7, dtype=torch.float64))
    if layout == 'channels_last':
        x = x.to(memory_format=torch.channels_last)
    assert_training_pass_matches(
        module, lambda m, t: triplet_ref(m, t, training=True), x)


def test_gate_convs_run_channels_last_on_the_cpu():
    """Each branch's 7x7 conv 2 -> 1 gets a channels-last input on the CPU
    (oneDNN's fast layout for it), whatever view the branch pools."""
    module = TripletAttention(8)
    layouts = []
    for branch in (module.cw, module.hc, module.hw):
        branch.conv.register_forward_pre_hook(
            lambda _, args: layouts.append(args[0].is_contiguous(
                memory_format=torch.channels_last)))
    module(torch.randn(2, 8, 5, 6, requires_grad=True)).sum().backward()
    assert layouts == [True, True, True]


def test_branch_orientation_matters():
    # An asymmetric kernel in the H-C branch: the conv runs over (H, C), in
    # that order, so the transposed kernel gives a different result.
    module = randomize_(TripletAttention(5, kernel_size=3)).double().eval()
    x = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    expected = triplet_ref(module, x, False)
    assert_rel_close(module(x), expected)
    with torch.no_grad():
        module.hc.conv.weight.copy_(
            module.hc.conv.weight.transpose(2, 3).clone())
    assert (module(x) - expected).abs().max() > 1e-3


def test_kernel_size_argument():
    module = TripletAttention(64, kernel_size=3)
    for branch in (module.cw, module.hc, module.hw):
        assert branch.conv.weight.shape == (1, 2, 3, 3)
        assert branch.conv.bias is None
        assert branch.bn.eps == 1e-5 and branch.bn.momentum == 0.01


def check_official_init(module):
    assert torch.equal(module.hw.bn.weight, torch.zeros(1))
    for branch in (module.cw, module.hc):
        assert torch.equal(branch.bn.weight, torch.ones(1))
    for branch in (module.cw, module.hc, module.hw):
        assert torch.equal(branch.bn.bias, torch.zeros(1))


def test_official_init():
    torch.manual_seed(0)
    module = TripletAttention(16)
    check_official_init(module)
    x = torch.randn(2, 16, 5, 7)
    assert torch.equal(module.hw(x), torch.full((2, 1, 5, 7), 0.5))
    assert TripletAttention(16, no_spatial=True).hw is None


def test_official_init_survives_mmdet_resnet_init():
    backbone = ResNet(depth=50, init_cfg=None, plugins=[
        dict(cfg=dict(type='TripletAttention'), position='after_conv3')])
    modules = [m for m in backbone.modules()
               if isinstance(m, TripletAttention)]
    assert len(modules) == 16
    randomize_(backbone)  # so that every init below has to act
    backbone.init_weights()
    for module in modules:
        check_official_init(module)
    # mmdet's generic init did run: Constant(1) on the block BNs.
    assert torch.equal(backbone.layer1[0].bn1.weight, torch.ones(64))


@pytest.mark.parametrize('kwargs, arg', [
    (dict(kernel_size=4), 'kernel_size'),
    (dict(kernel_size=-1), 'kernel_size'),
    (dict(gate_layer='nope'), 'gate_layer'),
])
def test_invalid_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        TripletAttention(64, **kwargs)


def test_params_do_not_depend_on_channels():
    for channels in (8, 2048):
        assert sum(p.numel()
                   for p in TripletAttention(channels).parameters()) == 300
    assert sum(p.numel() for p in TripletAttention(
        8, no_spatial=True).parameters()) == 200


def test_resnet50_params():
    base = sum(p.numel() for p in ResNet(depth=50).parameters())
    with_ta = ResNet(depth=50, plugins=[
        dict(cfg=dict(type='TripletAttention'), position='after_conv3')])
    # 16 blocks x 3 branches x (2*49 conv + 2 BN).
    assert sum(p.numel() for p in with_ta.parameters()) - base == 4_800
