"""NonLocal: same module as mmcv's NonLocal2d (state dicts interchangeable,
same outputs in every mode), the paper's equations in float64, mmcv's init
kept through ResNet.init_weights(), no (HW x HW) tensor."""
import pytest
import torch
from helpers import assert_rel_close, randomize_
from mmcv.cnn import NonLocal2d
from mmdet.models import ResNet
from self_attention_checks import LargestTensor, plugin_io_in_resnet50

from mmattn.models.attention import NonLocal
from mmattn.models.attention.non_local import MODES
from mmattn.models.convs import PointwiseConv


def conv1x1_ref(x, branch):
    """A 1x1 ConvModule (sub_sample's Sequential unwrapped, no pooling)."""
    conv = (branch[0] if isinstance(branch, torch.nn.Sequential) else
            branch).conv
    return torch.einsum('oc,bchw->bohw', conv.weight[:, :, 0, 0], x) + \
        conv.bias.view(1, -1, 1, 1)


def non_local_ref(module, x):
    """Eqs. 1-3 without pooling: y_i = sum_j softmax_j(s theta_i . phi_j)
    g_j, z = x + W_z y; Gaussian mode: theta = phi = identity, s = 1."""
    if module.mode == 'gaussian':
        theta, phi, scale = x, x, 1.0
    else:
        theta, phi = conv1x1_ref(x, module.theta), conv1x1_ref(x, module.phi)
        scale = module.inter_channels**-0.5 if module.use_scale else 1.0
    g = conv1x1_ref(x, module.g)
    f = torch.einsum('bcij,bckl->bijkl', theta, phi) * scale
    b, _, h, w = x.shape
    p = torch.softmax(f.reshape(b, h, w, h * w), dim=-1).reshape(f.shape)
    y = torch.einsum('bijkl,bckl->bcij', p, g)
    return x + conv1x1_ref(y, module.conv_out)


def projection_calls(module):
    """Records which of theta, phi, g ran their ConvModule."""
    calls = []
    for name in ('theta', 'phi', 'g'):
        branch = getattr(module, name)
        conv_module = (branch[0] if isinstance(branch, torch.nn.Sequential)
                       else branch)
        conv_module.register_forward_hook(
            lambda *_, name=name: calls.append(name))
    return calls


@pytest.mark.parametrize('sub_sample', [False, True], ids=['full', 'pool'])
@pytest.mark.parametrize('conv', ['PointwiseConv', 'Conv2d'])
def test_projections_fused_in_one_product(sub_sample, conv, monkeypatch):
    """theta, phi and g (bare 1x1 ConvModules) run as one 1x1 conv C -> 3C'
    (no ConvModule runs), with mmcv NonLocal2d's output and gradients (x's
    and every parameter's), run as a conv and as a matrix product."""
    x = torch.randn(2, 16, 6, 7, dtype=torch.float64) * 0.5
    upstream = torch.randn(x.shape, dtype=x.dtype)
    theirs = randomize_(NonLocal2d(16, sub_sample=sub_sample)).double()
    for threshold in (PointwiseConv.MIN_GEMM_POSITIONS, 1):
        monkeypatch.setattr(PointwiseConv, 'MIN_GEMM_POSITIONS', threshold)
        ours = NonLocal(16, sub_sample=sub_sample,
                        conv_cfg=dict(type=conv)).double()
        ours.load_state_dict(theirs.state_dict())
        calls = projection_calls(ours)
        results = []
        for module in (ours, theirs):
            module.zero_grad()
            xg = x.clone().requires_grad_()
            out = module(xg)
            out.backward(upstream)
            results.append([out.detach(), xg.grad,
                            *(p.grad for p in module.parameters())])
        assert calls == []
        # floor 1: phi's bias gets an exactly zero gradient (the softmax
        # ignores a per-query constant), both sides rounding noise
        for actual, expected in zip(*results):
            assert_rel_close(actual, expected, 1e-10, floor=1.0)


