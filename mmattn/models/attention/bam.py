"""Bottleneck Attention Module (BAM)."""
from typing import Optional

import torch
import torch.nn as nn
from torch.autograd.function import FunctionCtx, once_differentiable

from mmattn.models.common import (ActLayer, channel_blocks, check_choice,
                                  check_positive_int, create_act, needs_grad,
                                  reduced_channels, spatial_mean)
from mmattn.registry import MODELS
from .base import AttentionModule


@MODELS.register_module()
class BAM(AttentionModule):
    """Bottleneck Attention Module.

    `BAM: Bottleneck Attention Module <https://arxiv.org/abs/1807.06514>`_
    (Park et al., BMVC 2018), official code
    ``Jongchan/attention-module`` ``MODELS/bam.py``. A channel branch and a
    spatial branch, in parallel, combined into one residual attention map:

    .. math::

        M_c = W_1\\,\\delta(\\mathrm{BN}(W_0\\,\\mathrm{GAP}(x) + b_0)) + b_1
        \\in \\mathbb{R}^{C \\times 1 \\times 1},

        M_s = f_3^{1\\times1}(g_2(g_1(g_0(x))))
        \\in \\mathbb{R}^{1 \\times H \\times W}, \\quad
        g_i = \\delta \\circ \\mathrm{BN} \\circ f_i,

        y = x \\otimes \\big(1 + \\sigma(M_c \\circledast M_s)\\big)

    with :math:`W_0: C \\to C/r` (r = 16), :math:`f_0: C \\to C/r` (1x1),
    :math:`f_1, f_2` 3x3 convs of dilation d = 4 (padding 4) on C/r
    channels, :math:`f_3: C/r \\to 1` (1x1); every FC and conv has a bias,
    as in the official code (3 BAMs at 256, 512, 1024 channels: 358,067
    parameters, which is PytorchInsight's BAM-ResNet-50 25.92M). The BN
    layers sit where the official code puts them, after each hidden layer;
    the paper's eqs. 3-4 instead write one BN on each branch's output,
    :math:`M_c = \\mathrm{BN}(W_1(W_0\\,\\mathrm{GAP}(x) + b_0) + b_1)` and
    :math:`M_s = \\mathrm{BN}(f_3(f_2(f_1(f_0(x)))))`. The code's layout is
    the one the released checkpoint and the published parameter counts
    have, and it is the only one provided.

    **Combination** :math:`\\circledast`: ``combine='sum'`` (default) is the
    paper's :math:`M(x) = \\sigma(M_c + M_s)`, broadcast to C x H x W,
    which its ablation of combining methods finds best; ``'product'`` is
    what the official code computes (``1 + sigmoid(channel_att *
    spatial_att)``) and what its released checkpoint was trained with
    (raised in the repo's issues #1, #39, #52, never changed). The paper is
    the default because it is the documented design; use ``'product'`` to
    reproduce or load the released model.

    **Channel normalisation.** The official channel branch applies
    BatchNorm1d to the pooled (B, C/r) vectors, which cannot train on one
    image; in train mode with batch 1 this module raises a ValueError.
    ``channel_norm='LN'`` (LayerNorm over C/r) or None (no norm) trains on
    any batch, at the cost of departing from the official design.

    **Init** (the official ResNet's state-dict loop, in :meth:`init_weights`):
    convs ``kaiming_normal_`` (fan_out), BN weights 1, every bias 0 (FCs
    included); the FC weights keep PyTorch's default init.

    The official channel branch pools with ``avg_pool2d(x, H)``, a square
    H x H window that is only global on square maps; here it is a true
    global average over H x W, so any map size works.

    Position: between stages, one BAM after each of stages 1-3 of a ResNet
    (``default_position = 'after_stage'``, placed by a backbone). As a
    plugin it also works at any block position, since it keeps the shape.

    Args:
        in_channels (int): Channels C of the input.
        rd_ratio (float): Reduction 1/r of both branches. Default: 1/16.
        rd_channels (int, optional): Explicit reduced width; overrides
            ``rd_ratio``. Default: None.
        rd_divisor (int): Round the reduced width to a multiple of this.
            Default: 1, the paper's plain C/r.
        dilation (int): Dilation d (and padding) of the 3x3 convs.
            Default: 4.
        num_dilated_convs (int): Number of dilated 3x3 conv-BN-act layers
            (>= 0). Default: 2.
        combine (str): 'sum' (paper, default) or 'product' (official code).
        channel_norm (str, optional): Norm after the first channel FC: 'BN'
            (official BatchNorm1d, default), 'LN' (LayerNorm) or None.
        act_layer (str | type): :math:`\\delta`. Default: 'relu'.
        gate_layer (str | type): :math:`\\sigma`. Default: 'sigmoid'.
    """

    _abbr_ = 'bam'
    default_position = 'after_stage'

    def __init__(self,
                 in_channels: int,
                 rd_ratio: float = 1 / 16,
                 rd_channels: Optional[int] = None,
                 rd_divisor: int = 1,
                 dilation: int = 4,
                 num_dilated_convs: int = 2,
                 combine: str = 'sum',
                 channel_norm: Optional[str] = 'BN',
                 act_layer: ActLayer = 'relu',
                 gate_layer: ActLayer = 'sigmoid') -> None:
        super().__init__()
        rd = reduced_channels(in_channels, rd_ratio, rd_channels, rd_divisor)
        check_positive_int(dilation, 'dilation')
        if (isinstance(num_dilated_convs, bool)
                or not isinstance(num_dilated_convs, int)
                or num_dilated_convs < 0):
            raise ValueError(f'num_dilated_convs must be an int >= 0, got '
                             f'{num_dilated_convs!r}')
        self.combine = check_choice(combine, ('sum', 'product'), 'combine')
        check_choice(channel_norm, ('BN', 'LN', None), 'channel_norm')
        self.channel_norm = channel_norm

        # Channel branch: FC C -> C/r, norm, act, FC C/r -> C.
        self.fc1 = nn.Linear(in_channels, rd)
        self.norm = {'BN': lambda: nn.BatchNorm1d(rd),
                     'LN': lambda: nn.LayerNorm(rd),
                     None: nn.Identity}[channel_norm]()
        self.act = create_act(act_layer, 'act_layer')
        self.fc2 = nn.Linear(rd, in_channels)

        # Spatial branch: 1x1 reduce, dilated 3x3s, 1x1 to one map.
        layers = [nn.Conv2d(in_channels, rd, 1), nn.BatchNorm2d(rd),
                  create_act(act_layer, 'act_layer')]
        for _ in range(num_dilated_convs):
            layers += [nn.Conv2d(rd, rd, 3, padding=dilation,
                                 dilation=dilation),
                       nn.BatchNorm2d(rd), create_act(act_layer, 'act_layer')]
        layers.append(nn.Conv2d(rd, 1, 1))
        self.spatial = nn.Sequential(*layers)
        self.gate = create_act(gate_layer, 'gate_layer')
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out',
                                        nonlinearity='relu')
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d,
                                nn.LayerNorm)):
                nn.init.ones_(m.weight)
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.BatchNorm1d,
                              nn.BatchNorm2d, nn.LayerNorm)):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        if self.training and b == 1 and self.channel_norm == 'BN':
            raise ValueError(
                'BAM cannot train on a batch of 1: its channel branch applies '
                'BatchNorm1d to the pooled (B, C/r) vectors, which needs '
                'batch size >= 2 in train mode. Use a batch of 2 or more, '
                'eval mode, or channel_norm=\'LN\' / None.')
        z = spatial_mean(x).reshape(b, c).to(x.dtype)  # (B, C)
        mc = self.fc2(self.act(self.norm(self.fc1(z))))  # (B, C)
        mc = mc.reshape(b, c, 1, 1)  # (B, C, 1, 1)
        ms = self.spatial(x)  # (B, 1, H, W)
        product = self.combine == 'product'
        if type(self.gate) is nn.Sigmoid and needs_grad(x, mc, ms):
            return BAMGateFunction.apply(x, mc, ms, product)
        att = mc * ms if product else mc + ms  # (B, C, H, W)
        # x * (1 + s) in one pass: x + x * s.
        return torch.addcmul(x, x, self.gate(att).to(x.dtype))


