"""The few pieces every attention module shares.

* argument checks that raise ``ValueError`` naming the argument,
* reduction arithmetic (``rd_ratio`` / ``rd_channels`` / ``rd_divisor``),
* activations and gates chosen by name,
* :func:`fp32_region`, a block with autocast off, and global pooling whose
  statistics are accumulated in fp32 (safe under fp16/bf16 autocast),
* pooling and scaling with a hand-written, one-pass backward: the mean of
  the channel gates, the max + mean of CBAM and the Z-pool
  (:func:`max_mean_pools`), the channel product (:func:`scale_channels`),
* :func:`needs_grad`, which picks a module's custom-backward path.
"""
from __future__ import annotations

import contextlib
import itertools
import math
from typing import (Iterable, Iterator, Optional, Sequence, Tuple, Type,
                    Union)

import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable

ActLayer = Union[str, Type[nn.Module], None]

_ACTIVATIONS: dict[str, Type[nn.Module]] = {
    'relu': nn.ReLU,
    'relu6': nn.ReLU6,
    'leaky_relu': nn.LeakyReLU,
    'gelu': nn.GELU,
    'silu': nn.SiLU,
    'swish': nn.SiLU,
    'hard_swish': nn.Hardswish,
    'h_swish': nn.Hardswish,
    'sigmoid': nn.Sigmoid,
    'hard_sigmoid': nn.Hardsigmoid,
    'h_sigmoid': nn.Hardsigmoid,
    'tanh': nn.Tanh,
    'identity': nn.Identity,
}


# --------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------
def check_positive_int(value: int, name: str) -> int:
    """Return ``value`` if it is an int >= 1, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive int, got {value!r}')
    return value


def check_choice(value, choices: Iterable, name: str):
    """Return ``value`` if it is one of ``choices``, else raise naming
    ``name`` and the allowed values."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f'{name} must be one of {choices}, got {value!r}')
    return value


def check_divisible(value: int, divisor: int, name: str,
                    divisor_name: str) -> None:
    """Raise unless ``divisor`` divides ``value``."""
    if value % divisor != 0:
        raise ValueError(f'{divisor_name}={divisor} must divide {name}='
                         f'{value}')


def check_odd_kernel(kernel_size: int, name: str = 'kernel_size') -> int:
    """Return ``kernel_size`` if it is a positive odd int (so that 'same'
    padding exists), else raise naming ``name``."""
    check_positive_int(kernel_size, name)
    if kernel_size % 2 == 0:
        raise ValueError(f'{name} must be odd so that the output keeps the '
                         f'input size, got {kernel_size}')
    return kernel_size


# --------------------------------------------------------------------------
# reduction arithmetic
# --------------------------------------------------------------------------
def make_divisible(value: float, divisor: int = 8,
                   min_value: Optional[int] = None,
                   round_limit: float = 0.9) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (timm's rule):
    never below ``min_value`` (default ``divisor``) and never more than
    ``1 - round_limit`` below ``value``."""
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:
        new_value += divisor
    return new_value


def reduced_channels(in_channels: int,
                     rd_ratio: float,
                     rd_channels: Optional[int] = None,
                     rd_divisor: int = 1,
                     min_channels: int = 1) -> int:
    """Width of a reduction (squeeze) layer.

    Args:
        in_channels (int): Channels entering the reduction, C.
        rd_ratio (float): Width as a fraction of C (1/r in the SE paper).
        rd_channels (int, optional): Explicit width; overrides ``rd_ratio``.
        rd_divisor (int): Round the width to a multiple of this. 1 (default)
            keeps the papers' plain ``int(C * rd_ratio)``.
        min_channels (int): Lower bound applied after rounding, for designs
            such as Coordinate attention's ``max(8, C / 32)``.

    Raises:
        ValueError: naming ``rd_channels`` / ``rd_ratio`` when the width
            would be 0 or the arguments are not positive.
    """
    if rd_channels is not None:
        return check_positive_int(rd_channels, 'rd_channels')
    if not rd_ratio > 0:
        raise ValueError(f'rd_ratio must be > 0, got {rd_ratio!r}')
    check_positive_int(rd_divisor, 'rd_divisor')
    if rd_divisor > 1:
        width = make_divisible(in_channels * rd_ratio, rd_divisor,
                               round_limit=0.)
    else:
        width = int(in_channels * rd_ratio)
    width = max(width, min_channels if min_channels > 1 else 0)
    if width < 1:
        raise ValueError(
            f'rd_ratio={rd_ratio} leaves 0 channels for in_channels='
            f'{in_channels}; use a larger rd_ratio or set rd_channels')
    return width


# --------------------------------------------------------------------------
# activations and gates
# --------------------------------------------------------------------------
def create_act(act: ActLayer, name: str = 'act_layer') -> nn.Module:
    """Build an activation (or gate) from a name, a class, or ``None``
    (identity). Names: ``'relu'``, ``'sigmoid'``, ``'hard_sigmoid'``,
    ``'hard_swish'``, ... (see ``ACTIVATION_NAMES``)."""
    if act is None:
        return nn.Identity()
    if isinstance(act, str):
        check_choice(act, _ACTIVATIONS, name)
        layer = _ACTIVATIONS[act]
        return layer(inplace=True) if layer in (nn.ReLU, nn.ReLU6) else layer()
    if isinstance(act, type) and issubclass(act, nn.Module):
        return act()
    raise ValueError(f'{name} must be a name from {tuple(_ACTIVATIONS)}, an '
                     f'nn.Module class or None, got {act!r}')


ACTIVATION_NAMES = tuple(_ACTIVATIONS)


# --------------------------------------------------------------------------
# pooling with fp32 statistics
# --------------------------------------------------------------------------
def accumulate_dtype(x: torch.Tensor) -> torch.dtype:
    """fp32 for half-precision inputs, the input's dtype otherwise (fp64
    stays fp64)."""
    return torch.promote_types(x.dtype, torch.float32)


def fp32_region(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast switched off on ``x``'s device: ops inside run in the dtype
    of their inputs, so tensors cast with ``.to(accumulate_dtype(x))`` stay
    in fp32 (or fp64)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def spatial_mean(x: torch.Tensor, dims=(2, 3)) -> torch.Tensor:
    """Mean over ``dims`` (keepdim) accumulated and returned in at least
    fp32.

    Under autocast a half-precision sum over a large map overflows or loses
    precision; ``dtype=`` accumulates in fp32 without copying the input.
    Under autograd (:class:`_SpatialMean`) the gradient is handed back as a
    broadcast view, so the one full-size write is the sum with the other
    gradients of ``x`` (autograd's own backward writes a full-size
    quotient first): bit-identical, about a third less time for an SE
    gate's forward + backward.
    """
    if needs_grad(x):
        return _SpatialMean.apply(x, tuple(d % x.dim() for d in dims))
    return torch.mean(x, dim=dims, keepdim=True, dtype=accumulate_dtype(x))


class _SpatialMean(torch.autograd.Function):
    """:func:`spatial_mean` whose gradient is ``grad / n`` broadcast
    (``expand``), not materialised."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dims: Tuple[int, ...]) -> torch.Tensor:
        ctx.shape, ctx.dtype = x.shape, x.dtype
        ctx.num = math.prod(x.shape[d] for d in dims)
        return torch.mean(x, dim=dims, keepdim=True,
                          dtype=accumulate_dtype(x))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        return (grad / ctx.num).to(ctx.dtype).expand(ctx.shape), None