def test_other_convs_run_their_conv_modules():
    """A conv_cfg whose conv is not a bare 1x1 conv (mmcv's weight-
    standardised ConvWS) runs each ConvModule: mmcv NonLocal2d's output."""
    kwargs = dict(conv_cfg=dict(type='ConvWS'))
    theirs = randomize_(NonLocal2d(16, **kwargs)).double()
    ours = NonLocal(16, **kwargs).double()
    ours.load_state_dict(theirs.state_dict())
    calls = projection_calls(ours)
    x = torch.randn(2, 16, 6, 7, dtype=torch.float64)
    with torch.no_grad():
        assert_rel_close(ours(x), theirs(x), 1e-10)
    assert calls == ['theta', 'phi', 'g']


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('sub_sample', [False, True], ids=['full', 'pool'])
@pytest.mark.parametrize('use_scale', [True, False], ids=['scale', 'noscale'])
def test_same_as_mmcv_nonlocal2d(mode, sub_sample, use_scale):
    kwargs = dict(sub_sample=sub_sample, mode=mode, use_scale=use_scale)
    theirs = randomize_(NonLocal2d(16, **kwargs))
    ours = NonLocal(16, **kwargs)
    # Same parameters and keys: each loads the other's state dict strictly.
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    ours.load_state_dict(theirs.state_dict())
    chunked = NonLocal(16, chunk_size=7, **kwargs)
    chunked.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 16, 6, 7, dtype=torch.float64) * 0.5
    with torch.no_grad():
        expected = theirs.double()(x)
        assert_rel_close(ours.double()(x), expected)
        assert_rel_close(chunked.double()(x), expected)
        x32, theirs32 = x.float(), theirs.float()
        torch.testing.assert_close(ours.float()(x32), theirs32(x32),
                                   rtol=1e-5, atol=1e-5)


def test_projections_run_as_matrix_products(monkeypatch):
    """The default conv_cfg builds PointwiseConv projections (nn.Conv2d's
    parameters): the same block as with mmcv's Conv2d, also when they run
    as matrix products."""
    monkeypatch.setattr(PointwiseConv, 'MIN_GEMM_POSITIONS', 1)
    ours = randomize_(NonLocal(16)).double()
    plain = NonLocal(16, conv_cfg=dict(type='Conv2d')).double()
    plain.load_state_dict(ours.state_dict())
    convs = [branch.conv for branch in (ours.g, ours.theta, ours.phi,
                                        ours.conv_out)]
    assert all(type(conv) is PointwiseConv for conv in convs)
    assert type(plain.g.conv) is torch.nn.Conv2d
    x = torch.randn(2, 16, 6, 7, dtype=torch.float64, requires_grad=True)
    out = ours(x)
    assert_rel_close(out, plain(x))
    assert_rel_close(torch.autograd.grad(out.square().sum(), x)[0],
                     torch.autograd.grad(plain(x).square().sum(), x)[0])


def test_same_as_mmcv_with_norm_out():
    kwargs = dict(sub_sample=True, norm_cfg=dict(type='BN'))
    theirs = randomize_(NonLocal2d(16, **kwargs)).eval()
    ours = NonLocal(16, **kwargs).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 16, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        assert_rel_close(ours.double()(x), theirs.double()(x))


@pytest.mark.parametrize('mode', ['embedded_gaussian', 'gaussian'])
@pytest.mark.parametrize('use_scale', [True, False], ids=['scale', 'noscale'])
@pytest.mark.parametrize('chunk_size', [None, 5], ids=['sdpa', 'chunk5'])
def test_matches_paper_equations_float64(mode, use_scale, chunk_size):
    module = NonLocal(16, mode=mode, use_scale=use_scale,
                      chunk_size=chunk_size)
    module = randomize_(module).double()
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64) * 0.5
    with torch.no_grad():
        assert_rel_close(module(x), non_local_ref(module, x))


@pytest.mark.parametrize('size', [(1, 1), (1, 5), (3, 1)],
                         ids=lambda s: f'{s[0]}x{s[1]}')
def test_sub_sample_skips_the_pool_on_thin_maps(size):
    pooled = randomize_(NonLocal(16, sub_sample=True)).double()
    x = torch.randn(2, 16, *size, dtype=torch.float64)
    with torch.no_grad():
        assert_rel_close(pooled(x), non_local_ref(pooled, x))
    with pytest.raises(RuntimeError):  # mmcv's path: no 2x2 window fits
        NonLocal2d(16, sub_sample=True).double()(x)


