"""The shared pieces of mmattn.models.common with a hand-written backward:
the same values as plain torch ops, gradients checked numerically."""
import pytest
import torch
import torch.nn as nn

from mmattn.models import common
from mmattn.models.backbones.blocks import batch_norm_with_affine
from mmattn.models.common import (GradientHandoff, batch_norm_state,
                                  batch_norm_with_stats, max_mean_pool,
                                  max_mean_pools, scale_by_maps,
                                  scale_channels, spatial_mean,
                                  spatial_mean_var)


def _views(x):
    """x and the layouts the modules pool: flattened H x W (CBAM), the
    rotated views of Triplet attention."""
    return [(x, 1), (x.flatten(2), 2), (x.transpose(1, 2), 1),
            (x.permute(0, 3, 2, 1), 1)]


@pytest.mark.parametrize('shape, dim, two_steps', [
    ((2, 3, 4100), 2, True),  # a long innermost run (CBAM's H x W)
    ((2, 3, 4096), 2, True),  # n = n1 n2 exactly: no rest
    ((2, 30, 70, 130), 2, True),  # the rows of an NCHW map (Triplet's H)
    ((2, 32, 64, 131), 2, True),
    ((2, 30, 70, 136), 2, False),  # a width torch.max vectorises
    ((2, 800, 70, 5), 2, False),  # short rows
    ((2, 3, 70, 130), 2, False),  # a small map
    ((2, 70, 64, 60), 1, True),  # channels (Triplet's Z-pool over C)
    ((2, 40, 100, 100), 1, False),  # few channels: torch.max
    ((2, 70, 4, 5), 1, False),  # a small map: torch.max
    ((2, 3, 4, 70), 3, False),  # a short innermost dim: torch.max
])
@pytest.mark.parametrize('values', ['distinct', 'ties', 'nan'])
def test_max_with_index_is_torch_max(shape, dim, two_steps, values):
    """Values and first-maximum indices equal torch.max's, with ties (the
    first one wins, also across the groups and the rest) and NaN."""
    from mmattn.models.common import _two_step_max_pays, max_with_index
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen)
    if values == 'ties':  # a few values only: every maximum is tied
        x = x.mul(1.5).round().clamp(-2, 2)
    elif values == 'nan':
        x.view(-1)[::97] = float('nan')
    assert _two_step_max_pays(x, dim) is two_steps
    expected = x.max(dim=dim, keepdim=True)
    actual = max_with_index(x, dim)
    assert torch.equal(actual[1], expected[1])
    torch.testing.assert_close(actual[0], expected[0], rtol=0, atol=0,
                               equal_nan=True)


def test_max_mean_pool_values_and_gradcheck():
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    for view, dim in _views(x):
        expected = torch.cat([view.amax(dim, keepdim=True),
                              view.mean(dim, keepdim=True)], dim)
        assert torch.equal(max_mean_pool(view, dim), expected)
        assert torch.autograd.gradcheck(
            lambda t, d=dim: max_mean_pool(t, d), (view.detach().clone()
                                                   .requires_grad_(),))


def test_max_mean_pools_over_several_dims_at_once():
    """Triplet attention's three Z-pools: one gradient for all three."""
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    pooled = max_mean_pools(x, (2, 3, 1))
    for out, dim in zip(pooled, (2, 3, 1)):
        assert torch.equal(out, max_mean_pool(x, dim))
    assert torch.autograd.gradcheck(lambda t: max_mean_pools(t, (2, 3, 1)),
                                    (x, ))
    assert torch.autograd.gradcheck(lambda t: max_mean_pools(t, (2, 3)),
                                    (x, ))


