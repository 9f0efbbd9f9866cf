"""Pyramid Split Attention (PSA, EPSANet), a replacement for a block's 3x3
conv."""
from typing import ClassVar, Optional, Sequence

import torch
import torch.nn as nn

from mmattn.models.common import (check_divisible, check_odd_kernel,
                                  reduced_channels, spatial_mean)
from mmattn.models.convs import PointwiseConv
from mmattn.registry import MODELS
from .sk import IntPair, _single


class _SEWeight(nn.Module):
    """The SE weight of one split: sigmoid(W2 relu(W1 GAP(x) + b1) + b2),
    returned (not applied), shape (B, C', 1, 1)."""

    def __init__(self, channels: int, rd_channels: int) -> None:
        super().__init__()
        self.fc1 = PointwiseConv(channels, rd_channels)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = PointwiseConv(rd_channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = spatial_mean(x).to(x.dtype)  # (B, C', 1, 1)
        return torch.sigmoid(self.fc2(self.act(self.fc1(z))))


@MODELS.register_module()
class PSAConv(nn.Module):
    """Pyramid Split Attention convolution (the PSA module of EPSANet).

    `EPSANet: An Efficient Pyramid Squeeze Attention Block on Convolutional
    Neural Network <https://arxiv.org/abs/2105.14447>`_ (Zhang et al.,
    2021), eqs. 3-9, and the official ``PSAModule``
    (murufeng/EPSANet ``models/epsanet.py``). S = 4 convs with kernels
    :math:`k_i` and groups :math:`G_i` each map the whole input to C/S
    channels (SPC); **one shared** SE weight module scores every split; a
    softmax **across the S scales** (per channel) recalibrates them:

    .. math::

        F_i = \\mathrm{Conv}_{k_i \\times k_i, G_i}(X), \\quad
        Z_i = \\mathrm{SEWeight}(F_i), \\quad
        \\mathrm{att}_i = \\frac{e^{Z_i}}{\\sum_j e^{Z_j}}, \\quad
        Y = \\mathrm{Cat}([\\mathrm{att}_i \\odot F_i])

    SEWeight is GAP -> 1x1 conv (C/S -> C/(S r), bias) -> ReLU -> 1x1 conv
    (bias) -> sigmoid, r = 16. Note the softmax runs over sigmoid outputs,
    as in the paper and code.

    **Concatenation order.** The paper writes :math:`Cat([Z_1, ..., Z_S])`;
    the official code concatenates in reverse (``cat((x_i, out))`` gives
    :math:`F_4, F_3, F_2, F_1`). The two differ only by a permutation of the
    next layer's input channels; ``reverse_concat=True`` (default) follows
    the code so that official EPSANet checkpoints load unchanged.

    It has the signature of a conv layer, so ``build_conv_layer`` builds it
    in place of a Bottleneck's conv2 (``AttentionResNet(attn_conv=...)``);
    the block keeps its BN + ReLU after it (``includes_norm_act = False``),
    as ``EPSABlock`` does. The stride comes from the block; a stage
    dilation d dilates every branch (padding d * (k // 2)).

    EPSANet-50 (small), 22.56M with the 1000-class head, is
    ``kernels=(3, 5, 7, 9), branch_groups=(1, 4, 8, 16)`` (defaults).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels C (divisible by S).
        kernel_size (int): Must be 3, the conv this module replaces.
        stride (int): Stride of every branch. Default: 1.
        padding (int): Ignored (each branch pads by its own kernel).
        dilation (int): Stage dilation of every branch. Default: 1.
        groups (int): Must be 1 (the branches have their own groups).
        bias (bool): Must be False (a norm follows).
        kernels (Sequence[int]): Odd kernel :math:`k_i` per split; S is its
            length. Default: (3, 5, 7, 9).
        branch_groups (Sequence[int]): :math:`G_i` per split.
            Default: (1, 4, 8, 16).
        rd_ratio (float): 1/r of the shared SE weight module. Default: 1/16.
        rd_channels (int, optional): Explicit SE width. Default: None.
        reverse_concat (bool): Concatenate the splits in reverse order, as
            the official code. Default: True.
    """

    includes_norm_act: ClassVar[bool] = False

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: IntPair = 3,
                 stride: IntPair = 1,
                 padding: IntPair = 1,
                 dilation: IntPair = 1,
                 groups: int = 1,
                 bias: bool = False,
                 kernels: Sequence[int] = (3, 5, 7, 9),
                 branch_groups: Sequence[int] = (1, 4, 8, 16),
                 rd_ratio: float = 1 / 16,
                 rd_channels: Optional[int] = None,
                 reverse_concat: bool = True) -> None:
        super().__init__()
        if _single(kernel_size, 'kernel_size') != 3:
            raise ValueError(f'kernel_size must be 3 (PSA replaces a 3x3 '
                             f'conv), got {kernel_size!r}')
        if groups != 1:
            raise ValueError(f'groups must be 1 (set branch_groups), got '
                             f'{groups!r}')
        if bias:
            raise ValueError('bias must be False: a norm follows PSA')
        stride = _single(stride, 'stride')
        dilation = _single(dilation, 'dilation')
        if len(branch_groups) != len(kernels):
            raise ValueError(f'branch_groups must have one entry per kernel '
                             f'({len(kernels)}), got {branch_groups!r}')
        self.num_splits = len(kernels)
        check_divisible(out_channels, self.num_splits, 'out_channels',
                        'number of splits (len(kernels))')
        split = out_channels // self.num_splits
        for k, g in zip(kernels, branch_groups):
            check_odd_kernel(k, 'kernels')
            check_divisible(in_channels, g, 'in_channels', 'branch_groups')
            check_divisible(split, g, 'out_channels / len(kernels)',
                            'branch_groups')
        self.stride = (stride, stride)
        self.reverse_concat = reverse_concat
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, split, k, stride=stride,
                      padding=dilation * (k // 2), dilation=dilation,
                      groups=g, bias=False)
            for k, g in zip(kernels, branch_groups))
        self.se = _SEWeight(split, reduced_channels(split, rd_ratio,
                                                    rd_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = torch.stack([conv(x) for conv in self.convs],
                            dim=1)  # (B, S, C/S, H', W')
        b, s, c, h, w = feats.shape
        # the shared SE scores every split: fold S into the batch
        z = self.se(feats.reshape(b * s, c, h, w)).view(b, s, c, 1, 1)
        att = torch.softmax(z.float(), dim=1).to(feats.dtype)
        out = feats * att  # (B, S, C/S, H', W')
        if self.reverse_concat:
            out = out.flip(1)
        return out.reshape(b, s * c, h, w)  # (B, C, H', W')