def spatial_mean_var(x: torch.Tensor, correction: int = 0
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance over H x W, (B, C, 1, 1) each, in at least fp32;
    the variance divides by HW - ``correction``.

    Two passes over x: the mean, then the squared deviations from it summed
    a block of planes at a time (:func:`channel_blocks`), so the deviations
    stay in cache. ``torch.var_mean``'s one-pass (Welford) kernel is some
    30x slower than this on the CPU.
    """
    acc = accumulate_dtype(x)
    if capturing_graph():  # one graph op; the loop's out= writes do not trace
        var, mean = torch.var_mean(x.to(acc), dim=(2, 3), keepdim=True,
                                   correction=correction)
        return mean, var
    b, c, h, w = x.shape
    mean = x.mean((2, 3), keepdim=True, dtype=acc)  # (B, C, 1, 1)
    planes = x.reshape(1, b * c, h * w)  # a view unless channels_last
    var = mean.new_empty(1, b * c)
    for x_b, mean_b, var_b in channel_blocks(planes, mean.view(1, b * c, 1),
                                             var):
        deviation = x_b.to(acc) - mean_b  # (1, planes of the block, H*W)
        torch.linalg.vecdot(deviation, deviation, out=var_b)
    return mean, var.view(b, c, 1, 1).div_(h * w - correction)


# --------------------------------------------------------------------------
# ONNX-exportable adaptive pooling
# --------------------------------------------------------------------------
def adaptive_pool_matrix(in_size: int, out_size: int,
                          like: torch.Tensor) -> torch.Tensor:
    """(out_size, in_size) matrix averaging the bins of adaptive pooling:
    row i covers ``[floor(i * in / out), ceil((i + 1) * in / out))``. Built
    from Python numbers, so that a traced graph holds it as a constant."""
    rows = []
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -(-(i + 1) * in_size // out_size)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0
                     for j in range(in_size)])
    return torch.tensor(rows, dtype=like.dtype, device=like.device)


def adaptive_avg_pool2d(x: torch.Tensor, output_size) -> torch.Tensor:
    """``F.adaptive_avg_pool2d``, also exportable to ONNX for any sizes.

    ONNX has no adaptive pooling and torch's exporter handles only output
    sizes that divide the input size. While exporting, the pooling is
    written as one averaging matrix per axis, built for the traced input
    size: the same bins, so the same result (an exported graph then
    expects that input size). Otherwise ``F.adaptive_avg_pool2d`` runs.
    """
    if not torch.onnx.is_in_onnx_export():
        return torch.nn.functional.adaptive_avg_pool2d(x, output_size)
    out_h, out_w = (output_size, output_size) if isinstance(
        output_size, int) else output_size
    rows = adaptive_pool_matrix(x.shape[-2], out_h, x)  # (oh, H)
    cols = adaptive_pool_matrix(x.shape[-1], out_w, x)  # (ow, W)
    return torch.einsum('ph,bchw,qw->bcpq', rows, x, cols)  # (B, C, oh, ow)


# --------------------------------------------------------------------------
# custom autograd paths
# --------------------------------------------------------------------------
def capturing_graph() -> bool:
    """Whether a graph of the ops is being recorded: torch.jit tracing,
    ONNX export, or ``torch.compile`` (dynamo, see
    :mod:`mmattn.models.compiled`). The blocked passes (loops writing into
    views with ``out=``) and the hand-written backward passes then give way
    to plain graph ops: the exporter needs them, and the compiler fuses
    them, and derives their backward, itself."""
    return (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling())


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd will record an op on ``tensors`` (grad mode on and
    one of them requires grad) outside graph capture
    (:func:`capturing_graph`).

    Modules with a hand-written backward (``SimAMFunction``,
    ``SGEFunction``) take it only then; otherwise (inference, and graph
    capture, which records the plain ops instead of a Python autograd
    Function) they run plain ops.
    """
    if capturing_graph():
        return False
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def nchw_or_channels_last(x: torch.Tensor) -> bool:
    """Whether x (B, C, H, W) is NCHW- or channels-last-contiguous: the
    layouts whose (B, C, HW) or (B, HW, C) reshape is a view of x, through
    which the fused paths (CBAM, BAM) pool x and write its gradient."""
    return x.is_contiguous() or x.is_contiguous(
        memory_format=torch.channels_last)


class GradientHandoff:
    """Passes a partial input gradient between the hand-written backward
    passes of one module, so that the input gradient is written once.

    When a module reads x in several autograd functions (a pooling, then a
    product with the gates the pooling led to), autograd has each backward
    write its own full-size gradient of x and sums them. Instead, the last
    function (whose backward runs first) stores its gradient of x in
    ``grad`` and returns None for x; each earlier one adds its share in
    place; the first, whose backward runs last, returns the total. The
    order is guaranteed: each function's output feeds the next one's
    inputs. ``grad`` has the layout ``torch.empty_like(x)`` gives x.
    """

    __slots__ = ('grad', )

    def __init__(self) -> None:
        self.grad: Optional[torch.Tensor] = None

    def take(self) -> Optional[torch.Tensor]:
        """The gradient handed over (None if none), cleared for the next
        backward of a retained graph."""
        grad, self.grad = self.grad, None
        return grad


def _as_layout_of(grad: torch.Tensor, shape: torch.Size,
                  stride: Tuple[int, ...]) -> torch.Tensor:
    """``grad`` (laid out as ``empty_like(x)``) seen as a pooled view of x
    that reshapes x in its memory order (x itself, x.flatten(2) of an NCHW
    x, (B, HW, C) of a channels-last one): the same memory, the view's
    shape and the strides ``empty_like`` gives the view."""
    # dense: its strides, sorted, are the running products of its sizes
    dense, expected = True, 1
    for size, step in sorted(zip(grad.shape, grad.stride()),
                             key=lambda pair: pair[1]):
        dense &= size == 1 or step == expected
        expected *= size
    if not dense or grad.numel() != math.prod(shape):
        raise RuntimeError(f'GradientHandoff: a gradient of shape '
                           f'{tuple(grad.shape)} cannot serve an input of '
                           f'shape {tuple(shape)}')
    return grad.as_strided(shape, stride)


#: Elements from which :class:`_MaxMeanPool`'s backward writes the gradient
#: in channel blocks: where it is well beyond the last-level cache (below
#: that, the cache serves its one pass per share). Triplet attention's
#: training pass on a 2-core AMD EPYC with AVX-512 and a 32 MiB L3,
#: interleaved against one pass per share: 0.95-0.98x at 2x256x200x334
#: (2^25 elements; four runs), 1.00x at 2x256x100x167 and 2x512x40x40,
#: 1.02-1.06x at 2x256x80x80 and 2x1024x20x20.
MIN_BLOCKED_POOL_GRAD_NUMEL = 1 << 24


class _MaxMeanPool(torch.autograd.Function):
    """:func:`max_mean_pools` with a backward that writes the input
    gradient once: the mean shares broadcast and summed, then each max's
    share added at its saved argmax (autograd would materialise every share
    and sum them one by one); with a :class:`GradientHandoff`, all of it
    added to the gradient handed over. A contiguous gradient of at least
    :data:`MIN_BLOCKED_POOL_GRAD_NUMEL` elements is written a block of
    channels at a time (:func:`channel_blocks`), every share of a block
    added while it is in cache (Triplet's three mean shares and two
    per-channel max shares: one read and write of memory instead of five);
    the same operations in the same order on each element, so the same
    gradient bit for bit."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dims: Tuple[int, ...],
                handoff: Optional[GradientHandoff]):
        pooled, indices = zip(*(_max_mean(x, dim) for dim in dims))
        ctx.save_for_backward(*indices)
        ctx.dims, ctx.shape, ctx.dtype = dims, x.shape, x.dtype
        ctx.handoff = handoff
        # the strides empty_like(x) would give: a rotated view's own
        ctx.stride = torch.empty_like(x, device='meta').stride()
        return pooled

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: torch.Tensor):
        grads = [g.to(ctx.dtype) for g in grads]
        # the mean shares, unbroadcast: g_mean / n with size 1 in its dim
        means = [g.narrow(d, 1, 1) / ctx.shape[d]
                 for g, d in zip(grads, ctx.dims)]
        maxima = [g.narrow(d, 0, 1) for g, d in zip(grads, ctx.dims)]
        grad_x = None if ctx.handoff is None else ctx.handoff.take()
        fresh = grad_x is None  # no handoff: this function's own gradient
        if fresh:
            grad_x = torch.empty_strided(ctx.shape, ctx.stride,
                                         dtype=ctx.dtype,
                                         device=grads[0].device)
        else:
            grad_x = _as_layout_of(grad_x, ctx.shape, ctx.stride)
        # the max shares that stay within a block of channels (a pool over
        # another dim), up to the first over channels, which needs them all
        within = len(ctx.dims) if 1 not in ctx.dims else ctx.dims.index(1)
        indices = ctx.saved_tensors  # unpacked once (activation checkpoint)
        parts = (grad_x, *means, *maxima[:within], *indices[:within])
        blocked = grad_x.is_contiguous() and \
            grad_x.numel() >= MIN_BLOCKED_POOL_GRAD_NUMEL
        blocks = channel_blocks(*parts) if blocked else [parts]
        k = len(means)
        for grad_b, *rest in blocks:
            means_b = rest[:k]
            if fresh:  # the first share (or two) written, not added
                if k > 1:
                    torch.add(means_b[0], means_b[1], out=grad_b)
                else:
                    grad_b.copy_(means_b[0])
                means_b = means_b[2:]
            for mean in means_b:
                grad_b.add_(mean)
            for grad, dim, index in zip(rest[k:k + within], ctx.dims,
                                        rest[k + within:]):
                grad_b.scatter_add_(dim, index, grad)
        for grad, dim, index in zip(maxima[within:], ctx.dims[within:],
                                    indices[within:]):
            grad_x.scatter_add_(dim, index, grad)
        return grad_x, None, None


def _two_step_max_pays(x: torch.Tensor, dim: int) -> bool:
    """Whether :func:`max_with_index` takes two steps: on the CPU, where
    ``torch.max`` with indices is 2-4x slower than ``amax``. Measured
    against ``torch.max`` (interleaved, 15 rounds, this project's 2-core
    AVX2 CPU, fp32), the two steps take:

    - over a long innermost run (CBAM's channel pool over the flattened H x
      W): 11 ms against 41 at 2x256x200x334; over a short one (W), more;
    - over the rows of an NCHW map (at least 2^19 elements, as below)
      whose width is at least 128 and not a multiple of 8, where
      ``torch.max``'s vectorised loop does not apply (Triplet's pool over
      H): 0.52-0.76x its time at 2x256x200x334, 2x512x100x167 and
      2x256x150x150; at W = 80, 152, 160, 200 or 304 they took 1.1-1.6x;
    - over the channels of an NCHW map of at least 64 channels and 2^19
      elements (Triplet's Z-pool over C): 0.34-0.95x its time at the
      ResNet-50 stage outputs (batch 2) of an 800x1333 image and the first
      three of a 320x320 one, 1.04-1.05x at its last (2x2048x10x10, 2^18.6
      elements) and at 2x256x100x100; on a block of 2^17 elements, where
      the steps' own overhead counts, 1.4-1.8x.
    """
    if x.device.type != 'cpu' or capturing_graph():
        return False
    n, width = x.shape[dim], x.shape[-1]
    if x.stride(dim) == 1:
        return n >= 4096
    # a strided dim: measured on maps of 2^19 elements or more, dense from
    # dim on
    if x.numel() < 1 << 19 or not x[(0, ) * dim].is_contiguous():
        return False
    if dim == x.dim() - 2:  # the rows of a map
        return n >= 64 and width >= 128 and width % 8 != 0
    return n >= 64


def max_with_index(x: torch.Tensor,
                   dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``x.max(dim, keepdim=True)``: the maxima and the index of the first
    maximum, where it pays (:func:`_two_step_max_pays`) in two steps.

    The dim is split into n1 groups of n2 = floor(sqrt(n)) (a view, the
    last n - n1 n2 elements aside): ``amax`` over each group, the fast
    kernel, reads x once; the first group holding the overall maximum is
    found among the n1 group maxima, and the first maximum within it among
    its n2 elements; the rest is compared on its own, the earlier index
    winning a tie. Values and indices equal ``torch.max``'s, ties and NaN
    included."""
    if not _two_step_max_pays(x, dim):
        return x.max(dim=dim, keepdim=True)
    n = x.shape[dim]
    n2 = math.isqrt(n)
    n1 = n // n2
    shape = list(x.shape)
    shape[dim:dim + 1] = [n1, n2]
    groups = x.narrow(dim, 0, n1 * n2).view(shape)  # (..., n1, n2, ...)
    group_max = groups.amax(dim + 1, keepdim=True)  # (..., n1, 1, ...)
    # argmax over a strided dim is the slow kernel too; on the n2 times
    # smaller group maxima a copy with that dim innermost pays (Triplet's
    # pool over H: 31 -> 9 ms; no copy where the dim is innermost already):
    # (..., n1, 1, ...) -> (..., 1, ..., n1)
    group = group_max.movedim(dim, -1).contiguous().argmax(
        -1, keepdim=True).movedim(-1, dim)  # (..., 1, 1, ...)
    shape[dim] = 1
    members = groups.gather(dim, group.expand(shape))  # (..., 1, n2, ...)
    values, member = members.max(dim + 1, keepdim=True)
    values = values.squeeze(dim + 1)
    indices = (group * n2 + member).squeeze(dim + 1)
    if n1 * n2 < n:
        rest, index = x.narrow(dim, n1 * n2, n - n1 * n2).max(
            dim=dim, keepdim=True)
        later = (rest > values) | (rest.isnan() & ~values.isnan())
        values = torch.where(later, rest, values)
        indices = torch.where(later, index + n1 * n2, indices)
    return values, indices


def _max_mean(x: torch.Tensor, dim: int, argmax: bool = True):
    """``cat[max, mean]`` over ``dim`` (keepdim) in at least fp32, and the
    argmax (None without ``argmax``: ``amax`` is the faster kernel)."""
    if argmax:
        values, indices = max_with_index(x, dim)
    else:
        values, indices = x.amax(dim=dim, keepdim=True), None
    mean = x.mean(dim=dim, keepdim=True, dtype=accumulate_dtype(x))
    return torch.cat([values.to(mean.dtype), mean], dim=dim), indices


def max_mean_pools(x: torch.Tensor,
                   dims: Tuple[int, ...],
                   handoff: Optional[GradientHandoff] = None
                   ) -> Tuple[torch.Tensor, ...]:
    """For each of ``dims``: max and mean over it, concatenated there
    (``[max; mean]``, size 2), in at least fp32. One dim: the pooling of
    CBAM's channel gate (over the flattened H x W) and the Z-pool (over
    channels); three: Triplet attention's Z-pools over H, W and C.

    The max's gradient goes to one maximal element, as with the official
    codes' ``F.max_pool2d`` / ``torch.max(x, dim)``; ``amax`` would split it
    among ties at the price of a full-size comparison mask in the backward.
    The gradients of all the poolings are written into one tensor, with
    x's strides (views welcome): the one a later function of the module
    hands over through ``handoff``, if any (x then x itself or a reshaping
    view of it in memory order, see :class:`GradientHandoff`).
    """
    dims = tuple(d % x.dim() for d in dims)
    if needs_grad(x):
        return _MaxMeanPool.apply(x, dims, handoff)
    # compiled: max with its argmax, so that the derived backward too sends
    # the gradient to one maximal element
    argmax = torch.compiler.is_compiling()
    return tuple(_max_mean(x, dim, argmax)[0] for dim in dims)


def max_mean_pool(x: torch.Tensor, dim: int,
                  handoff: Optional[GradientHandoff] = None) -> torch.Tensor:
    """:func:`max_mean_pools` over one dim."""
    return max_mean_pools(x, (dim, ), handoff)[0]


# --------------------------------------------------------------------------
# batch norm
# --------------------------------------------------------------------------
def batch_norm_state(
    bn: nn.BatchNorm2d
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], bool, float]:
    """The running statistics, whether the batch's statistics normalise,
    and the running-average factor, as ``bn``'s own forward passes them to
    ``F.batch_norm``; like it, counts the batch in ``num_batches_tracked``
    in train mode (``momentum=None``: cumulative average). For the modules
    that call ``torch.native_batch_norm`` themselves, to get the statistics
    with the output."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and \
            bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            factor = 1.0 / float(bn.num_batches_tracked)
    track = not bn.training or bn.track_running_stats
    running_mean = bn.running_mean if track else None
    running_var = bn.running_var if track else None
    use_batch_stats = bn.training or (bn.running_mean is None
                                      and bn.running_var is None)
    return running_mean, running_var, use_batch_stats, factor


def batch_norm_with_stats(
    x: torch.Tensor, weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor], eps: float,
    running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor],
    use_batch_stats: bool, factor: float
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch norm of ``x`` and the (C,) mean and inverse standard deviation
    that normalised it, in :func:`accumulate_dtype`.

    The last four arguments are :func:`batch_norm_state`'s. With batch
    statistics (train mode) they come from the same
    ``torch.native_batch_norm`` call as the output, which also updates the
    running statistics as ``nn.BatchNorm2d`` does; otherwise they are the
    running statistics. Like ``F.batch_norm``, refuses batch statistics of
    a single value per channel.
    """
    if use_batch_stats and x.numel() == x.shape[1]:
        raise ValueError('Expected more than 1 value per channel when '
                         f'training, got input size {x.size()}')
    out, mean, invstd = torch.native_batch_norm(x, weight, bias, running_mean,
                                                running_var, use_batch_stats,
                                                factor, eps)
    acc = accumulate_dtype(x)
    if use_batch_stats:
        return out, mean.to(acc), invstd.to(acc)
    # normalised by the running statistics
    return out, running_mean.to(acc), torch.rsqrt(running_var.to(acc) + eps)