@pytest.mark.parametrize('dims', [(2, 3, 1), (2, 3), (1, ), (3, 1, 2)])
@pytest.mark.parametrize('handed_over', [False, True])
def test_max_mean_pools_gradient_in_blocks_is_bit_identical(
        dims, handed_over, channel_blocks):
    """The backward, in one block or in channel blocks (the mean shares and
    the per-channel max shares added in cache), gives bit for bit the
    gradient of one pass per share in order: the mean shares added (to the
    gradient handed over, if any), then the max shares at the argmax."""
    gen = torch.Generator().manual_seed(0)
    x = channel_blocks(torch.randn(2, 5, 4, 3, generator=gen))
    x.requires_grad_()
    shapes = [list(x.shape[:d]) + [2] + list(x.shape[d + 1:]) for d in dims]
    upstream = [torch.randn(s, generator=gen) for s in shapes]
    base = torch.randn(x.shape, generator=gen)

    def grad_x():
        handoff = GradientHandoff() if handed_over else None
        pooled = max_mean_pools(x, dims, handoff)
        if handed_over:
            handoff.grad = base.clone()
        return torch.autograd.grad(pooled, x, upstream)[0]

    expected = base.clone() if handed_over else None
    for grad, dim in zip(upstream, dims):
        mean = (grad.narrow(dim, 1, 1) / x.shape[dim]).expand(x.shape)
        expected = mean.clone() if expected is None else expected + mean
    for grad, dim in zip(upstream, dims):
        expected.scatter_add_(dim, x.max(dim, keepdim=True)[1],
                              grad.narrow(dim, 0, 1))
    assert torch.equal(grad_x(), expected)


def test_max_mean_pool_gradient_goes_to_one_maximum():
    """Ties: all of the max's gradient to one element (as torch.max(x, dim)
    and the official F.max_pool2d), the mean's spread evenly."""
    x = torch.ones(1, 4, 1, 1, requires_grad=True)
    max_mean_pool(x, 1)[:, 0].sum().backward()
    assert x.grad.sum().item() == 1 and x.grad.max().item() == 1


def test_max_mean_pool_keeps_half_precision_stats_in_fp32():
    x = torch.full((1, 3, 2, 2), 60000., dtype=torch.float16,
                   requires_grad=True)
    pooled = max_mean_pool(x, 1)
    assert pooled.dtype == torch.float32 and pooled[0, 1, 0, 0] == 60000.
    pooled.sum().backward()
    assert x.grad.dtype == torch.float16


def test_spatial_mean_gradient_is_bit_identical_to_autograd():
    x = torch.randn(2, 6, 5, 7, requires_grad=True)
    weight = torch.randn(6, 6)

    def loss(mean_fn):
        pooled = mean_fn(x).flatten(1)
        return (x * torch.sigmoid(pooled @ weight)[..., None, None]).square()\
            .sum()

    ref = torch.autograd.grad(
        loss(lambda t: t.mean((2, 3), keepdim=True)), x)[0]
    got = torch.autograd.grad(loss(spatial_mean), x)[0]
    assert torch.equal(got, ref)
    with torch.no_grad():
        assert torch.equal(spatial_mean(x), x.mean((2, 3), keepdim=True))


def test_spatial_mean_gradcheck_other_dims():
    x = torch.randn(2, 3, 4, 5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: spatial_mean(t, (3, 4)), (x, ))


@pytest.mark.parametrize('via_norm', [False, True])
def test_scale_channels_gradcheck(via_norm):
    torch.manual_seed(0)
    z = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    weight, bias = torch.randn(3, dtype=torch.float64), torch.randn(
        3, dtype=torch.float64)
    x = (z * weight[:, None, None] + bias[:, None, None]).requires_grad_()
    scale = torch.rand(2, 3, 1, 1, dtype=torch.float64, requires_grad=True)
    affine = (z, weight, bias) if via_norm else None
    residual = torch.randn_like(z, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x_, s_: scale_channels(x_, s_, affine), (x, scale))
    assert torch.autograd.gradcheck(
        lambda x_, s_, r_: scale_channels(x_, s_, affine, r_),
        (x, scale, residual))
    with torch.no_grad():
        torch.testing.assert_close(scale_channels(x, scale, affine, residual),
                                   x * scale + residual)


@pytest.mark.parametrize('training,momentum', [(True, 0.1), (True, None),
                                               (False, 0.1)])
