"""Selective Kernel convolution (SK), a replacement for a block's 3x3 conv."""
from typing import ClassVar, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_norm_layer

from mmattn.models.common import (check_divisible, check_positive_int,
                                  reduced_channels, spatial_mean)
from mmattn.models.convs import PointwiseConv
from mmattn.registry import MODELS

IntPair = Union[int, Sequence[int]]


def _single(value: IntPair, name: str) -> int:
    """A square conv argument as one int (``build_conv_layer`` may pass a
    pair)."""
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise ValueError(f'{name} must be square, got {value!r}')
        value = value[0]
    return value


@MODELS.register_module()
class SKConv(nn.Module):
    """Selective Kernel convolution.

    `Selective Kernel Networks <https://arxiv.org/abs/1903.06586>`_ (Li et
    al., CVPR 2019), eqs. 1-6. M branches :math:`\\tilde{F}_m` (3x3 conv with
    dilation :math:`d_m` + BN + ReLU) see the same input; their sum is pooled
    and squeezed, and a softmax **across the branches** (per channel)
    selects among them:

    .. math::

        U = \\sum_m U_m, \\quad U_m = \\tilde{F}_m(X), \\quad
        s = \\mathrm{GAP}(U), \\quad
        z = \\delta(\\mathcal{B}(W_s s)), \\quad
        a_{m,c} = \\frac{e^{A_{m,c} z}}{\\sum_{m'} e^{A_{m',c} z}}, \\quad
        V_c = \\sum_m a_{m,c} U_{m,c}

    with :math:`W_s \\in \\mathbb{R}^{d \\times C}`,
    :math:`d = \\max(C/r, L)` (paper: r = 16, L = 32) and both FCs without
    bias, as in timm and PytorchInsight (a BN follows :math:`W_s`). The
    pooled statistics and the softmax run in fp32 under autocast.

    It has the signature of a conv layer, so ``build_conv_layer`` builds it
    from ``dict(type='SKConv', ...)`` in place of a block's strided 3x3 conv
    (``AttentionResNet(attn_conv=...)``); the stride, the stage dilation
    (multiplied into every branch's :math:`d_m`) and the block's groups come
    from the block. Each branch already ends in BN + ReLU, so the block
    drops its own norm and activation after this conv
    (``includes_norm_act = True``), as in the paper's SK unit.

    Three published configurations (the presets pick them):

    * **SKNet-50** (paper, official Caffe model ``sknet50.prototxt``, timm
      ``skresnext50_32x4d``): ResNeXt-50 32x4d with ``dilations=(1, 2)``,
      both branches with the block's 32 groups, ``rd_ratio=1/16``,
      ``min_channels=32``.
    * **SK-ResNet50*** (implus/PytorchInsight ``resnet_sk.py``, 26.15M):
      a dense 3x3 and a 32-group 3x3, both dilation 1:
      ``dilations=(1, 1), branch_groups=(1, 32), rd_ratio=1/16,
      min_channels=1``.
    * **timm SK-ResNet-18/34** (``skresnet18/34``): replaces a BasicBlock's
      conv1; the input channels are split between the branches
      (``split_input=True``), ``dilations=(1, 2)``, ``rd_ratio=1/8``,
      ``rd_divisor=16``.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels C.
        kernel_size (int): Must be 3 (every branch is a 3x3; larger
            receptive fields come from dilation, as in the paper).
        stride (int): Stride of every branch. Default: 1.
        padding (int): Ignored: each branch pads by its own dilation so the
            output keeps the strided size. Accepted for the conv signature.
        dilation (int): Stage dilation, multiplied into each branch's
            ``dilations``. Default: 1.
        groups (int): Groups of the block's conv (ResNeXt cardinality),
            used by every branch unless ``branch_groups`` is given.
            Default: 1.
        bias (bool): Must be False (the branches end in BN).
        dilations (Sequence[int]): :math:`d_m` per branch; the number of
            branches M is its length. Default: (1, 2) (paper: 3x3 and
            3x3 dilated 2, i.e. a 5x5 receptive field).
        branch_groups (Sequence[int], optional): Groups per branch,
            overriding ``groups``. Default: None.
        split_input (bool): Feed each branch 1/M of the input channels
            (timm). Default: False (paper).
        rd_ratio (float): 1/r of the squeeze FC. Default: 1/16.
        rd_channels (int, optional): Explicit d. Default: None.
        rd_divisor (int): Round d to a multiple of this. Default: 1.
        min_channels (int): L, the lower bound of d. Default: 32 (paper).
        norm_cfg (dict): Norm of the branches and the squeeze.
            Default: ``dict(type='BN')``.
        act_cfg (dict): Activation of the branches and the squeeze.
            Default: ``dict(type='ReLU')``.
    """

    includes_norm_act: ClassVar[bool] = True

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: IntPair = 3,
                 stride: IntPair = 1,
                 padding: IntPair = 1,
                 dilation: IntPair = 1,
                 groups: int = 1,
                 bias: bool = False,
                 dilations: Sequence[int] = (1, 2),
                 branch_groups: Optional[Sequence[int]] = None,
                 split_input: bool = False,
                 rd_ratio: float = 1 / 16,
                 rd_channels: Optional[int] = None,
                 rd_divisor: int = 1,
                 min_channels: int = 32,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU')) -> None:
        super().__init__()
        if _single(kernel_size, 'kernel_size') != 3:
            raise ValueError(f'kernel_size must be 3 (SK branches are 3x3 '
                             f'convs with dilation), got {kernel_size!r}')
        if bias:
            raise ValueError('bias must be False: SK branches end in a norm')
        stride = _single(stride, 'stride')
        dilation = _single(dilation, 'dilation')
        num_branches = len(dilations)
        if num_branches < 2:
            raise ValueError(f'dilations must name at least 2 branches, got '
                             f'{dilations!r}')
        for d in dilations:
            check_positive_int(d, 'dilations')
        if branch_groups is None:
            branch_groups = (groups, ) * num_branches
        if len(branch_groups) != num_branches:
            raise ValueError(f'branch_groups must have one entry per branch '
                             f'({num_branches}), got {branch_groups!r}')
        branch_in = in_channels
        if split_input:
            check_divisible(in_channels, num_branches, 'in_channels',
                            'number of branches (len(dilations))')
            branch_in = in_channels // num_branches
        for g in branch_groups:
            check_positive_int(g, 'branch_groups')
            check_divisible(branch_in, g, 'branch input channels',
                            'branch_groups')
            check_divisible(out_channels, g, 'out_channels', 'branch_groups')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = (stride, stride)
        self.split_input = split_input
        self.num_branches = num_branches

        self.branches = nn.ModuleList(
            ConvModule(branch_in, out_channels, 3, stride=stride,
                       padding=dilation * d, dilation=dilation * d, groups=g,
                       bias=False, norm_cfg=norm_cfg, act_cfg=act_cfg)
            for d, g in zip(dilations, branch_groups))
        attn_channels = reduced_channels(out_channels, rd_ratio, rd_channels,
                                         rd_divisor, min_channels)
        # fc_reduce (W_s) + BN + ReLU, then fc_select (A_1..A_M stacked).
        self.fc_reduce = PointwiseConv(out_channels, attn_channels,
                                        bias=False)
        self.norm_name, norm = build_norm_layer(norm_cfg, attn_channels)
        self.add_module(self.norm_name, norm)
        self.act = nn.ReLU(inplace=True)
        self.fc_select = PointwiseConv(attn_channels,
                                        out_channels * num_branches,
                                        bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split_input:
            inputs = torch.chunk(x, self.num_branches, dim=1)
        else:
            inputs = (x, ) * self.num_branches
        # (B, M, C, H, W)
        u = torch.stack([f(i) for f, i in zip(self.branches, inputs)], dim=1)
        s = spatial_mean(u, dims=(3, 4)).sum(dim=1).to(x.dtype)  # (B, C, 1, 1)
        z = self.act(getattr(self, self.norm_name)(self.fc_reduce(s)))
        logits = self.fc_select(z)  # (B, M*C, 1, 1)
        b, _, c = u.shape[:3]
        logits = logits.view(b, self.num_branches, c, 1, 1)
        # softmax across the branches, per channel, in fp32
        a = torch.softmax(logits.float(), dim=1).to(u.dtype)  # (B, M, C, 1, 1)
        return (u * a).sum(dim=1)  # (B, C, H', W')