# --------------------------------------------------------------------------
# channel scaling
# --------------------------------------------------------------------------
#: Elements of a block of channels that the hand-written backward passes
#: handle at a time on the CPU (:func:`channel_block_size`), so that a
#: block's temporaries stay in cache instead of each making a round trip to
#: memory.
CPU_BLOCK_NUMEL = 1 << 18

#: Elements of a block for an input of at least
#: :data:`MIN_LARGE_BLOCK_INPUT_NUMEL` elements, well beyond the last-level
#: cache: there the block's temporaries come from memory either way, and
#: half as many blocks halve the ops the passes dispatch per block (256
#: blocks of one channel at 2x256x200x334). Training passes on a 2-core AMD
#: EPYC with AVX2, 512 KiB of L2 per core and a 32 MiB L3 (interleaved,
#: five rounds), against :data:`CPU_BLOCK_NUMEL`: 0.87-0.99x for CBAM,
#: SimAM, NAM, Coordinate, BAM, Triplet, SE, ECA, GE and FcaNet at
#: 2x256x200x334, 0.93-0.99x at 2x512x100x167 (2^24.03 elements); at
#: 2x1024x50x84 (2^22) 0.97-1.06x, and up to 1.2-1.6x on maps that fit
#: in the L3, where blocks that fit in the L2 count. The bound is that of
#: :data:`MIN_BLOCKED_POOL_GRAD_NUMEL`, the same "beyond the cache", kept a
#: name of its own: the tests that cut tiny inputs into blocks set that one
#: to 0, which here would make every block large.
CPU_LARGE_BLOCK_NUMEL = 1 << 19
MIN_LARGE_BLOCK_INPUT_NUMEL = 1 << 24


