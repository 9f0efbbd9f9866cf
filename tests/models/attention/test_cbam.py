"""CBAM: paper maths, official Z-pool order and init, parameter count."""
import pytest
import torch
from attention_reference import zpool_gate_ref
from helpers import (assert_rel_close, assert_training_pass_matches,
                     randomize_)
from mmdet.models import ResNet

from mmattn.models.attention import CBAM
from mmattn.models.attention.zpool_gate import scaled_zpool, zpool


def cbam_ref(module, x, training):
    """Eqs. 1-3: M_c = sigmoid(MLP(avg) + MLP(max)); x' = M_c x;
    M_s = sigmoid(BN(conv7x7([max_c x'; mean_c x']))); out = M_s x'."""
    w1, b1 = module.fc1.weight, module.fc1.bias
    w2, b2 = module.fc2.weight, module.fc2.bias

    def mlp(v):  # (B, C) -> (B, C)
        hidden = torch.relu(torch.einsum('rc,bc->br', w1, v) + b1)
        return torch.einsum('cr,br->bc', w2, hidden) + b2

    avg = x.mean(dim=(2, 3))
    mx = x.amax(dim=(2, 3))
    x1 = x * torch.sigmoid(mlp(avg) + mlp(mx))[:, :, None, None]
    if module.spatial_gate is None:
        return x1
    return x1 * zpool_gate_ref(x1, module.spatial_gate, training)


@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('size', [(1, 1), (3, 5), (13, 21)],
                         ids=lambda s: f'{s[0]}x{s[1]}')
@pytest.mark.parametrize('no_spatial', [False, True],
                         ids=['full', 'no_spatial'])
def test_matches_reference(training, size, no_spatial):
    module = randomize_(CBAM(32, no_spatial=no_spatial)).double()
    module.train(training)
    x = torch.randn(3, 32, *size, dtype=torch.float64)
    expected = cbam_ref(module, x, training)
    assert_rel_close(module(x), expected)


@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
@pytest.mark.parametrize('size', [(1, 1), (13, 21)],
                         ids=lambda s: f'{s[0]}x{s[1]}')
def test_training_pass_matches_reference(layout, size, channel_blocks):
    """The lean pass (x' never written, one gradient of x; the Z-pool a
    block of rows at a time) against autograd through eqs. 1-3, residual
    added in the last product."""
    module = randomize_(CBAM(32)).double()
    x = channel_blocks(torch.randn(3, 32, *size, dtype=torch.float64))
    if layout == 'channels_last':
        x = x.to(memory_format=torch.channels_last)
    assert_training_pass_matches(
        module, lambda m, t: cbam_ref(m, t, training=True), x)


def test_scaled_zpool_alone_values_and_gradcheck(channel_blocks):
    """Without a handoff the scaled Z-pool returns its own gradient of x:
    zpool(x * s), values and gradients, a block of rows at a time."""
    torch.manual_seed(0)
    x = channel_blocks(torch.randn(2, 5, 4, 3, dtype=torch.float64))
    scale = torch.rand(2, 5, 1, 1, dtype=torch.float64)
    x.requires_grad_(), scale.requires_grad_()
    assert_rel_close(scaled_zpool(x, scale), zpool(x * scale), 1e-15)
    assert torch.autograd.gradcheck(scaled_zpool, (x, scale))


def test_training_pass_of_a_strided_input():
    """A view that is neither contiguous nor channels-last takes the plain
    composition, with the same gradients."""
    module = randomize_(CBAM(32)).double()
    x = torch.randn(2, 32, 6, 10, dtype=torch.float64)[..., ::2]
    assert_training_pass_matches(
        module, lambda m, t: cbam_ref(m, t, training=True), x)


def test_reduction_and_kernel_arguments():
    module = CBAM(64, rd_ratio=1 / 8, spatial_kernel_size=3)
    assert module.fc1.weight.shape == (8, 64)
    assert module.spatial_gate.conv.weight.shape == (1, 2, 3, 3)
    assert module.spatial_gate.conv.bias is None
    assert CBAM(64, rd_channels=5).fc2.weight.shape == (64, 5)
    assert CBAM(100, rd_divisor=8).fc1.out_features == 8
    assert CBAM(64, bias=False).fc1.bias is None
    module = randomize_(CBAM(16, spatial_kernel_size=3)).double()
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    assert_rel_close(module(x), cbam_ref(module, x, True))


def test_zpool_is_max_then_mean():
    x = torch.randn(2, 5, 3, 4)
    pooled = zpool(x)
    assert pooled.shape == (2, 2, 3, 4)
    torch.testing.assert_close(pooled[:, 0], x.amax(dim=1))
    torch.testing.assert_close(pooled[:, 1], x.mean(dim=1))


def test_spatial_bn_official_values():
    bn = CBAM(64).spatial_gate.bn
    assert bn.eps == 1e-5 and bn.momentum == 0.01 and bn.affine


def check_official_init(module):
    gate = module.spatial_gate
    assert torch.equal(gate.bn.weight, torch.zeros(1))
    assert torch.equal(gate.bn.bias, torch.zeros(1))
    assert not module.fc1.bias.any() and not module.fc2.bias.any()


def test_official_init_spatial_gate_is_one_half():
    torch.manual_seed(0)
    module = CBAM(32)
    check_official_init(module)
    x = torch.randn(2, 32, 5, 7) * 10
    for training in (True, False):
        module.train(training)
        assert torch.equal(module.spatial_gate(x),
                           torch.full((2, 1, 5, 7), 0.5))
    # The whole block starts as 0.5 * M_c * x.
    module.eval()
    channel_only = CBAM(32, no_spatial=True).eval()
    channel_only.load_state_dict(module.state_dict(), strict=False)
    torch.testing.assert_close(module(x), 0.5 * channel_only(x))


def test_official_init_survives_mmdet_resnet_init():
    backbone = ResNet(depth=50, init_cfg=None, plugins=[
        dict(cfg=dict(type='CBAM'), position='after_conv3')])
    randomize_(backbone)  # so that every init below has to act
    backbone.init_weights()
    cbams = [m for m in backbone.modules() if isinstance(m, CBAM)]
    assert len(cbams) == 16
    for module in cbams:
        check_official_init(module)
    # mmdet's generic init did run: Constant(1) on the block BNs.
    assert torch.equal(backbone.layer1[0].bn1.weight, torch.ones(64))


@pytest.mark.parametrize('kwargs, arg', [
    (dict(spatial_kernel_size=6), 'spatial_kernel_size'),
    (dict(rd_ratio=1 / 128), 'rd_ratio'),
    (dict(rd_channels=0), 'rd_channels'),
    (dict(act_layer='nope'), 'act_layer'),
    (dict(gate_layer='nope'), 'gate_layer'),
])
def test_invalid_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        CBAM(64, **kwargs)


def test_resnet50_params():
    base = sum(p.numel() for p in ResNet(depth=50).parameters())
    with_cbam = ResNet(depth=50, plugins=[
        dict(cfg=dict(type='CBAM'), position='after_conv3')])
    # MLP 2*C*C/16 + C/16 + C and spatial 2*49 + 2, per block; PytorchInsight
    # reports CBAM-ResNet-50 at 28.09M.
    assert sum(p.numel() for p in with_cbam.parameters()) - base == 2_532_592