def test_mmcv_defaults_and_identity_at_init():
    module = NonLocal(64)
    assert module._abbr_ == 'nonlocal_block'
    assert module.default_position == 'after_block'
    assert (module.mode, module.inter_channels, module.sub_sample,
            module.use_scale) == ('embedded_gaussian', 32, False, True)
    assert module.conv_out.conv.weight.abs().max() == 0
    for branch in (module.g, module.theta, module.phi):
        weight = branch.conv.weight
        assert abs(weight.std().item() - 0.01) < 0.002  # N(0, 0.01^2)
        assert branch.conv.bias.abs().max() == 0
    x = torch.randn(2, 64, 7, 9)
    assert torch.equal(module(x), x)


def test_init_weights_remembers_its_arguments():
    module = NonLocal(64, sub_sample=True, std=0.05)
    randomize_(module)
    module.init_weights()  # as mmengine calls it: no arguments
    assert abs(module.g[0].conv.weight.std().item() - 0.05) < 0.01
    assert module.conv_out.conv.weight.abs().max() == 0
    normed = randomize_(NonLocal(64, norm_cfg=dict(type='BN')))
    normed.init_weights()
    assert normed.conv_out.norm.weight.abs().max() == 0


@pytest.mark.parametrize('sub_sample', [False, True], ids=['full', 'pool'])
def test_identity_in_resnet50_after_init_weights(sub_sample):
    io = plugin_io_in_resnet50(
        dict(type='NonLocal', sub_sample=sub_sample),
        stages=(False, False, True, False))
    assert len(io) == 6
    assert all(torch.equal(inp, out) for inp, out in io)


def test_mmcv_nonlocal2d_sub_sample_breaks_resnet_init():
    # Why NonLocal overrides init_weights: mmcv's looks for ``g.conv``,
    # which sub_sample has wrapped in a Sequential.
    backbone = ResNet(depth=50, plugins=[dict(
        cfg=dict(type='NonLocal2d', sub_sample=True),
        stages=(False, False, True, False), position='after_conv3')])
    with pytest.raises(AttributeError, match='conv'):
        backbone.init_weights()


@pytest.mark.parametrize('chunk_size', [None, 32], ids=['sdpa', 'chunk32'])
def test_no_hw_squared_tensor(chunk_size):
    module = randomize_(NonLocal(16, chunk_size=chunk_size))
    x = torch.randn(1, 16, 24, 24, requires_grad=True)
    with LargestTensor() as rec:
        module(x).sum().backward()
    hw = 24 * 24
    assert rec.numel <= max(16 * hw, 32 * hw) < hw * hw // 8


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('mode', ['embedded_gaussian', 'gaussian'])
def test_autocast(dtype, mode):
    torch.manual_seed(0)
    module = randomize_(NonLocal(16, mode=mode))
    x = torch.randn(2, 16, 12, 10) * 300  # scores far beyond fp16's range
    with torch.autocast('cpu', dtype=dtype):
        out = module(x)
    assert torch.isfinite(out).all()
    x = torch.randn(2, 16, 12, 10) * 0.1
    ref = module(x)
    with torch.autocast('cpu', dtype=dtype):
        out = module(x)
    rel = (out.float() - ref).abs().mean() / ref.abs().mean()
    assert rel < 0.02


def test_parameter_count():
    # One block at C = 1024, C' = 512: g, theta, phi, W_z with biases.
    assert sum(p.numel() for p in NonLocal(1024).parameters()) == 2_099_712
    plain = sum(p.numel() for p in ResNet(depth=50).parameters())
    with_nl = sum(p.numel() for p in ResNet(depth=50, plugins=[
        dict(cfg=dict(type='NonLocal'), position='after_conv3')]).parameters())
    expected = sum(n * (4 * c * (c // 2) + 3 * (c // 2) + c)
                   for n, c in [(3, 256), (4, 512), (6, 1024), (3, 2048)])
    assert with_nl - plain == expected == 40_276_864


def test_invalid_arguments():
    with pytest.raises(ValueError, match='mode'):
        NonLocal(16, mode='cosine')
    with pytest.raises(ValueError, match='reduction'):
        NonLocal(16, reduction=0)
    with pytest.raises(ValueError, match='chunk_size'):
        NonLocal(16, chunk_size=0)
    with pytest.raises(ValueError, match='in_channels'):
        NonLocal(0)
