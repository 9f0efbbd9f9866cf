"""GC: mmcv's ContextBlock with the init_weights hook that keeps GC the
identity after ResNet.init_weights(), the paper's equations in float64, the
parameter count of the paper's r16 c3-c5 setting; mmattn's GlobalContext:
mmcv's module and outputs, gradients equal to autograd's through mmcv's
ops, argument errors."""
import pytest
import torch
from helpers import assert_rel_close, max_rel_error, randomize_
from mmcv.cnn.bricks.context_block import ContextBlock as MMCVContextBlock
from mmdet.models import ResNet
from self_attention_checks import plugin_io_in_resnet50

from mmattn.models.attention import ContextBlock, GlobalContext
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


FUSIONS = pytest.mark.parametrize(
    'fusion_types', [('channel_add', ), ('channel_mul', ),
                     ('channel_add', 'channel_mul')],
    ids=['add', 'mul', 'add_mul'])


def global_context_and_mmcv(fusion_types, channels=16, pooling_type='att',
                            dtype=torch.float64):
    ours = GlobalContext(channels, ratio=1 / 4, pooling_type=pooling_type,
                         fusion_types=fusion_types)
    ours = randomize_(ours).to(dtype)
    ref = MMCVContextBlock(channels, 1 / 4, pooling_type, fusion_types)
    ref.load_state_dict(ours.state_dict())
    return ours, ref.to(dtype)


def test_global_context_is_mmcvs_module_under_its_own_name():
    block = MODELS.build(dict(type='GlobalContext', in_channels=64))
    assert isinstance(block, MMCVContextBlock)
    assert block._abbr_ == 'context_block' and block.planes == 4  # r16
    assert block.default_position == 'after_conv3'
    ref = MMCVContextBlock(64, 1 / 16)
    assert block.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(2, 64, 5, 6)
    torch.testing.assert_close(block.train()(x), x)  # zero-initialised


@FUSIONS
@pytest.mark.parametrize('pooling_type', ['att', 'avg'])
def test_global_context_matches_paper_equations_float64(
        pooling_type, fusion_types):
    block, _ = global_context_and_mmcv(fusion_types,
                                       pooling_type=pooling_type)
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        expected = context_block_ref(block, x)
        assert_rel_close(block(x), expected, 1e-12)  # inference
    assert_rel_close(block(x).detach(), expected, 1e-12)  # training pass


@FUSIONS
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
def test_global_context_gradients_equal_autograd_through_mmcv(
        fusion_types, layout):
    ours, ref = global_context_and_mmcv(fusion_types)
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    if layout == 'channels_last':
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    grad = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    outs, grads = [], []
    for block in (ours, ref):
        out = block(x)
        outs.append(out)
        grads.append(torch.autograd.grad(out, [x, *block.parameters()],
                                         grad))
    assert_rel_close(outs[0].detach(), outs[1].detach(), 1e-12)
    names = ['x'] + [n for n, _ in ours.named_parameters()]
    for name, mine, theirs in zip(names, *grads):
        # (absolute tolerance: conv_mask.bias's gradient is 0 up to
        # rounding, the softmax being shift-invariant)
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-13,
                                   msg=name)


@FUSIONS
def test_global_context_gradcheck(fusion_types):
    block, _ = global_context_and_mmcv(fusion_types, channels=6)
    names = [n for n, _ in block.named_parameters()]
    params = [p.detach().requires_grad_() for p in block.parameters()]
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)

    def run(x, *params):
        return torch.func.functional_call(block, dict(zip(names, params)),
                                          (x, ))

    assert torch.autograd.gradcheck(run, (x, *params))


