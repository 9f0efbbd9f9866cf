"""Official-repository layouts -> mmattn: synthetic checkpoints with each
layout's exact keys and shapes convert with no key left over or missing.

The skeletons below re-create the official modules' attribute names and
parameter shapes (from BangguWu/ECANet ``models/eca_resnet.py``,
implus/PytorchInsight ``classification/models/imagenet/resnet_*.py``,
Jongchan/attention-module ``MODELS/{model_resnet,cbam,bam}.py``); a few
official forwards are re-written to check that the weights land where they
act the same.
"""
import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MMLogger

from mmattn.converters import (ConversionError, convert_attention_module,
                               convert_ecanet, convert_pytorchinsight)
from mmattn.converters.common import build_backbone

MMLogger.get_current_instance().setLevel(logging.WARNING)


@pytest.fixture(autouse=True, scope='module')
def single_thread():
    """These tensors are tiny: one thread avoids OpenMP spinning against
    the other processes on a shared CPU (several times faster there)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


LAYERS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3],
          101: [3, 4, 23, 3]}


class Block(nn.Module):
    """torchvision/official block names; ``extra(block, planes, out)`` adds
    the attention attributes."""

    def __init__(self, inplanes, planes, stride, bottleneck, extra):
        super().__init__()
        out = planes * (4 if bottleneck else 1)
        if bottleneck:
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
        else:
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1,
                                   bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride, bias=False),
                nn.BatchNorm2d(out))
        if extra is not None:
            extra(self, planes, out)


class OfficialResNet(nn.Module):

    def __init__(self, depth, block_extra=None, net_extra=None):
        super().__init__()
        bottleneck = depth >= 50
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        inplanes = 64
        for i, n in enumerate(LAYERS[depth]):
            planes = 64 * 2**i
            blocks = []
            for j in range(n):
                blocks.append(Block(inplanes, planes, 2 if i and not j else 1,
                                    bottleneck, block_extra))
                inplanes = planes * (4 if bottleneck else 1)
            setattr(self, f'layer{i + 1}', nn.Sequential(*blocks))
        if net_extra is not None:
            net_extra(self, 4 if bottleneck else 1)
        self.fc = nn.Linear(inplanes, 1000)


# ------------------------------- extras ------------------------------------
def eca_extra(kernel_sizes):
    def extra(block, planes, out):
        k = kernel_sizes[{64: 0, 128: 1, 256: 2, 512: 3}[planes]]
        block.eca = nn.Module()
        block.eca.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2,
                                   bias=False)
    return extra


def se_extra(block, planes, out):
    block.se = nn.Module()
    block.se.fc = nn.Sequential(nn.Linear(out, out // 16), nn.ReLU(),
                                nn.Linear(out // 16, out), nn.Sigmoid())


def sge_extra(block, planes, out):
    block.sge = nn.Module()
    block.sge.weight = nn.Parameter(torch.randn(1, 64, 1, 1))
    block.sge.bias = nn.Parameter(torch.randn(1, 64, 1, 1))


def sk_extra(block, planes, out):
    """PytorchInsight SK-ResNet50* Bottleneck (conv2/bn2 are branch 1)."""
    stride = block.conv2.stride
    block.conv2g = nn.Conv2d(planes, planes, 3, stride, 1, bias=False,
                             groups=32)
    block.bn2g = nn.BatchNorm2d(planes)
    block.conv_fc1 = nn.Conv2d(planes, planes // 16, 1, bias=False)
    block.bn_fc1 = nn.BatchNorm2d(planes // 16)
    block.conv_fc2 = nn.Conv2d(planes // 16, 2 * planes, 1, bias=False)


def pi_sk_forward(block, x):
    """PytorchInsight ``Bottleneck.forward`` of resnet_sk.py."""
    out = F.relu(block.bn1(block.conv1(x)))
    d1 = F.relu(block.bn2(block.conv2(out)))
    d2 = F.relu(block.bn2g(block.conv2g(out)))
    d = F.adaptive_avg_pool2d(d1, 1) + F.adaptive_avg_pool2d(d2, 1)
    d = F.relu(block.bn_fc1(block.conv_fc1(d)))
    d = F.softmax(block.conv_fc2(d).view(-1, 2, d1.shape[1], 1, 1), 1)
    out = block.bn3(block.conv3(d1 * d[:, 0] + d2 * d[:, 1]))
    identity = block.downsample(x) if hasattr(block, 'downsample') else x
    return F.relu(out + identity)


def cbam_extra(block, planes, out):
    block.cbam = nn.Module()
    block.cbam.ChannelGate = nn.Module()
    block.cbam.ChannelGate.mlp = nn.Sequential(
        nn.Flatten(), nn.Linear(out, out // 16), nn.ReLU(),
        nn.Linear(out // 16, out))
    block.cbam.SpatialGate = nn.Module()
    spatial = block.cbam.SpatialGate.spatial = nn.Module()
    spatial.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
    spatial.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)


def bam_extra(net, expansion):
    for i, c in enumerate((64, 128, 256)):
        c *= expansion
        bam = nn.Module()
        bam.channel_att = nn.Module()
        bam.channel_att.gate_c = nn.Sequential()
        gate_c = bam.channel_att.gate_c
        gate_c.add_module('flatten', nn.Flatten())
        gate_c.add_module('gate_c_fc_0', nn.Linear(c, c // 16))
        gate_c.add_module('gate_c_bn_1', nn.BatchNorm1d(c // 16))
        gate_c.add_module('gate_c_relu_1', nn.ReLU())
        gate_c.add_module('gate_c_fc_final', nn.Linear(c // 16, c))
        bam.spatial_att = nn.Module()
        gate_s = bam.spatial_att.gate_s = nn.Sequential()
        gate_s.add_module('gate_s_conv_reduce0', nn.Conv2d(c, c // 16, 1))
        gate_s.add_module('gate_s_bn_reduce0', nn.BatchNorm2d(c // 16))
        gate_s.add_module('gate_s_relu_reduce0', nn.ReLU())
        for j in range(2):
            gate_s.add_module(f'gate_s_conv_di_{j}', nn.Conv2d(
                c // 16, c // 16, 3, padding=4, dilation=4))
            gate_s.add_module(f'gate_s_bn_di_{j}', nn.BatchNorm2d(c // 16))
            gate_s.add_module(f'gate_s_relu_di_{j}', nn.ReLU())
        gate_s.add_module('gate_s_conv_final', nn.Conv2d(c // 16, 1, 1))
        setattr(net, f'bam{i + 1}', bam)


def official_bam_forward(bam, x):
    """Jongchan ``BAM.forward``: x * (1 + sigmoid(channel * spatial))."""
    pooled = F.avg_pool2d(x, x.size(2), stride=x.size(2))
    channel = bam.channel_att.gate_c(pooled)[:, :, None, None]
    return x * (1 + torch.sigmoid(channel * bam.spatial_att.gate_s(x)))


# ---------------------------------------------------------------------------
def randomized_state(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5
                        if name.endswith('running_var') else
                        torch.randn(t.shape, generator=gen) * 0.1)
    return model.state_dict()


def wrapped(state_dict):
    """An official training checkpoint: DataParallel keys under
    ``state_dict``, with the bookkeeping the scripts save."""
    return dict(epoch=90, arch='resnet', best_prec1=77.0,
                state_dict={f'module.{k}': v for k, v in state_dict.items()})


def check_roundtrip(converted, cfg):
    backbone = build_backbone(cfg)
    backbone.load_state_dict(converted, strict=True)
    return backbone


@pytest.mark.parametrize('depth,ks', [(50, (3, 5, 5, 7)), (18, (3, 3, 3, 3)),
                                      (101, (3, 5, 5, 7))])
def test_ecanet(depth, ks):
    src = randomized_state(OfficialResNet(depth, eca_extra(ks)))
    converted, cfg = convert_ecanet(wrapped(src))
    assert cfg == dict(type='ECAResNet', depth=depth,
                       attn_cfg=dict(kernel_size=ks))
    check_roundtrip(converted, cfg)
    torch.testing.assert_close(converted['layer4.1.eca.conv.weight'],
                               src['layer4.1.eca.conv.weight'])


@pytest.mark.parametrize('depth', [50, 18])
def test_pytorchinsight_se(depth):
    src = randomized_state(OfficialResNet(depth, se_extra))
    converted, cfg = convert_pytorchinsight(wrapped(src))
    assert cfg == dict(type='SEResNet', depth=depth)
    check_roundtrip(converted, cfg)
    torch.testing.assert_close(converted['layer2.0.se.fc1.weight'][:, :, 0, 0],
                               src['layer2.0.se.fc.0.weight'])
    torch.testing.assert_close(converted['layer2.0.se.fc2.bias'],
                               src['layer2.0.se.fc.2.bias'])


def test_pytorchinsight_sge():
    src = randomized_state(OfficialResNet(50, sge_extra))
    converted, cfg = convert_pytorchinsight(wrapped(src))
    assert cfg == dict(type='SGEResNet', depth=50,
                       attn_cfg=dict(groups=64))
    check_roundtrip(converted, cfg)
    torch.testing.assert_close(converted['layer3.2.sge.bias'],
                               src['layer3.2.sge.bias'])


def test_pytorchinsight_sk_block_acts_the_same():
    official = OfficialResNet(50, sk_extra)
    src = randomized_state(official)
    converted, cfg = convert_pytorchinsight(wrapped(src))
    assert cfg == dict(type='SKResNet', depth=50, variant='pytorchinsight')
    backbone = check_roundtrip(converted, cfg)
    backbone.eval(), official.eval()
    x = torch.randn(2, 256, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(backbone.layer2[0](x),
                                   pi_sk_forward(official.layer2[0], x))


@pytest.mark.parametrize('convert', [convert_attention_module,
                                     convert_pytorchinsight])
@pytest.mark.parametrize('depth', [50, 18])
def test_cbam(convert, depth):
    src = randomized_state(OfficialResNet(depth, cbam_extra))
    converted, cfg = convert(wrapped(src))
    assert cfg == dict(type='CBAMResNet', depth=depth)
    check_roundtrip(converted, cfg)
    torch.testing.assert_close(
        converted['layer1.0.cbam.fc2.weight'],
        src['layer1.0.cbam.ChannelGate.mlp.3.weight'])
    torch.testing.assert_close(
        converted['layer1.0.cbam.spatial_gate.bn.running_var'],
        src['layer1.0.cbam.SpatialGate.spatial.bn.running_var'])


@pytest.mark.parametrize('convert', [convert_attention_module,
                                     convert_pytorchinsight])
@pytest.mark.parametrize('depth', [50, 34])
def test_bam_acts_the_same(convert, depth):
    official = OfficialResNet(depth, net_extra=bam_extra)
    src = randomized_state(official)
    converted, cfg = convert(wrapped(src))
    assert cfg == dict(type='BAMResNet', depth=depth, attn_cfg=dict(
        combine='product', num_dilated_convs=2))
    backbone = check_roundtrip(converted, cfg)
    backbone.eval(), official.eval()
    channels = 128 * (4 if depth == 50 else 1)
    x = torch.randn(2, channels, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(backbone.bam2(x),
                                   official_bam_forward(official.bam2, x))


def test_old_checkpoint_without_num_batches_tracked():
    src = randomized_state(OfficialResNet(50, cbam_extra))
    src = {k: v for k, v in src.items()
           if not k.endswith('num_batches_tracked')}
    converted, cfg = convert_attention_module(src)
    check_roundtrip(converted, cfg)


def test_leftover_and_missing_keys_are_refused():
    src = randomized_state(OfficialResNet(50, se_extra))
    src['layer1.0.se.extra.weight'] = torch.zeros(3)
    del src['layer4.2.se.fc.2.bias']
    with pytest.raises(ConversionError) as err:
        convert_pytorchinsight(src)
    assert 'layer4.2.se.fc2.bias' in str(err.value)
    assert 'layer1.0.se.extra.weight' in str(err.value)
    with pytest.raises(ValueError, match='neither'):
        convert_attention_module(
            randomized_state(OfficialResNet(50, se_extra)))