def channel_block_size(x: torch.Tensor, factor: int = 1) -> int:
    """Channels (dim 1) per block of about ``factor`` x
    :data:`CPU_BLOCK_NUMEL` elements of ``x`` on the CPU, at least
    :data:`CPU_LARGE_BLOCK_NUMEL` for an ``x`` beyond the last-level cache;
    all channels on other devices, whose kernels do not gain from it."""
    channels = x.shape[1]
    if x.device.type != 'cpu':
        return channels
    numel = factor * CPU_BLOCK_NUMEL
    if x.numel() >= MIN_LARGE_BLOCK_INPUT_NUMEL:
        numel = max(numel, CPU_LARGE_BLOCK_NUMEL)
    return max(1, numel * channels // max(x.numel(), 1))


def channel_blocks(*tensors: Optional[torch.Tensor], factor: int = 1
                   ) -> Iterator[Tuple[Optional[torch.Tensor], ...]]:
    """The tensors split alike in dim 1 into blocks of
    :func:`channel_block_size` channels of the first: for the hand-written
    passes that keep a block's temporaries in cache (a pass that also runs
    many ops on small per-block statistics takes blocks ``factor`` times
    larger, trading some cache for fewer of those ops). A tensor with the
    first one's channels (full-size maps, (B, C, 1, 1) statistics, outputs
    to fill) is cut; one with a single channel (a (B, 1, H, W) map) comes
    whole with every block; None (an absent optional input, such as a
    residual) comes as None with every block."""
    size = channel_block_size(tensors[0], factor)
    channels = tensors[0].shape[1]
    present = [t for t in tensors if t is not None]
    if any(t.shape[1] not in (channels, 1) for t in present):
        raise ValueError(f'channel_blocks: dim 1 must be {channels} or 1, '
                         f'got {[tuple(t.shape) for t in present]}')
    return zip(*(itertools.repeat(t) if t is None or t.shape[1] != channels
                 else t.split(size, 1) for t in tensors))


def block_sum(block: torch.Tensor, dims: Sequence[int],
              dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``block.sum(dims, keepdim=True, dtype=dtype)`` for a block of
    :func:`channel_blocks`, leaving out the dims of size 1 there (a block of
    one channel is its own sum over channels; on the CPU that sum costs as
    much as an op with real work, some 80 us a 2^18-element block); with
    none left, the block itself (in ``dtype``, not copied where it has
    it)."""
    dims = [d for d in dims if block.shape[d] > 1]
    if not dims:  # (an empty dim list would sum over all dims)
        return block if dtype is None else block.to(dtype)
    return block.sum(dims, keepdim=True, dtype=dtype)


def row_blocks(x: torch.Tensor) -> Iterator[slice]:
    """Slices of dim 2 (rows) of a (B, C, H, W) ``x`` covering about
    :data:`CPU_BLOCK_NUMEL` elements each on the CPU, one slice elsewhere:
    for the hand-written passes that reduce over channels."""
    rows = x.shape[2]
    size = rows if x.device.type != 'cpu' else max(
        1, CPU_BLOCK_NUMEL * rows // max(x.numel(), 1))
    return (slice(start, start + size) for start in range(0, rows, size))


def _planes_contiguous(x: torch.Tensor) -> bool:
    """Whether each (sample, channel) H x W plane of ``x`` is one
    contiguous run of memory, so ``x.flatten(2)`` is a view."""
    return x.stride(3) == 1 and x.stride(2) == x.shape[3]


def per_channel_sums(
        grad: torch.Tensor,
        x: torch.Tensor,
        with_grad_sum: bool,
        affine: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(grad * x).sum((2, 3))`` and, if ``with_grad_sum``,
    ``grad.sum((2, 3))``, (B, C) each, without the full-size product.

    With ``affine = (w, b)``, (1, C) each, ``x`` is the source z of
    ``w * z + b`` (a BatchNorm's input, see :class:`NormInput`) and the
    first sum is that of ``grad * (w * z + b)``, i.e.
    :math:`w \\sum g z + b \\sum g`.

    One dot product per (sample, channel), a block of channels at a time on
    the CPU (:func:`channel_block_size`): the block of ``grad`` is read from
    memory once for both sums, and a batched matrix product would run
    B x C tiny ones (2-3x slower at detection shapes). Other layouts
    (channels_last) take one ``einsum``.
    """
    with_grad_sum = with_grad_sum or affine is not None
    if not (_planes_contiguous(grad) and _planes_contiguous(x)):
        dots = torch.einsum('bchw,bchw->bc', grad, x)
        sums = grad.sum((2, 3), dtype=accumulate_dtype(grad)) \
            if with_grad_sum else None
    else:
        dots = grad.new_empty(grad.shape[:2])  # (B, C)
        sums = grad.new_empty(grad.shape[:2], dtype=accumulate_dtype(grad))
        for g, v, dot, total in channel_blocks(grad, x, dots, sums):
            g = g.flatten(2)  # (B, C_block, H*W), a view
            torch.linalg.vecdot(g, v.flatten(2), out=dot)
            if with_grad_sum:
                torch.sum(g, 2, dtype=total.dtype, out=total)
        sums = sums if with_grad_sum else None
    if affine is not None:
        weight, bias = affine
        dots = dots.to(weight.dtype) * weight + sums.to(weight.dtype) * bias
    return dots, sums


class _ScaleChannels(torch.autograd.Function):
    """``x * scale (+ residual)`` for a (B, C, 1, 1) ``scale``, keeping for
    the backward either ``x`` or, when ``x = weight * source + bias`` per
    channel (the output of a BatchNorm whose input autograd keeps anyway),
    only that affine. Gradients, with upstream g:

    .. math::

        \\frac{\\partial L}{\\partial x} = g\\, s, \\qquad
        \\frac{\\partial L}{\\partial s_{bc}} = \\sum_{hw} g\\, x
        = w_c \\sum_{hw} g\\, z + b_c \\sum_{hw} g, \\qquad
        \\frac{\\partial L}{\\partial r} = g

    each sum one pass over memory, never a full-size product.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor,
                residual: Optional[torch.Tensor],
                source: Optional[torch.Tensor],
                weight: Optional[torch.Tensor],
                bias: Optional[torch.Tensor]) -> torch.Tensor:
        if source is None:
            ctx.save_for_backward(scale, x, None, None)
        else:
            ctx.save_for_backward(scale, source, weight, bias)
        return multiply_add(x, scale, residual)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        scale, source, weight, bias = ctx.saved_tensors
        grad_scale = None
        if ctx.needs_input_grad[1]:
            affine = None if weight is None else (weight, bias)
            grad_scale = per_channel_sums(grad, source, False, affine)[0]
            grad_scale = grad_scale.reshape(scale.shape).to(scale.dtype)
        grad_x = grad * scale if ctx.needs_input_grad[0] else None
        grad_residual = grad if ctx.needs_input_grad[2] else None
        return grad_x, grad_scale, grad_residual, None, None, None


def multiply_add(x: torch.Tensor, scale: torch.Tensor,
                 residual: Optional[torch.Tensor] = None,
                 out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x * scale``, or ``residual + x * scale`` in one pass (one write of
    the output instead of two), into ``out`` if given (a block of a larger
    output)."""
    if residual is None:
        return torch.mul(x, scale, out=out)
    return torch.addcmul(residual, x, scale, out=out)


NormInput = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def scale_channels(x: torch.Tensor,
                   scale: torch.Tensor,
                   norm_input: Optional[NormInput] = None,
                   residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x * scale``, the last step of every channel gate: (B, C, H, W) x
    (B, C, 1, 1); ``residual + x * scale`` in one pass when a residual
    block hands its shortcut as ``residual`` (the gate's product and the
    block's sum are then one write of the output instead of two).

    Under autograd the gradient of ``scale`` is one batched dot product
    per channel instead of a full-size product and a sum. ``norm_input =
    (z, w, b)``, with ``x = w * z + b`` per channel (``x`` a BatchNorm's
    output, ``z`` its input: see
    :func:`~mmattn.models.backbones.blocks.batch_norm_with_affine`), lets
    the backward keep ``z``, which the BatchNorm keeps anyway, instead of
    ``x``: a channel gate after the last norm of a residual block then adds
    no full-size tensor to the training memory. Without autograd (inference,
    tracing, export) it is the plain product (and sum).
    """
    if not needs_grad(x, scale):
        return multiply_add(x, scale, residual)
    if norm_input is None:
        return _ScaleChannels.apply(x, scale, residual, None, None, None)
    source, weight, bias = norm_input
    return _ScaleChannels.apply(x, scale, residual, source,
                                weight.view(1, -1), bias.view(1, -1))


class _ScaleByMaps(torch.autograd.Function):
    """:func:`scale_by_maps` under autograd: saves x and the small maps,
    never the full-size gate; forward and backward run a block of channels
    at a time (:func:`channel_block_size`), the gate rebuilt in cache. With
    :math:`m = (m_1 \\circ \\dots \\circ m_k) / d`, :math:`\\circ` the sum
    or the product, and upstream g:

    .. math::

        \\frac{\\partial L}{\\partial x} = g\\, m, \\qquad
        \\frac{\\partial L}{\\partial m_i} = \\frac{1}{d}
            \\sum_{\\text{dims } m_i \\text{ broadcasts over}} g\\, x\\,
            \\frac{\\partial (m_1 \\circ \\dots \\circ m_k)}{\\partial m_i}

    the last factor 1 for the sum, the product of the other maps for the
    product; a residual r added to the output gets g. With a
    :class:`GradientHandoff`, g m goes to it instead of being returned.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, divisor: float, product: bool,
                residual: Optional[torch.Tensor],
                handoff: Optional[GradientHandoff],
                *maps: torch.Tensor) -> torch.Tensor:
        ctx.divisor, ctx.product, ctx.handoff = divisor, product, handoff
        ctx.save_for_backward(x, *maps)
        return _scale_by_maps_in_blocks(x, maps, divisor, product, residual)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, *maps = ctx.saved_tensors
        grad_x = torch.empty_like(x)
        # a map without channels sums over all blocks: zeros to add into
        grad_maps = [m.new_zeros(m.shape) if m.shape[1] == 1 else
                     torch.empty_like(m) for m in maps]
        # the dims each map broadcasts over, summed in its gradient
        sum_dims = [[d for d in range(4) if m.shape[d] == 1 < x.shape[d]]
                    for m in maps]
        k = len(maps)
        # the divisor folded once into the small maps of a sum (the first
        # map of a product): one op less a block for the gate, which need
        # not be the forward's to the last bit (Triplet fwd+bwd 0.97x)
        gate_maps = list(maps)
        if ctx.divisor != 1:
            scaled = 1 if ctx.product else k
            gate_maps[:scaled] = [m / ctx.divisor for m in maps[:scaled]]
        for x_b, g_b, gx_b, *rest in channel_blocks(x, grad, grad_x, *maps,
                                                     *grad_maps, *gate_maps):
            maps_b, grads_b, gate_b = rest[:k], rest[k:2 * k], rest[2 * k:]
            torch.mul(g_b, _maps_gate(gate_b, 1, ctx.product, x.dtype),
                      out=gx_b)
            product = g_b * x_b  # (B, C_block, H, W)
            for i, (m, grad_m, dims) in enumerate(zip(maps_b, grads_b,
                                                      sum_dims)):
                factor = product
                if ctx.product and k > 1:  # times the other maps
                    others = maps_b[:i] + maps_b[i + 1:]
                    factor = product * _maps_gate(others, 1, True, x.dtype)
                part = block_sum(factor, dims, m.dtype)
                if 1 in dims:  # summed over all the blocks
                    grad_m.add_(part)
                else:
                    grad_m.copy_(part)
        if ctx.divisor != 1:  # once, after the blocks
            for grad_m in grad_maps:
                grad_m.div_(ctx.divisor)
        grad_residual = grad if ctx.needs_input_grad[3] else None
        if ctx.handoff is not None:
            ctx.handoff.grad, grad_x = grad_x, None
        return (grad_x, None, None, grad_residual, None, *grad_maps)


def _scale_by_maps_in_blocks(x: torch.Tensor, maps: Sequence[torch.Tensor],
                             divisor: float, product: bool,
                             residual: Optional[torch.Tensor]
                             ) -> torch.Tensor:
    """:func:`scale_by_maps` a block of channels at a time: the full-size
    gate only ever in cache, each element computed by the same operations
    as the plain product."""
    out = torch.empty_like(x)
    for x_b, out_b, r_b, *maps_b in channel_blocks(x, out, residual, *maps):
        multiply_add(x_b, _maps_gate(maps_b, divisor, product, x.dtype),
                     r_b, out=out_b)
    return out


def _maps_gate(maps: Sequence[torch.Tensor], divisor: float, product: bool,
               dtype: torch.dtype) -> torch.Tensor:
    """``(m_1 + ... + m_k) / divisor`` (or the product of the maps)
    broadcast, in ``dtype``: the eager modules' operations, so their
    results bit for bit."""
    gate = maps[0]
    for m in maps[1:]:
        gate = gate * m if product else gate + m
    if divisor != 1:
        gate = gate / divisor
    return gate.to(dtype)


def scale_by_maps(x: torch.Tensor,
                  maps: Sequence[torch.Tensor],
                  divisor: float = 1,
                  product: bool = False,
                  residual: Optional[torch.Tensor] = None,
                  handoff: Optional[GradientHandoff] = None) -> torch.Tensor:
    """``x * (maps[0] + maps[1] + ...) / divisor``, maps (in at least x's
    precision) broadcasting against x (B, C, H, W), e.g. Triplet
    attention's three branch maps; with ``product``, ``x * (maps[0] *
    maps[1] * ...) / divisor``, e.g. Coordinate attention's (B, C, H, 1)
    and (B, C, 1, W) gates, or CBAM's (B, C, 1, 1) and (B, 1, H, W) ones.
    ``residual + ...`` in the same pass when a residual block hands its
    shortcut as ``residual``.

    Under autograd (:class:`_ScaleByMaps`) training keeps x and the maps,
    not the full-size gate (or the partial products) autograd would keep,
    and the maps' gradients are summed a block of channels at a time
    without a full-size product; with a ``handoff`` (the module's pooling
    of x made the maps), the gradient of x goes to the pooling's backward
    to complete (:class:`GradientHandoff`). Inference too runs in channel
    blocks, with the same values; graph capture records the plain product.
    """
    if needs_grad(x, *maps):
        return _ScaleByMaps.apply(x, divisor, product, residual, handoff,
                                  *maps)
    if capturing_graph():
        return multiply_add(x, _maps_gate(maps, divisor, product, x.dtype),
                            residual)
    return _scale_by_maps_in_blocks(x, maps, divisor, product, residual)