def test_global_context_input_used_twice_and_parameters_only():
    # x also feeding another op: autograd adds that gradient to ours
    ours, ref = global_context_and_mmcv(('channel_add', ))
    x = torch.randn(2, 16, 4, 5, dtype=torch.float64, requires_grad=True)
    grads = [torch.autograd.grad((block(x) * x.exp()).sum(), x)[0]
             for block in (ours, ref)]
    assert max_rel_error(*grads) < 1e-12
    # an input without grad (a frozen stem): parameter gradients only
    x = x.detach()
    for block in (ours, ref):
        block.zero_grad()
        block(x).square().sum().backward()
    for (name, mine), theirs in zip(ours.named_parameters(),
                                    ref.parameters()):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-10,
                                   atol=1e-13, msg=name)


def test_global_context_bf16_autocast_follows_mmcv():
    ours, ref = global_context_and_mmcv(('channel_add', 'channel_mul'),
                                        channels=32, dtype=torch.float32)
    x = torch.randn(2, 32, 9, 11, requires_grad=True)
    grad = torch.randn(2, 32, 9, 11)
    results = []
    for block in (ours, ref):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = block(x)
        results.append((out, *torch.autograd.grad(
            out, [x, block.conv_mask.weight], grad)))
    for mine, theirs in zip(*results):
        assert mine.dtype == theirs.dtype
        assert max_rel_error(mine, theirs) < 0.05


def test_global_context_inference_runs_mmcvs_forward(monkeypatch):
    calls = []
    monkeypatch.setattr(MMCVContextBlock, 'forward',
                        lambda self, x: calls.append(x) or x)
    block = GlobalContext(16)
    x = torch.randn(1, 16, 3, 3)
    with torch.no_grad():
        block(x)
    block(x)  # parameters need grad: the lean pass
    assert len(calls) == 1


@pytest.mark.parametrize('kwargs, field', [
    (dict(in_channels=0), 'in_channels'),
    (dict(in_channels=16, ratio=0), 'ratio'),
    (dict(in_channels=16, ratio=1 / 32), 'ratio'),
    (dict(in_channels=16, pooling_type='max'), 'pooling_type'),
    (dict(in_channels=16, fusion_types=()), 'fusion_types'),
    (dict(in_channels=16, fusion_types='channel_add'), 'fusion_types'),
    (dict(in_channels=16, fusion_types=('channel_add', 'channel_add')),
     'fusion_types'),
    (dict(in_channels=16, fusion_types=('channel_sub', )), 'fusion_types'),
])
def test_global_context_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GlobalContext(**kwargs)


@FUSIONS
def test_global_context_norm_input_and_residual(fusion_types):
    """A residual block's lean path: x = BN(z) handed with z and the BN's
    affine (kept instead of x) and the shortcut (added in the fusion's
    pass): outputs and gradients of mmcv's block plus the shortcut."""
    from mmattn.models.backbones.blocks import batch_norm_with_affine
    ours, ref = global_context_and_mmcv(fusion_types)
    norms = [torch.nn.BatchNorm2d(16).double() for _ in range(2)]
    for norm in norms:
        torch.nn.init.constant_(norm.weight, 1.5)
        torch.nn.init.constant_(norm.bias, -0.3)
    z = torch.randn(2, 16, 5, 7, dtype=torch.float64, requires_grad=True)
    shortcut = torch.randn_like(z, requires_grad=True)
    grad = torch.randn_like(z)
    x, norm_input = batch_norm_with_affine(norms[0], z)
    outs = [ours(x, norm_input=norm_input, residual=shortcut),
            ref(norms[1](z)) + shortcut]
    grads = [torch.autograd.grad(out, [z, shortcut, *block.parameters(),
                                       norm.weight], grad)
             for out, block, norm in zip(outs, (ours, ref), norms)]
    assert_rel_close(outs[0].detach(), outs[1].detach(), 1e-12)
    for mine, theirs in zip(*grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-13)
    with torch.no_grad():  # inference: mmcv's forward plus the shortcut
        assert_rel_close(ours(x, norm_input=norm_input, residual=shortcut),
                         outs[1].detach(), 1e-12)