def _attention(mc: torch.Tensor, ms: torch.Tensor,
               product: bool) -> torch.Tensor:
    """:math:`\\sigma(M_c \\circledast M_s)` of a block of channels."""
    return (mc * ms if product else mc + ms).sigmoid_()


class BAMGateFunction(torch.autograd.Function):
    """BAM's :math:`y = x (1 + \\sigma(a))`, :math:`a = M_c + M_s` (or
    :math:`M_c M_s`), with a hand-written backward that saves x and the
    small maps :math:`M_c` (B, C, 1, 1) and :math:`M_s` (B, 1, H, W) instead
    of autograd's full-size attention map; both passes run a block of
    channels at a time on the CPU
    (:func:`~mmattn.models.common.channel_blocks`), the map rebuilt in
    cache. With :math:`s = \\sigma(a)` and upstream g:

    .. math::

        \\frac{\\partial L}{\\partial x} = g (1 + s), \\quad
        q = \\frac{\\partial L}{\\partial a} = g\\, x\\, s (1 - s), \\quad
        \\frac{\\partial L}{\\partial M_c} = \\sum_{hw} q\\,
            \\frac{\\partial a}{\\partial M_c}, \\quad
        \\frac{\\partial L}{\\partial M_s} = \\sum_{c} q\\,
            \\frac{\\partial a}{\\partial M_s}

    (the partials of a: 1 for the sum, the other map for the product). The
    output is the eager module's ops element by element, equal to its
    output up to the last bit of the sigmoid (its vector and scalar code
    split a block's elements differently from the whole map's).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, mc: torch.Tensor,
                ms: torch.Tensor, product: bool) -> torch.Tensor:
        ctx.product = product
        ctx.save_for_backward(x, mc, ms)
        out = torch.empty_like(x)
        for x_b, mc_b, ms_b, out_b in channel_blocks(x, mc, ms, out):
            s = _attention(mc_b, ms_b, product)
            torch.addcmul(x_b, x_b, s.to(x.dtype), out=out_b)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor):
        x, mc, ms = ctx.saved_tensors
        grad_x = torch.empty_like(x)
        grad_mc = torch.empty_like(mc)
        grad_ms = torch.zeros_like(ms)  # summed over the blocks
        for x_b, g_b, mc_b, ms_b, gx_b, gmc_b in channel_blocks(
                x, grad, mc, ms, grad_x, grad_mc):
            s = _attention(mc_b, ms_b, ctx.product)
            torch.addcmul(g_b, g_b, s.to(g_b.dtype), out=gx_b)
            q = (g_b * x_b).to(s.dtype).mul_(s)
            q.addcmul_(q, s, value=-1)  # g x s (1 - s)
            gmc_b.copy_((q * ms_b if ctx.product else q).sum((2, 3),
                                                             keepdim=True))
            grad_ms.add_((q.mul_(mc_b) if ctx.product else q).sum(
                1, keepdim=True))
        return grad_x, grad_mc, grad_ms, None
