"""Convolutions with ``nn.Conv2d``'s parameters and state-dict keys that
run faster than oneDNN's kernels where those are slow on the CPU.

* :class:`PointwiseConv`: a 1x1 conv as ``linear`` on pooled descriptors and
  as one batched matrix product on large NCHW maps
  (:func:`pointwise_conv`);
* :func:`pointwise_convs`: several 1x1 convs of one input as one product of
  their concatenated weights (Non-local's, DANet's and CCNet's projections);
* :func:`few_channel_conv_layout`: channels-last on the CPU for convs over a
  few channels (BAM's spatial branch, the Z-pool gates).
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn

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