def test_batch_norm_with_affine_is_batch_norm(training, momentum):
    """Output, running statistics and the affine of nn.BatchNorm2d."""
    torch.manual_seed(0)
    norms = [nn.BatchNorm2d(4, momentum=momentum) for _ in range(2)]
    nn.init.normal_(norms[0].weight)
    nn.init.normal_(norms[0].bias)
    norms[0].running_mean.normal_()
    norms[0].running_var.uniform_(0.5, 2)
    norms[1].load_state_dict(norms[0].state_dict())
    z = (torch.randn(2, 4, 5, 6) * 3 + 1).requires_grad_()
    for _ in range(2):
        for norm in norms:
            norm.train(training)
        out, (source, weight, bias) = batch_norm_with_affine(norms[0], z)
        torch.testing.assert_close(out, norms[1](z), rtol=0, atol=1e-6)
        for key, value in norms[1].state_dict().items():
            torch.testing.assert_close(norms[0].state_dict()[key], value)
        assert source is z
        torch.testing.assert_close(
            z * weight[:, None, None] + bias[:, None, None], out)


@pytest.mark.parametrize('training', [True, False])
def test_batch_norm_with_stats_returns_the_normalising_statistics(training):
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(3).train(training)
    norm.running_mean.normal_()
    norm.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 4, 5) * 2 + 1
    if training:
        var, mean = torch.var_mean(x, (0, 2, 3), correction=0)
    else:
        var, mean = norm.running_var.clone(), norm.running_mean.clone()
    out, got_mean, invstd = batch_norm_with_stats(x, norm.weight, norm.bias,
                                                  norm.eps,
                                                  *batch_norm_state(norm))
    torch.testing.assert_close(got_mean, mean)
    torch.testing.assert_close(invstd, torch.rsqrt(var + norm.eps))
    torch.testing.assert_close(
        out, (x - mean[:, None, None]) * invstd[:, None, None])


def test_batch_norm_with_stats_refuses_one_value_per_channel():
    norm = nn.BatchNorm2d(3)
    with pytest.raises(ValueError, match='more than 1 value per channel'):
        batch_norm_with_stats(torch.randn(1, 3, 1, 1), norm.weight,
                              norm.bias, norm.eps, *batch_norm_state(norm))


def test_channel_block_size_grows_beyond_the_cache():
    """Blocks of CPU_BLOCK_NUMEL x factor elements; for an input of
    MIN_LARGE_BLOCK_INPUT_NUMEL elements or more, at least
    CPU_LARGE_BLOCK_NUMEL; all channels off the CPU."""
    def blocks(shape, factor=1, device='cpu'):
        x = torch.empty(1, device=device).expand(shape)  # no memory
        return common.channel_block_size(x, factor)

    large = (2, 256, 200, 334)  # 2^25.03 elements, 133,600 per channel
    small = (2, 256, 80, 80)  # 2^21.6, 12,800 per channel
    assert 2 * 256 * 200 * 334 >= common.MIN_LARGE_BLOCK_INPUT_NUMEL
    assert blocks(large) == common.CPU_LARGE_BLOCK_NUMEL // 133_600
    assert blocks(large, factor=4) == 4 * common.CPU_BLOCK_NUMEL // 133_600
    assert blocks(small) == common.CPU_BLOCK_NUMEL // 12_800
    assert blocks(small, factor=4) == 4 * common.CPU_BLOCK_NUMEL // 12_800
    assert blocks(large, device='meta') == 256
    assert blocks((2, 2, 2, 2)) >= 2  # all channels in one block


@pytest.mark.parametrize('block_numel', [None, 65, 1])
@pytest.mark.parametrize('channels_last', [False, True])
def test_per_channel_sums_in_blocks(block_numel, channels_last, monkeypatch):
    """The blocked dot products and sums (one block, blocks of one
    channel, a shorter last block) equal the full-size product's sums."""
    if block_numel is not None:
        monkeypatch.setattr(common, 'CPU_BLOCK_NUMEL', block_numel)
    grad, x = torch.randn(2, 2, 7, 5, 3, dtype=torch.float64).unbind(0)
    if channels_last:
        grad = grad.contiguous(memory_format=torch.channels_last)
    dots, sums = common.per_channel_sums(grad, x, True)
    torch.testing.assert_close(dots, (grad * x).sum((2, 3)))
    torch.testing.assert_close(sums, grad.sum((2, 3)))
    assert common.per_channel_sums(grad, x, False)[1] is None


