"""The plugin contract, checked for every registered attention module.

Each module must build from its type name through mmcv's
``build_plugin_layer``, keep the input's shape on odd and tiny maps, train
on one image, accept channels_last input, stay finite under fp16/bf16
autocast, and sit at every mmdet Bottleneck position of ResNet-50.
Module-specific maths lives in ``test_<module>.py``.
"""
import pytest
import torch
from mmcv.cnn import build_plugin_layer
from mmdet.models import ResNet

from mmattn.models.attention import AttentionModule
from mmattn.registry import MODELS

#: Every attention type name mmattn promises (issue 3); users rely on them.
TYPE_NAMES = ('SE', 'ECA', 'CBAM', 'BAM', 'NAM', 'SGE', 'ContextBlock',
              'GlobalContext', 'NonLocal', 'DualAttention',
              'CrissCrossAttention', 'CoordAttention', 'TripletAttention',
              'SimAM', 'GatherExcite', 'MultiSpectralAttention',
              'ResidualAttention')

#: Arguments a module needs beyond ``in_channels`` (mmcv's ContextBlock
#: has no default ratio).
EXTRA_ARGS = {'ContextBlock': dict(ratio=1 / 16)}

#: Official designs whose BatchNorm over pooled (B, C) vectors cannot train
#: on one image: they must refuse it with a ValueError naming the batch.
BATCH1_TRAIN_REFUSED = {'BAM'}

SIZES = [(1, 1), (3, 5), (7, 7), (13, 21)]


def plugin_cfg(name):
    return dict(type=name, **EXTRA_ARGS.get(name, {}))


def build(name, channels=64):
    _, layer = build_plugin_layer(plugin_cfg(name), in_channels=channels)
    return layer


def test_every_type_name_is_registered():
    missing = [n for n in TYPE_NAMES if MODELS.get(n) is None]
    assert not missing, f'not registered: {missing}'


def test_no_unlisted_attention_module():
    ours = {name for name, cls in MODELS.module_dict.items()
            if isinstance(cls, type) and issubclass(cls, AttentionModule)}
    assert ours <= set(TYPE_NAMES), ours - set(TYPE_NAMES)


@pytest.mark.parametrize('name', TYPE_NAMES)
def test_build_plugin_layer_names_by_abbr(name):
    layer_name, layer = build_plugin_layer(plugin_cfg(name), in_channels=64,
                                           postfix=1)
    assert layer_name == f'{layer._abbr_}1'
    if isinstance(layer, AttentionModule):
        assert layer.default_position in (
            'after_conv1', 'after_conv2', 'after_conv3', 'after_block',
            'after_stage')


@pytest.mark.parametrize('name', TYPE_NAMES)
@pytest.mark.parametrize('size', SIZES, ids=lambda s: f'{s[0]}x{s[1]}')
def test_shape_kept_train_and_eval(name, size):
    layer = build(name)
    x = torch.randn(2, 64, *size, requires_grad=True)
    out = layer.train()(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    with torch.no_grad():
        out = layer.eval()(x[:1])
    assert out.shape == (1, 64, *size) and torch.isfinite(out).all()


@pytest.mark.parametrize('name', TYPE_NAMES)
def test_batch_one_in_train_mode(name):
    layer = build(name).train()
    x = torch.randn(1, 64, 7, 9)
    if name in BATCH1_TRAIN_REFUSED:
        with pytest.raises(ValueError, match='batch'):
            layer(x)
    else:
        out = layer(x)
        assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize('name', TYPE_NAMES)
def test_channels_last_matches_contiguous(name):
    layer = build(name).eval()
    x = torch.randn(2, 64, 11, 13)
    with torch.no_grad():
        expected = layer(x)
        out = layer(x.to(memory_format=torch.channels_last))
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', TYPE_NAMES)
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_stays_finite(name, dtype):
    torch.manual_seed(0)
    layer = build(name).train()
    # A large activation scale: half-precision sums over the map overflow.
    x = torch.randn(2, 64, 48, 40) * 300
    ref = layer(x)
    assert torch.isfinite(ref).all()
    with torch.autocast('cpu', dtype=dtype):
        out = layer(x)
    assert torch.isfinite(out).all(), 'inf/NaN under autocast'
    rel = (out.float() - ref).abs().mean() / ref.abs().mean()
    assert rel < 0.05, f'mean relative deviation {rel:.3f} from fp32'


@pytest.mark.parametrize('name', TYPE_NAMES)
@pytest.mark.parametrize('position',
                         ['after_conv1', 'after_conv2', 'after_conv3'])
def test_in_mmdet_resnet50(name, position):
    layer = build(name)
    plugin = dict(cfg=plugin_cfg(name), position=position)
    if getattr(layer, 'default_position', None) == 'after_stage':
        # A between-stage module (BAM, residual attention) in all 16 blocks
        # is not a design anyone runs (~200M parameters for residual
        # attention); in-block placement is checked on the first stage.
        plugin['stages'] = (True, False, False, False)
    backbone = ResNet(depth=50, plugins=[plugin])
    backbone.init_weights()
    backbone.train()
    outs = backbone(torch.randn(2, 3, 64, 96))
    assert [o.shape[1] for o in outs] == [256, 512, 1024, 2048]
    sum(o.mean() for o in outs).backward()
    plugin_params = [p for n, p in backbone.named_parameters()
                     if f'.{layer._abbr_}' in n]
    assert all(p.grad is not None for p in plugin_params)
