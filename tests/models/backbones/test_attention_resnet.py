"""The attention ResNet family and its presets: placement, options, init,
parameter totals, loading plain ResNet checkpoints."""
import logging

import pytest
import torch
import torchvision
from mmcv.cnn import ContextBlock
from mmdet.models import ResNet
from mmdet.registry import MODELS
from mmengine.logging import MMLogger

from mmattn.models.attention import SE, NonLocal
from mmattn.models.backbones import (PRESETS, AttentionResNet, PSAConv,
                                     SKConv)
from mmattn.models.backbones.attention_resnet import selected_blocks

MMLogger.get_current_instance().setLevel(logging.WARNING)

HEAD_50 = 2048 * 1000 + 1000  # 1000-class linear head on ResNet-50


@pytest.fixture(autouse=True, scope='module')
def single_thread():
    """These tensors are tiny: one thread avoids OpenMP spinning against
    the other processes on a shared CPU (several times faster there)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(cfg):
    return MODELS.build(cfg)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_presets_registered_in_mmdet_scope():
    for name in PRESETS:
        assert MODELS.get(name) is not None, name
    assert len(PRESETS) == 20


@pytest.mark.parametrize('name,total', [
    ('SEResNet', 28.09e6), ('CBAMResNet', 28.09e6), ('BAMResNet', 25.92e6),
    ('SGEResNet', 25.56e6), ('SKResNet', 26.15e6), ('EPSANet', 22.56e6)])
def test_published_totals(name, total):
    """ResNet-50 totals with a 1000-class head, within 0.5%."""
    measured = n_params(build(dict(type=name, depth=50))) + HEAD_50
    assert abs(measured - total) / total < 0.005, measured


def test_eca_adds_exactly_80_parameters():
    eca = build(dict(type='ECAResNet', depth=50))
    assert n_params(eca) - n_params(ResNet(depth=50)) == 80


def test_plain_family_equals_mmdet_resnet():
    for depth in (18, 50):
        ours, theirs = AttentionResNet(depth=depth), ResNet(depth=depth)
        assert {k: v.shape for k, v in ours.state_dict().items()} == \
            {k: v.shape for k, v in theirs.state_dict().items()}
        ours.load_state_dict(theirs.state_dict())
        ours.eval(), theirs.eval()
        x = torch.randn(1, 3, 64, 64)
        for a, b in zip(ours(x), theirs(x)):
            torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------
# placement
# --------------------------------------------------------------------------
def _capture(module, store, key, inputs=False):
    def hook(_, args, out):
        store[key] = (args[0] if inputs else out).detach().clone()
    return module.register_forward_hook(hook)


def test_basic_block_positions():
    """after_conv3 in a BasicBlock = after conv2 + BN (before the add);
    after_conv1 = after conv1 + BN + ReLU."""
    net = AttentionResNet(depth=18, plugins=[
        dict(cfg=dict(type='SE', postfix=1)),  # default position
        dict(cfg=dict(type='SE', postfix=2), position='after_conv1')])
    block = net.layer2[0]
    assert isinstance(block.se1, SE) and isinstance(block.se2, SE)
    assert block.se1.fc1.in_channels == 128 == block.se2.fc1.in_channels
    assert block.after_conv2_plugin_names == ['se1']
    assert block.after_conv1_plugin_names == ['se2']
    store = {}
    hooks = [_capture(block.bn2, store, 'bn2'),
             _capture(block.se1, store, 'se1_in', inputs=True),
             _capture(block.relu, store, 'relu'),
             _capture(block.se2, store, 'se2_in', inputs=True)]
    net.eval()
    net(torch.randn(1, 3, 64, 64))
    torch.testing.assert_close(store['se1_in'], store['bn2'])
    for h in hooks:
        h.remove()
    # the last ReLU call of the block is on the sum; the first on bn1
    block.eval()
    x = torch.randn(1, 64, 16, 16)
    ref = block.relu(block.norm1(block.conv1(x)))
    store = {}
    _capture(block.se2, store, 'se2_in', inputs=True)
    block(x)
    torch.testing.assert_close(store['se2_in'], ref)


def test_bottleneck_positions_and_channels():
    net = AttentionResNet(depth=50, plugins=[
        dict(cfg=dict(type='SE', postfix=c), position=f'after_conv{c}')
        for c in (1, 2, 3)])
    block = net.layer3[0]
    assert [block.get_submodule(f'se{c}').fc1.in_channels
            for c in (1, 2, 3)] == [256, 256, 1024]


def test_resnext_widths():
    net = build(dict(type='SEResNeXt', depth=50))
    block = net.layer1[0]
    assert block.conv2.groups == 32 and block.conv2.in_channels == 128
    assert block.se.fc1.in_channels == 256
    net = AttentionResNet(depth=50, groups=32, base_width=4, plugins=[
        dict(cfg=dict(type='SE'), position='after_conv2')])
    assert net.layer1[0].se.fc1.in_channels == 128


def test_after_block_selection():
    assert selected_blocks({}, 4) == [0, 1, 2, 3]
    assert selected_blocks(dict(interval=2), 6) == [1, 3, 5]
    assert selected_blocks(dict(block_indices=(-2, 0)), 6) == [0, 4]
    with pytest.raises(ValueError, match='block_indices'):
        selected_blocks(dict(block_indices=(6, )), 6)


def _nl_blocks(net):
    return sorted(name.rsplit('.', 1)[0] for name, m in net.named_modules()
                  if isinstance(m, NonLocal))


def test_nl_default_and_official_video_layout():
    net = build(dict(type='NLResNet', depth=50))
    assert _nl_blocks(net) == ['layer3.4']  # right before res4's last block
    net = build(dict(type='NLResNet', depth=50, interval=2,
                     attn_stages=(False, True, True, False)))
    assert _nl_blocks(net) == ['layer2.1', 'layer2.3', 'layer3.1',
                               'layer3.3', 'layer3.5']


def test_after_block_runs_after_the_final_relu():
    net = build(dict(type='NLResNet', depth=50))
    net.eval()
    block = net.layer3[4]
    x = torch.randn(1, 1024, 6, 6)
    inner = block.relu(block.norm3(block.conv3(block.relu(block.norm2(
        block.conv2(block.relu(block.norm1(block.conv1(x)))))))) + x)
    torch.testing.assert_close(block(x), block.nonlocal_block(inner))


def test_after_stage_modules():
    net = build(dict(type='BAMResNet', depth=50))
    net.eval()
    assert net.after_stage_names == [['bam1'], ['bam2'], ['bam3'], []]
    assert [net.get_submodule(f'bam{i}').fc1.in_features
            for i in (1, 2, 3)] == [256, 512, 1024]
    x = torch.randn(2, 3, 64, 64)
    outs = net(x)
    # the stage output (and feature) is the BAM output
    stem = net.maxpool(net.relu(net.norm1(net.conv1(x))))
    c2 = net.bam1(net.layer1(stem))
    torch.testing.assert_close(outs[0], c2)
    torch.testing.assert_close(outs[1], net.bam2(net.layer2(c2)))


def test_residual_attention_depths():
    net = build(dict(type='ResidualAttentionNet', depth=50))
    assert [net.get_submodule(f'res_att{i}').depth for i in (1, 2, 3)] == \
        [3, 2, 1]
    assert not hasattr(net, 'res_att4')


def test_per_stage_arguments():
    net = build(dict(type='ECAResNet', depth=50))
    assert [net.get_submodule(f'layer{i}.0.eca').kernel_size
            for i in (1, 2, 3, 4)] == [3, 5, 5, 7]
    net = build(dict(type='ECAResNet', depth=50,
                     attn_cfg=dict(kernel_size=None)))
    assert [net.get_submodule(f'layer{i}.0.eca').kernel_size
            for i in (1, 2, 3, 4)] == [5, 5, 5, 7]
    net = build(dict(type='FcaNet', depth=18))
    assert [tuple(net.get_submodule(f'layer{i}.0.fca').dct_size)
            for i in (1, 2, 3, 4)] == [(56, 56), (28, 28), (14, 14), (7, 7)]


def test_gc_on_c3_c5():
    net = build(dict(type='GCResNet', depth=50))
    assert not any(isinstance(m, ContextBlock) for m in net.layer1.modules())
    assert all(isinstance(b.context_block, ContextBlock)
               for layer in (net.layer2, net.layer3, net.layer4)
               for b in layer)


def test_sk_presets():
    pi = build(dict(type='SKResNet', depth=50))
    conv = pi.layer2[0].conv2
    assert isinstance(conv, SKConv) and conv.stride == (2, 2)
    assert [b.conv.groups for b in conv.branches] == [1, 32]
    assert pi.layer2[0].norm2_name is None and not hasattr(pi.layer2[0],
                                                           'bn2')
    timm18 = build(dict(type='SKResNet', depth=18))
    conv = timm18.layer2[0].conv1
    assert isinstance(conv, SKConv) and conv.split_input
    assert conv.stride == (2, 2) and timm18.layer2[0].norm1_name is None
    nxt = build(dict(type='SKResNeXt', depth=50))
    conv = nxt.layer1[0].conv2
    assert [b.conv.groups for b in conv.branches] == [32, 32]
    assert [b.conv.dilation for b in conv.branches] == [(1, 1), (2, 2)]
    assert conv.fc_reduce.out_channels == 32
    eps = build(dict(type='EPSANet', depth=50))
    assert isinstance(eps.layer3[0].conv2, PSAConv)
    assert hasattr(eps.layer3[0], 'bn2')  # EPSABlock keeps BN + ReLU


def test_attn_conv_stages():
    net = build(dict(type='SKResNet', depth=50,
                     attn_stages=(False, False, True, True)))
    assert not isinstance(net.layer1[0].conv2, SKConv)
    assert isinstance(net.layer3[0].conv2, SKConv)


# --------------------------------------------------------------------------
# mmdet options keep working
# --------------------------------------------------------------------------
def test_mmdet_options():
    net = build(dict(type='CBAMResNet', depth=50, deep_stem=True,
                     avg_down=True, frozen_stages=1, norm_eval=False,
                     with_cp=True, out_indices=(1, 3), style='caffe'))
    assert hasattr(net, 'stem') and isinstance(
        net.layer2[0].downsample[0], torch.nn.AvgPool2d)
    assert not any(p.requires_grad for p in net.layer1.parameters())
    assert net.layer1[0].cbam.fc1.weight.requires_grad is False
    assert net.layer2[0].conv1.stride == (2, 2)  # caffe style
    net.train()
    outs = net(torch.randn(2, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [512, 2048]
    sum(o.mean() for o in outs).backward()
    assert net.layer4[0].cbam.fc1.weight.grad is not None
    assert net.layer1[0].bn1.training is False  # frozen stage in eval


def test_dcn_option_passes_through():
    net = build(dict(type='SEResNet', depth=50,
                     dcn=dict(type='DCN', deform_groups=1,
                              fallback_on_stride=False),
                     stage_with_dcn=(False, True, True, True)))
    assert type(net.layer2[0].conv2).__name__ == 'DeformConv2dPack'
    assert isinstance(net.layer2[0].se, SE)


def test_depths_and_attn_cfg_option():
    for depth in (18, 34, 101, 152):
        net = build(dict(type='SEResNet', depth=depth,
                         attn_cfg=dict(rd_ratio=1 / 8)))
        assert net.layer4[0].se.fc1.out_channels == \
            net.layer4[0].se.fc1.in_channels // 8


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------
@pytest.mark.parametrize('cfg,match', [
    (dict(plugins=[dict(cfg=dict(type='SE'), position='after_conv4')]),
     'position'),
    (dict(plugins=[dict(cfg=dict(type='SE'), stages=(True, False))]),
     'stages'),
    (dict(plugins=[dict(cfg=dict(type='SE'), where='x')]), 'plugin key'),
    (dict(plugins=[dict(cfg=dict(type='SE'), interval=2)]), 'after_block'),
    (dict(plugins=[dict(cfg=dict(type='NonLocal'), interval=0)]),
     'interval'),
    (dict(plugins=[dict(cfg=dict(type='ContextBlock', ratio=0.25))]),
     'position'),
    (dict(plugins=[dict(cfg=dict(type='NoSuchAttention'))]), 'registered'),
    (dict(plugins=[dict(cfg=dict(type='SE')), dict(cfg=dict(type='SE'))]),
     'postfix'),
    (dict(stage_with_attn_conv=(True, )), 'stage_with_attn_conv'),
    (dict(depth=34, groups=32), 'groups'),
    (dict(depth=26), 'depth'),
    (dict(base_widht=4), 'unknown option'),
    (dict(depth=18, dcn=dict(type='DCN'),
          stage_with_dcn=(True, True, True, True)), 'dcn'),
    (dict(attn_conv=dict(type='SKConv'), dcn=dict(type='DCN'),
          stage_with_dcn=(False, True, True, True)), 'attn_conv'),
])
def test_invalid_family_arguments(cfg, match):
    cfg = dict(dict(type='AttentionResNet', depth=50), **cfg)
    with pytest.raises(ValueError, match=match):
        build(cfg)


@pytest.mark.parametrize('cfg,match', [
    (dict(type='SKResNet', variant='official'), 'variant'),
    (dict(type='ECAResNet', attn_cfg=dict(kernel_size=(3, 5))),
     'kernel_size'),
    (dict(type='SEResNet', attn_cfg='r16'), 'attn_cfg'),
    (dict(type='SEResNet', attn_stages=(True, True)), 'stages'),
    (dict(type='GCResNet', ratio=0.25), "unknown option.*'attn_cfg'"),
    (dict(type='SKResNet', varaint='timm'), "unknown option.*'variant'"),
])
def test_invalid_preset_arguments(cfg, match):
    with pytest.raises(ValueError, match=match):
        build(dict(cfg, depth=50))


# --------------------------------------------------------------------------
# init and checkpoints
# --------------------------------------------------------------------------
def _is_identity(module, channels):
    x = torch.randn(2, channels, 5, 6)
    with torch.no_grad():
        return torch.allclose(module.eval()(x), x)


def test_gc_and_nonlocal_identity_after_init_weights():
    gc = build(dict(type='GCResNet', depth=50))
    gc.init_weights()
    blocks = [b.context_block for layer in (gc.layer2, gc.layer3, gc.layer4)
              for b in layer]
    # the backbone's Kaiming init hit the zero-init last conv first
    assert all(_is_identity(m, m.in_channels) for m in blocks)
    nl = build(dict(type='NLResNet', depth=50))
    nl.init_weights()
    assert _is_identity(nl.layer3[4].nonlocal_block, 1024)


def test_module_init_survives_backbone_init():
    net = build(dict(type='SGEResNet', depth=50))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.3)
    net.init_weights()
    assert torch.all(net.layer1[0].sge.weight == 0)
    assert torch.all(net.layer1[0].sge.bias == 1)
    assert torch.all(net.layer1[0].bn3.weight == 0)  # zero_init_residual
    net = build(dict(type='SGEResNet', depth=50, zero_init_residual=False))
    net.init_weights()
    assert torch.all(net.layer1[0].bn3.weight == 1)
    basic = build(dict(type='SEResNet', depth=18))
    basic.init_weights()
    assert torch.all(basic.layer1[0].bn2.weight == 0)


@pytest.fixture(scope='module')
def torchvision_r50():
    return torchvision.models.resnet50(weights=None).state_dict()


RESNEXT_PRESETS = ('SEResNeXt', 'SKResNeXt')
#: Presets whose attention has no parameters (nothing can be missing).
PARAMETER_FREE = ('SimAMResNet', 'GEResNet')


@pytest.mark.parametrize('name', PRESETS)
def test_torchvision_checkpoint_leaves_only_attention_missing(
        name, torchvision_r50):
    if name in RESNEXT_PRESETS:
        source = torchvision.models.resnext50_32x4d(weights=None).state_dict()
        plain = MODELS.build(dict(type='ResNeXt', depth=50, groups=32,
                                  base_width=4))
    else:
        source, plain = torchvision_r50, ResNet(depth=50)
    net = build(dict(type=name, depth=50))
    plain = set(plain.state_dict())
    ours = set(net.state_dict())
    result = net.load_state_dict(source, strict=False)
    # exactly the attention keys are missing (torch does not report the
    # BN step counters num_batches_tracked) ...
    attention = {k for k in ours - plain
                 if not k.endswith('num_batches_tracked')}
    assert set(result.missing_keys) == attention
    assert bool(attention) == (name not in PARAMETER_FREE)
    # ... and only the classifier and the replaced convs are left over
    assert set(result.unexpected_keys) == \
        {'fc.weight', 'fc.bias'} | (plain - ours)
    if name not in ('SKResNet', 'SKResNeXt', 'EPSANet'):
        assert plain <= ours
    # what was loaded is the checkpoint's
    torch.testing.assert_close(net.state_dict()['layer3.1.conv1.weight'],
                               source['layer3.1.conv1.weight'])


def test_pretrained_init_cfg_loads_last(tmp_path, torchvision_r50):
    path = tmp_path / 'r50.pth'
    torch.save(torchvision_r50, path)
    net = build(dict(type='GCResNet', depth=50, init_cfg=dict(
        type='Pretrained', checkpoint=str(path))))
    net.init_weights()
    torch.testing.assert_close(net.layer2[1].conv2.weight,
                               torchvision_r50['layer2.1.conv2.weight'])
    assert _is_identity(net.layer3[2].context_block, 1024)


@pytest.mark.parametrize('layout', ['mmdet', 'mmpretrain'])
def test_mmdet_and_mmpretrain_layouts_load(tmp_path, layout):
    """mmdet's ResNet state dict as is; an mmpretrain ImageClassifier
    checkpoint (the same ResNet names under ``backbone.``, a ``head.fc``),
    read with ``prefix='backbone.'``."""
    source = ResNet(depth=50).state_dict()
    with torch.no_grad():
        for t in source.values():
            if t.is_floating_point():
                t.normal_()
    if layout == 'mmdet':
        ckpt, init = dict(state_dict=source), dict()
    else:
        ckpt = dict(meta=dict(dataset_meta=dict(classes=['a'])), state_dict={
            **{f'backbone.{k}': v for k, v in source.items()},
            'head.fc.weight': torch.zeros(1000, 2048),
            'head.fc.bias': torch.zeros(1000)})
        init = dict(prefix='backbone.')
    path = tmp_path / 'ckpt.pth'
    torch.save(ckpt, path)
    net = build(dict(type='CBAMResNet', depth=50, init_cfg=dict(
        type='Pretrained', checkpoint=str(path), **init)))
    net.init_weights()
    loaded = net.state_dict()
    for key, value in source.items():
        torch.testing.assert_close(loaded[key], value)
    # CBAM keeps its own init: spatial BN weight 0
    assert torch.all(net.layer2[0].cbam.spatial_gate.bn.weight == 0)


# --------------------------------------------------------------------------
# the lean channel-gate path (issue 7: training memory)
# --------------------------------------------------------------------------
def _saved_activation_bytes(model, images):
    """Bytes of the distinct non-parameter tensors autograd keeps for the
    backward of one forward pass: the training memory beyond parameters,
    deterministic."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(images)
    return sum(storages.values())