@pytest.mark.parametrize('shape', [(2, 3, 4, 5), (2, 1, 4, 5), (2, 1, 1, 5)])
@pytest.mark.parametrize('dims', [(1, ), (2, 3), (1, 2)])
def test_block_sum_is_sum_with_keepdim(shape, dims):
    """A block's sum, its dims of size 1 left out: the same values and
    shape as ``sum(dims, keepdim=True)``; nothing to sum returns the block
    itself, or its conversion to the asked dtype."""
    block = torch.randn(shape, dtype=torch.float64)
    expected = block.sum(dims, keepdim=True)
    assert torch.equal(common.block_sum(block, dims), expected)
    assert torch.equal(common.block_sum(block.half(), dims, torch.float64),
                       block.half().sum(dims, keepdim=True,
                                        dtype=torch.float64))
    if all(shape[d] == 1 for d in dims):
        assert common.block_sum(block, dims) is block
        assert common.block_sum(block, dims, torch.float64) is block


@pytest.mark.parametrize('correction', [0, 1])
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last', 'half'])
def test_spatial_mean_var_is_var_mean(correction, layout, channel_blocks):
    x = channel_blocks(torch.randn(2, 5, 7, 6) * 3 + 2)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == 'half':
        x = x.half()
    mean, var = spatial_mean_var(x, correction)
    assert mean.dtype == var.dtype == torch.float32
    expected_var, expected_mean = torch.var_mean(
        x.float(), (2, 3), keepdim=True, correction=correction)
    torch.testing.assert_close(mean, expected_mean)
    torch.testing.assert_close(var, expected_var)


@pytest.mark.parametrize('divisor', [1, 2])
def test_scale_by_product_of_maps_gradcheck_and_values(divisor,
                                                       channel_blocks):
    """Coordinate attention's row and column gates: the product of the
    maps (over a divisor, which the backward folds into the first map),
    gradients against finite differences, in channel blocks."""
    torch.manual_seed(0)
    x = channel_blocks(torch.randn(2, 5, 4, 3, dtype=torch.float64))
    maps = [torch.rand(2, 5, 4, 1, dtype=torch.float64),
            torch.rand(2, 5, 1, 3, dtype=torch.float64)]
    for t in [x, *maps]:
        t.requires_grad_()
    expected = x * (maps[0] * maps[1] / divisor)
    assert torch.equal(
        scale_by_maps(x, maps, divisor, product=True), expected)
    assert torch.autograd.gradcheck(
        lambda *args: scale_by_maps(args[0], args[1:], divisor,
                                    product=True), (x, *maps))


@pytest.mark.parametrize('divisor', [1, 3])
def test_scale_by_maps_gradcheck_and_values(divisor, channel_blocks):
    """Triplet's three branch maps (and CBAM's one): the eager product bit
    for bit, gradients against finite differences, in channel blocks."""
    torch.manual_seed(0)
    x = channel_blocks(torch.randn(2, 5, 4, 3, dtype=torch.float64))
    maps = [torch.rand(2, 5, 1, 3, dtype=torch.float64),
            torch.rand(2, 5, 4, 1, dtype=torch.float64),
            torch.rand(2, 1, 4, 3, dtype=torch.float64)]
    maps = maps if divisor == 3 else maps[2:]
    for t in [x, *maps]:
        t.requires_grad_()
    expected = x * (sum(maps[1:], maps[0]) / divisor)
    assert torch.equal(scale_by_maps(x, maps, divisor), expected)
    with torch.no_grad():
        assert torch.equal(scale_by_maps(x, maps, divisor), expected)
    assert torch.autograd.gradcheck(
        lambda *args: scale_by_maps(args[0], args[1:], divisor),
        (x, *maps))
