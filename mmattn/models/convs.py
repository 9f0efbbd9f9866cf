"""Convolutions with ``nn.Conv2d``'s parameters and state-dict keys that
run faster than oneDNN's kernels where those are slow on the CPU.

* :class:`PointwiseConv`: a 1x1 conv as ``linear`` on pooled descriptors and
  as one batched matrix product on large NCHW maps
  (:func:`pointwise_conv`);
* :func:`pointwise_convs`: several 1x1 convs of one input as one product of
  their concatenated weights (Non-local's, DANet's and CCNet's projections);
* :func:`few_channel_conv_layout`: channels-last on the CPU for convs over a
  few channels (BAM's spatial branch, the Z-pool gates), and
  :func:`pointwise_conv_channels_last`, a 1x1 conv that writes that layout;
* :class:`ShiftedGemmConv2d`: a conv whose CPU weight gradient is k x k
  matrix products over shifted views (:func:`shifted_gemm_weight_grad`;
  BAM's dilated 3x3 convs).
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.autograd.function import FunctionCtx, once_differentiable

from mmattn.models.common import capturing_graph, nchw_or_channels_last
from mmattn.registry import MODELS


@MODELS.register_module()
class PointwiseConv(nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` (same ``weight`` (C', C, 1, 1), ``bias`` and
    state-dict keys) that runs as a matrix product where oneDNN's
    convolution is slow:

    * a (B, C, 1, 1) pooled descriptor: ``F.linear`` on (B, C), on any
      device (the FCs of SE, SK, EPSA, GE and GC's transform);
    * a contiguous (NCHW) map of at least ``MIN_GEMM_POSITIONS`` positions
      on the CPU: one batched product :math:`W x` of W (C', C) and x
      (B, C, HW) (``baddbmm``; BAM's spatial branch, the projections of
      DANet, CCNet and Non-local).

    Anything else (channels-last maps, small maps, CUDA) runs the
    convolution, which is fast there, and so do tracing and ONNX export
    (``torch.compile`` keeps the product). The result is the convolution's up
    to rounding. On this project's 2-core CPU, forward + backward: 2-4x
    faster on a descriptor (oneDNN pays a fixed cost that a 1 x 1 map does
    not amortise; 2-3% of a ResNet-50 train step with SE or GC), and on an
    NCHW map 1.1-3.5x faster from 64 x 64 positions up (oneDNN's NCHW
    kernel for few output channels is the slow case: 256 -> 16 channels at
    2x256x200x334, 404 ms against 169 ms), slower below that.

    The constructor takes ``nn.Conv2d``'s arguments, so that mmcv's
    ``ConvModule`` can build it by name (``conv_cfg=dict(type=
    'PointwiseConv')``); every argument but the channels and ``bias`` must
    keep its 1x1 value.

    Args:
        in_channels (int): C.
        out_channels (int): C'.
        kernel_size (int | tuple): Must be 1. Default: 1.
        stride, padding, dilation, groups: Must be 1, 0, 1, 1.
        bias (bool): Add a learnable bias. Default: True.
    """

    MIN_GEMM_POSITIONS = 64 * 64

    def __init__(self, in_channels: int, out_channels: int,
                 kernel_size=1, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True) -> None:
        for name, value, plain in (('kernel_size', kernel_size, 1),
                                   ('stride', stride, 1),
                                   ('padding', padding, 0),
                                   ('dilation', dilation, 1),
                                   ('groups', groups, 1)):
            pair = tuple(value) if isinstance(value, (tuple, list)) else (
                value, value)
            if pair != (plain, plain):
                raise ValueError(f'PointwiseConv is a plain 1x1 conv: '
                                 f'{name} must be {plain}, got {value!r}')
        super().__init__(in_channels, out_channels, 1, bias=bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> 'PointwiseConv':
        """A ``PointwiseConv`` holding ``conv``'s own parameters (a 1x1,
        ungrouped, unpadded ``nn.Conv2d`` built by other code)."""
        if type(conv) is not nn.Conv2d or not is_plain_pointwise(conv):
            raise ValueError(f'PointwiseConv.from_conv: conv must be a '
                             f'plain 1x1 nn.Conv2d, got {conv!r}')
        new = cls(conv.in_channels, conv.out_channels,
                  bias=conv.bias is not None)
        new.weight, new.bias = conv.weight, conv.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return super().forward(x)
        return pointwise_conv(x, self.weight, self.bias)


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor,
                   bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The 1x1 convolution of a (B, C, H, W) ``x`` with ``weight``
    (C', C, 1, 1), as :class:`PointwiseConv` runs it."""
    b, c, h, w = x.shape
    matrix = weight.flatten(1)  # (C', C)
    if h == 1 and w == 1:
        # (B, C, 1, 1) -> (B, C) -> (B, C') -> (B, C', 1, 1)
        return nn.functional.linear(x.flatten(1), matrix, bias)[:, :, None,
                                                                None]
    if (x.device.type != 'cpu' or not x.is_contiguous()
            or h * w < PointwiseConv.MIN_GEMM_POSITIONS
            or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
        # (an exported graph keeps the conv: one op, for any input size)
        return nn.functional.conv2d(x, weight, bias)
    matrix = matrix.expand(b, *matrix.shape)  # (B, C', C)
    flat = x.view(b, c, h * w)  # (B, C, HW)
    out = (torch.bmm(matrix, flat) if bias is None else torch.baddbmm(
        bias[:, None], matrix, flat))  # (B, C', HW)
    return out.view(b, -1, h, w)


def is_plain_pointwise(conv: nn.Module) -> bool:
    """Whether ``conv`` is an ``nn.Conv2d`` or :class:`PointwiseConv` that
    computes a plain 1x1 convolution (stride 1, no padding, dilation 1, one
    group); a subclass with a forward of its own (a weight-standardised
    conv, say) is not."""
    return (type(conv) in (nn.Conv2d, PointwiseConv)
            and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.dilation == (1, 1)
            and conv.groups == 1)


def pointwise_convs(x: torch.Tensor,
                    convs: Sequence[nn.Conv2d]) -> torch.Tensor:
    """The outputs of several plain 1x1 convs (:func:`is_plain_pointwise`)
    of the same x, concatenated along channels, as one
    :func:`pointwise_conv` with their weights concatenated: x is read once
    and, in training, its gradient written once (separate convs write one
    each, which autograd then sums)."""
    weight = torch.cat([conv.weight for conv in convs])  # (sum C_i, C, 1, 1)
    bias = None
    if any(conv.bias is not None for conv in convs):
        bias = torch.cat([
            conv.weight.new_zeros(conv.out_channels)
            if conv.bias is None else conv.bias for conv in convs
        ])
    return pointwise_conv(x, weight, bias)


def few_channel_conv_layout(x: torch.Tensor) -> torch.Tensor:
    """x laid out for a convolution over few channels: channels-last on the
    CPU, where oneDNN runs such convs 2-3.5x faster forward + backward than
    in NCHW (BAM's dilated 3x3 convs on C/r channels, the Z-pool gates' 7x7
    conv 2 -> 1), contiguous elsewhere; one copy unless x is already so."""
    memory_format = (torch.channels_last if x.device.type == 'cpu' else
                     torch.contiguous_format)
    return x.contiguous(memory_format=memory_format)


def pointwise_conv_channels_last(
        x: torch.Tensor, weight: torch.Tensor,
        bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`pointwise_conv` laid out by :func:`few_channel_conv_layout`
    (the reduction into BAM's spatial branch). On the CPU, for an NCHW or
    channels-last x of at least ``PointwiseConv.MIN_GEMM_POSITIONS``
    positions, one batched product :math:`x^\\top W^\\top` of x
    (B, HW, C) and W (C, C'), which writes channels-last directly and is
    the faster orientation of the product: 25 against 34 ms for 256 -> 16
    channels at 2x256x200x334 on this project's CPU, the same result to
    the bit, and no layout copy after it. Not where autograd is to derive
    x's gradient (a hand-written backward such as BAM's takes the product
    without it): its backward of this product writes that gradient
    transposed, 3x slower."""
    b, c, h, w = x.shape
    if (x.device.type != 'cpu' or not nchw_or_channels_last(x)
            or (x.requires_grad and torch.is_grad_enabled())
            or h * w < PointwiseConv.MIN_GEMM_POSITIONS
            or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
        return few_channel_conv_layout(pointwise_conv(x, weight, bias))
    rows = x.flatten(2).transpose(1, 2)  # (B, HW, C), a view in either
    matrix = weight.flatten(1).t().expand(b, -1, -1)  # (B, C, C')
    out = (torch.bmm(rows, matrix) if bias is None else torch.baddbmm(
        bias, rows, matrix))  # (B, HW, C')
    # (B, HW, C') -> (B, H, W, C') -> (B, C', H, W), channels-last
    return out.view(b, h, w, -1).permute(0, 3, 1, 2)


@MODELS.register_module()
class ShiftedGemmConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (same arguments, parameters and state-dict keys)
    whose weight gradient on the CPU is :func:`shifted_gemm_weight_grad`'s
    k x k matrix products instead of oneDNN's kernel, where that pays: a
    stride-1, ungrouped, zero-padded conv that keeps the width, of at least
    ``MIN_CHANNELS`` input and output channels on a map of at least
    ``MIN_POSITIONS`` positions, in fp32 or fp64 without autocast, outside
    graph capture. The forward and the input gradient stay oneDNN's;
    anything else runs ``nn.Conv2d`` as is.

    On this project's 2-core CPU, oneDNN's weight gradient of a
    channels-last 3x3 conv of 16 channels or more is its slow case: at
    BAM's dilated (d = 4) convs, 16 -> 16 channels on 2 x 200 x 334 it
    takes 45-56 ms, 8-10x the conv's forward. The products take 0.37x its
    time there, 0.53x at 32 channels on 2 x 100 x 167, 0.64x at 64 on
    2 x 50 x 84, 0.80x at 16 on 2 x 80 x 80 (0.6-0.8x at 32 and 64
    channels on 2 x 64 x 64, 1.2x at 16: the boundary). Below 64 x 64
    positions their fixed cost loses (1.2-2.6x on 40 x 40 and 20 x 20
    maps), and so do fewer channels (1.4x at 8, 3x for the Z-pool's
    7x7 2 -> 1).
    """

    MIN_CHANNELS = 16
    MIN_POSITIONS = 64 * 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._shifted_gemm_pays(x):
            return super().forward(x)
        return _ShiftedGemmConv2dFunction.apply(x, self.weight, self.bias,
                                                self.padding, self.dilation)

    def _shifted_gemm_pays(self, x: torch.Tensor) -> bool:
        if (isinstance(self.padding, str) or self.stride != (1, 1)
                or self.groups != 1 or self.padding_mode != 'zeros'
                or x.dim() != 4):
            return False
        return (_keeps_width(x.shape[3], self.kernel_size[1],
                             self.padding[1], self.dilation[1])
                and x.device.type == 'cpu'
                and x.dtype in (torch.float32, torch.float64)
                and self.weight.requires_grad and torch.is_grad_enabled()
                and not torch.is_autocast_enabled('cpu')
                and min(self.in_channels, self.out_channels)
                >= self.MIN_CHANNELS
                and x.shape[2] * x.shape[3] >= self.MIN_POSITIONS
                and not capturing_graph())


class _ShiftedGemmConv2dFunction(torch.autograd.Function):
    """A stride-1, ungrouped conv: forward and input gradient by
    ``conv2d`` and its backward, weight gradient by
    :func:`shifted_gemm_weight_grad`, bias gradient the sum of the upstream
    one over (B, H, W)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor,
                bias: Optional[torch.Tensor], padding: Tuple[int, int],
                dilation: Tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation = padding, dilation
        return nn.functional.conv2d(x, weight, bias, 1, padding, dilation)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, (1, 1), ctx.padding, ctx.dilation,
                False, (0, 0), 1, (True, False, False))[0]
        if ctx.needs_input_grad[1]:
            grad_w = shifted_gemm_weight_grad(x, grad, weight.shape[2:],
                                              ctx.padding, ctx.dilation)
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None


def _keeps_width(width: int, kernel_size: int, padding: int,
                 dilation: int) -> bool:
    """Whether a stride-1 conv's output keeps the input's width (2 p = d
    (k - 1)), on a map wider than the padding: the convs whose taps
    :func:`shifted_gemm_weight_grad` reads as shifted runs of rows."""
    return 2 * padding == dilation * (kernel_size - 1) and width > padding


def shifted_gemm_weight_grad(x: torch.Tensor, grad: torch.Tensor,
                             kernel_size: Sequence[int],
                             padding: Sequence[int],
                             dilation: Sequence[int]) -> torch.Tensor:
    """The weight gradient (C', C, k_h, k_w) of a stride-1, ungrouped conv
    of x (B, C, H, W), zero-padded, whose output (B, C', H', W) keeps the
    width (:math:`2 p_w = d_w (k_w - 1)`), from the upstream gradient g:

    .. math::

        \\frac{\\partial L}{\\partial w_{:, :, i, j}} = \\sum_{b, y, v}
        g_{b, :, y, v}\\, x_{b, :, y + r_i, v + q_j}^\\top, \\quad
        r_i = i d_h - p_h, \\; q_j = j d_w - p_w

    (terms outside x are zero). In the (B, HW, C) rows of channels-last x
    and (B, H'W, C') of g, a tap's positions are a *contiguous* run shifted
    by :math:`r_i W + q_j`, so each tap is one batched (C' x C) matrix
    product of two views (no im2col, no padded copy), over the output rows
    whose input row exists. Where :math:`q_j \\ne 0` the run also pairs
    the :math:`|q_j|` columns at one edge of each row with the other edge
    of the next (or previous) row; those products are subtracted. x and g
    are read in place if channels-last (copied to it otherwise).
    """
    b, c, h, w = x.shape
    c_out, h_out, w_out = grad.shape[1:]
    (k_h, k_w), (p_h, p_w), (d_h, d_w) = kernel_size, padding, dilation
    if w_out != w or not _keeps_width(w, k_w, p_w, d_w):
        raise ValueError(
            f'shifted_gemm_weight_grad needs a conv that keeps the width '
            f'(2 * padding = dilation * (kernel_size - 1)) of a map wider '
            f'than its padding; got width {w} -> {w_out}, kernel_size '
            f'{k_w}, padding {p_w}, dilation {d_w}')
    x_map = x.permute(0, 2, 3, 1)  # (B, H, W, C)
    g_map = grad.permute(0, 2, 3, 1)  # (B, H', W, C')
    x_rows = x_map.reshape(b, h * w, c)  # a view if x is channels-last
    g_rows = g_map.reshape(b, h_out * w, c_out)
    out = x.new_empty(c_out, k_h, k_w, c)
    for i in range(k_h):
        r = i * d_h - p_h
        y0, y1 = max(0, -r), min(h_out, h - r)  # rows y with 0 <= y+r < H
        for j in range(k_w):
            q = j * d_w - p_w
            shift = r * w + q
            n0, n1 = max(y0 * w, -shift), min(y1 * w, h * w - shift)
            tap = out[:, i, j]  # (C', C)
            if n1 <= n0:
                tap.zero_()
                continue
            # (B, C', n) @ (B, n, C) -> (B, C', C), summed over B
            torch.sum(torch.bmm(g_rows[:, n0:n1].transpose(1, 2),
                                x_rows[:, n0 + shift:n1 + shift]), 0,
                      out=tap)
            if q > 0:  # columns W - q.. of row y met row y + r + 1's 0..q-1
                ya, yb = y0, min(y1, h - r - 1)
                g_wrap = g_map[:, ya:yb, w - q:]
                x_wrap = x_map[:, ya + r + 1:yb + r + 1, :q]
            elif q < 0:  # columns ..-q-1 met row y + r - 1's last -q
                ya, yb = max(y0, 1 - r), y1
                g_wrap = g_map[:, ya:yb, :-q]
                x_wrap = x_map[:, ya + r - 1:yb + r - 1, w + q:]
            if q != 0 and yb > ya:  # (C', rows) @ (rows, C), small copies
                tap.sub_(g_wrap.reshape(-1, c_out).t()
                         @ x_wrap.reshape(-1, c))
    return out.permute(0, 3, 1, 2).contiguous()  # (C', C, k_h, k_w)