@pytest.mark.parametrize('depth,gate', [(50, 'SE'), (50, 'ECA'), (18, 'SE'),
                                        (50, 'GlobalContext'),
                                        (50, 'GatherExcite')])
def test_channel_gate_keeps_no_extra_activation(depth, gate):
    plugins = [dict(cfg=dict(type=gate), position='after_conv3')]
    images = torch.randn(2, 3, 128, 128)
    plain = _saved_activation_bytes(ResNet(depth=depth), images)
    lean = _saved_activation_bytes(
        AttentionResNet(depth=depth, plugins=plugins), images)
    assert lean <= 1.02 * plain, (lean, plain)  # + (B, C) vectors
    if depth >= 50:  # mmdet's block keeps the BN output for the gate
        mmdet = _saved_activation_bytes(ResNet(depth=depth, plugins=plugins),
                                        images)
        assert mmdet > 1.2 * plain, (mmdet, plain)


@pytest.mark.parametrize('norm_eval', [False, True])
@pytest.mark.parametrize('ours_cfg,theirs_cfg', [
    (dict(type='SE'), dict(type='SE')),
    (dict(type='GlobalContext'), dict(type='ContextBlock', ratio=1 / 16)),
    (dict(type='CBAM'), dict(type='CBAM')),
    (dict(type='TripletAttention'), dict(type='TripletAttention')),
    (dict(type='CoordAttention'), dict(type='CoordAttention')),
    (dict(type='SimAM'), dict(type='SimAM')),
    (dict(type='SGE'), dict(type='SGE')),
    (dict(type='NAM'), dict(type='NAM')),
    (dict(type='BAM'), dict(type='BAM')),
    (dict(type='GatherExcite'), dict(type='GatherExcite')),
    (dict(type='GatherExcite', extent=2), dict(type='GatherExcite',
                                               extent=2))],
                         ids=['SE', 'GC', 'CBAM', 'Triplet', 'Coordinate',
                              'SimAM', 'SGE', 'NAM', 'BAM', 'GE', 'GE-e2'])
