"""timm -> mmattn: a random-weight timm model, converted, gives the same
stage features as the mmattn backbone (eval mode)."""
import logging

import pytest
import torch
from mmengine.logging import MMLogger

from mmattn.converters import (TIMM_BACKBONES, ConversionError,
                               convert_timm)
from mmattn.converters.common import build_backbone

timm = pytest.importorskip('timm')
MMLogger.get_current_instance().setLevel(logging.WARNING)


@pytest.fixture(autouse=True, scope='module')
def single_thread():
    """These tensors are tiny: one thread avoids OpenMP spinning against
    the other processes on a shared CPU (several times faster there)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturb_norms_(model, seed=0):
    """Random, well-conditioned BN affine parameters and statistics (so
    zero-init last norms and default statistics are exercised while 50-101
    random layers keep features of order 1-1000)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)


def timm_stages(model, x):
    """The outputs of layer1..layer4 of a timm ResNet."""
    x = model.maxpool(model.act1(model.bn1(model.conv1(x))))
    outs = []
    for i in range(1, 5):
        x = getattr(model, f'layer{i}')(x)
        outs.append(x)
    return outs


@pytest.mark.parametrize('name', list(TIMM_BACKBONES))
def test_timm_features_match(name):
    torch.manual_seed(0)
    source = timm.create_model(name, pretrained=False)
    perturb_norms_(source)
    source.eval()
    converted, cfg = convert_timm(source.state_dict(), name)
    assert cfg == TIMM_BACKBONES[name]
    backbone = build_backbone(cfg)
    backbone.load_state_dict(converted, strict=True)
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = timm_stages(source, x)
        outs = backbone(x)
    assert len(outs) == 4
    for out, ref in zip(outs, expected):
        assert out.shape == ref.shape
        assert ref.abs().max() > 1  # a real signal, not vanished
        assert (out - ref).abs().max() < 1e-4, name


def test_timm_conversion_refuses_a_wrong_layout():
    source = timm.create_model('seresnet50', pretrained=False).state_dict()
    del source['layer2.0.se.fc1.bias']
    source['layer9.0.extra'] = torch.zeros(1)
    with pytest.raises(ConversionError, match='missing') as err:
        convert_timm(source, 'seresnet50')
    assert 'layer2.0.se.fc1.bias' in str(err.value)
    assert 'layer9.0.extra' in str(err.value)
    with pytest.raises(ValueError, match='name'):
        convert_timm(source, 'resnet50')
