"""ECA: paper maths, adaptive kernel size, official init, parameter counts."""
import pytest
import torch
from helpers import assert_rel_close, randomize_
from mmdet.models import ResNet

from mmattn.models.attention import ECA
from mmattn.models.attention.eca import eca_kernel_size


def eca_ref(x, weight, gate=torch.sigmoid):
    """The paper's w_c = gate(sum_j w_j y_{c + j - (k+1)/2}), zero outside
    [0, C), with y = GAP(x); out = w * x. A plain loop over channels."""
    b, c = x.shape[:2]
    k = weight.numel()
    w = weight.flatten()
    y = x.mean(dim=(2, 3))  # (B, C)
    logits = torch.zeros_like(y)
    for ch in range(c):
        for j in range(k):
            src = ch + j - (k - 1) // 2
            if 0 <= src < c:
                logits[:, ch] += w[j] * y[:, src]
    return x * gate(logits)[:, :, None, None]


def added_params(plugins):
    base = sum(p.numel() for p in ResNet(depth=50).parameters())
    return sum(p.numel()
               for p in ResNet(depth=50, plugins=plugins).parameters()) - base


@pytest.mark.parametrize('channels, k', [(1, 1), (2, 1), (64, 3), (256, 5),
                                         (512, 5), (1024, 5), (2048, 7)])
def test_adaptive_kernel_size_formula(channels, k):
    assert eca_kernel_size(channels) == k
    module = ECA(channels)
    assert module.kernel_size == k
    assert module.conv.weight.shape == (1, 1, k)
    assert module.conv.padding == ((k - 1) // 2, )


def test_gamma_and_beta_change_the_kernel():
    # t = int(|(log2(256) + b) / gamma|): (8 + 1) / 1 = 9 -> 9;
    # (8 + 4) / 2 = 6 -> 7; (8 + 1) / 3 = 3 -> 3.
    assert ECA(256, gamma=1).kernel_size == 9
    assert ECA(256, beta=4).kernel_size == 7
    assert ECA(256, gamma=3).kernel_size == 3


def test_explicit_kernel_overrides_the_formula():
    module = ECA(2048, kernel_size=3)
    assert module.kernel_size == 3 and module.conv.weight.numel() == 3
    assert module.conv.bias is None


@pytest.mark.parametrize('size', [(1, 1), (3, 5), (13, 21)],
                         ids=lambda s: f'{s[0]}x{s[1]}')
@pytest.mark.parametrize('channels, kernel_size', [(12, None), (12, 5),
                                                   (3, 7)])
def test_matches_reference(size, channels, kernel_size):
    module = randomize_(ECA(channels, kernel_size=kernel_size)).double()
    x = torch.randn(2, channels, *size, dtype=torch.float64)
    assert_rel_close(module(x), eca_ref(x, module.conv.weight))


def test_gate_by_name():
    module = randomize_(ECA(16, gate_layer='hard_sigmoid')).double()
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    expected = eca_ref(x, module.conv.weight,
                       gate=torch.nn.functional.hardsigmoid)
    assert_rel_close(module(x), expected)


def test_pytorch_default_init_survives_mmdet_init():
    torch.manual_seed(0)
    backbone = ResNet(depth=50, plugins=[
        dict(cfg=dict(type='ECA'), position='after_conv3')])
    before = {n: p.clone() for n, p in backbone.named_parameters()
              if '.eca' in n}
    assert len(before) == 16
    backbone.init_weights()
    for name, p in backbone.named_parameters():
        if name in before:
            torch.testing.assert_close(p, before[name], rtol=0, atol=0)
            # kaiming_uniform_(a=sqrt(5)): |w| <= 1/sqrt(fan_in = k)
            assert p.abs().max() <= p.numel() ** -0.5


@pytest.mark.parametrize('kwargs, arg', [
    (dict(kernel_size=4), 'kernel_size'),
    (dict(kernel_size=0), 'kernel_size'),
    (dict(gamma=0), 'gamma'),
    (dict(gate_layer='nope'), 'gate_layer'),
])
def test_invalid_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        ECA(64, **kwargs)


def test_invalid_in_channels():
    with pytest.raises(ValueError, match='in_channels'):
        ECA(0)


def test_resnet50_params_adaptive():
    # k = 5, 5, 5, 7 on 256 .. 2048 channels: 3*5 + 4*5 + 6*5 + 3*7.
    assert added_params([dict(cfg=dict(type='ECA'),
                              position='after_conv3')]) == 86


def test_resnet50_params_released_k3557():
    masks = [tuple(i == s for i in range(4)) for s in range(4)]
    plugins = [dict(cfg=dict(type='ECA', kernel_size=k),
                    position='after_conv3', stages=mask)
               for k, mask in zip((3, 5, 5, 7), masks)]
    # The ECA README's "80 params": 3*3 + 4*5 + 6*5 + 3*7.
    assert added_params(plugins) == 80