def test_lean_path_matches_mmdet_block(norm_eval, ours_cfg, theirs_cfg):
    """Same outputs and gradients as the plugin in mmdet's own ResNet (for
    GC, mmcv's ContextBlock), which calls it without the norm's input or
    the shortcut, with BN in train mode (batch statistics) and frozen
    (norm_eval). In fp64: the lean path's fused sums round differently,
    and in fp32 batch statistics over the 8 values per channel of stage 4
    amplify that to ~1e-5 of the output."""
    torch.manual_seed(0)
    theirs = ResNet(depth=50, norm_eval=norm_eval, plugins=[
        dict(cfg=theirs_cfg, position='after_conv3')])
    ours = AttentionResNet(depth=50, norm_eval=norm_eval, plugins=[
        dict(cfg=ours_cfg, position='after_conv3')])
    for bn in (m for m in theirs.modules()
               if isinstance(m, torch.nn.BatchNorm2d)):
        torch.nn.init.uniform_(bn.weight, 0.5, 1.5)  # not zero-init
        torch.nn.init.normal_(bn.bias, std=0.1)
        bn.running_var.uniform_(0.5, 2)
    for name, param in theirs.named_parameters():
        if 'context_block' in name:  # GC's zero-initialised last convs
            torch.nn.init.normal_(param, std=0.1)
    ours.load_state_dict(theirs.state_dict())
    ours.double().train(), theirs.double().train()
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    grads = []
    for model in (ours, theirs):
        outs = model(images)
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum()
            for o in outs).backward()
        grads.append({k: p.grad for k, p in model.named_parameters()})
    for a, b in zip(ours(images), theirs(images)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for name, grad in grads[1].items():
        if grad.abs().max() < 1e-9:
            # 0 in exact arithmetic: GC's softmax is shift-invariant
            # (conv_mask.bias), Coordinate's conv1 bias meets a train BN
            assert grads[0][name].abs().max() < 1e-9, name
            continue
        error = (grads[0][name] - grad).abs().max() / grad.abs().max()
        assert error < 1e-10, (name, error)


@pytest.mark.parametrize('attn', ['CBAM', 'TripletAttention', 'SE'])
def test_lean_path_under_activation_checkpointing(attn):
    """with_cp re-runs each block's forward in the backward, with fresh
    gradient handoffs: the same gradients as without it, bit for bit."""
    torch.manual_seed(0)
    plugins = [dict(cfg=dict(type=attn), position='after_conv3')]
    nets = [AttentionResNet(depth=50, with_cp=with_cp, plugins=plugins)
            for with_cp in (False, True)]
    nets[1].load_state_dict(nets[0].state_dict())
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    grads = []
    for net in nets:
        assert net.double().train() is net  # nn.Module's chaining
        inputs = images.clone().requires_grad_()
        outs = net(inputs)
        sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o))
            .sum() for o in outs).backward()
        grads.append([inputs.grad, *(p.grad for p in net.parameters())])
    assert all(torch.equal(a, b) for a, b in zip(*grads))
