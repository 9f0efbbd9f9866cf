"""Bottleneck Attention Module (BAM)."""
from typing import Optional

import torch
import torch.nn as nn
from torch.autograd.function import FunctionCtx, once_differentiable

from mmattn.models.common import (ActLayer, GradientHandoff, block_sum,
                                  capturing_graph, channel_blocks,
                                  check_choice, check_positive_int,
                                  create_act, nchw_or_channels_last,
                                  needs_grad, reduced_channels, spatial_mean)
from mmattn.models.convs import (PointwiseConv, ShiftedGemmConv2d,
                                 pointwise_conv_channels_last)
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
    takes_residual = True

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
        layers = [PointwiseConv(in_channels, rd), nn.BatchNorm2d(rd),
                  create_act(act_layer, 'act_layer')]
        for _ in range(num_dilated_convs):
            layers += [ShiftedGemmConv2d(rd, rd, 3, padding=dilation,
                                         dilation=dilation),
                       nn.BatchNorm2d(rd), create_act(act_layer, 'act_layer')]
        layers.append(PointwiseConv(rd, 1))
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

    def forward(self, x: torch.Tensor,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``y`` (+ ``residual``: a residual block may hand its shortcut,
        added in the pass of the gate)."""
        b, c = x.shape[:2]
        if self.training and b == 1 and self.channel_norm == 'BN':
            raise ValueError(
                'BAM cannot train on a batch of 1: its channel branch applies '
                'BatchNorm1d to the pooled (B, C/r) vectors, which needs '
                'batch size >= 2 in train mode. Use a batch of 2 or more, '
                'eval mode, or channel_norm=\'LN\' / None.')
        sigmoid = type(self.gate) is nn.Sigmoid
        reduce = self.spatial[0]
        handoff = None
        if sigmoid and needs_grad(x) and nchw_or_channels_last(x):
            # x is read twice (the pooling and 1x1 conv, then the gate):
            # the gate's backward hands its gradient of x to the first.
            handoff = GradientHandoff()
            z, hidden = _PoolAndReduce.apply(x, reduce.weight, reduce.bias,
                                             handoff)
        else:
            z = spatial_mean(x)
            hidden = pointwise_conv_channels_last(x, reduce.weight,
                                                  reduce.bias)
        mc = self.fc2(self.act(self.norm(self.fc1(z.reshape(b, c).to(
            x.dtype)))))  # (B, C)
        mc = mc.reshape(b, c, 1, 1)  # (B, C, 1, 1)
        ms = self.spatial_tail(hidden)  # (B, 1, H, W)
        product = self.combine == 'product'
        if not sigmoid:
            att = mc * ms if product else mc + ms  # (B, C, H, W)
            return amplify(x, self.gate(att).to(x.dtype), residual)
        if needs_grad(x, mc, ms):
            return BAMGateFunction.apply(x, mc, ms, product, handoff,
                                         residual)
        return bam_gate(x, mc, ms, product, residual)

    def spatial_tail(self, hidden: torch.Tensor) -> torch.Tensor:
        """The spatial branch after its 1x1 reduction, (B, C/r, H, W) ->
        :math:`M_s` (B, 1, H, W), channels-last on the CPU
        (:func:`~mmattn.models.convs.few_channel_conv_layout`, which the
        reduction writes)."""
        for layer in self.spatial[1:]:
            hidden = layer(hidden)
        return hidden


class _PoolAndReduce(torch.autograd.Function):
    """BAM's first read of x, both branches at once: the global mean z
    (B, C, 1, 1) of the channel branch and the spatial branch's 1x1
    reduction :math:`h = f_0(x)` (B, C/r, H, W), written channels-last for
    the convs after it
    (:func:`~mmattn.models.convs.pointwise_conv_channels_last`), saving x
    and the weight.

    The backward adds both shares of the input gradient to the gate's,
    handed over by a :class:`~mmattn.models.common.GradientHandoff`, as one
    rank-(C/r + 1) update in place (``baddbmm_``), per sample, with N = HW:

    .. math::

        \\frac{\\partial L}{\\partial x} \\mathrel{+}=
        \\big[\\, W_0^\\top \\;\\big|\\; g_z / N \\,\\big]
        \\begin{bmatrix} g_h \\\\ \\mathbf{1}^\\top \\end{bmatrix}

    where autograd would write the 1x1 conv's gradient, then the mean's,
    and sum them with the gate's. The weight's gradient is
    :math:`\\sum_b g_h x^\\top`. The products take the faster
    orientation for a channels-last :math:`g_h` (the CPU's layout of the
    spatial branch). Computed in x's dtype (the small gradients are cast to
    it under autocast).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor,
                bias: Optional[torch.Tensor],
                handoff: GradientHandoff):
        ctx.save_for_backward(x, weight)
        ctx.handoff = handoff
        return spatial_mean(x), pointwise_conv_channels_last(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_z: Optional[torch.Tensor],
                 grad_h: Optional[torch.Tensor]):
        x, weight = ctx.saved_tensors
        b, c, h, w = x.shape
        n = h * w
        rows = x.flatten(2).transpose(1, 2)  # (B, N, C), a view in either
        if grad_h is None:
            grad_h = x.new_zeros(b, weight.shape[0], h, w)
        grad_h = grad_h.to(x.dtype)
        # [g_h | 1]^T (B, C/r + 1, N), from g_h's (B, N, C/r) rows if it is
        # channels-last (the CPU's layout), else from its (B, C/r, N)
        if grad_h.is_contiguous(memory_format=torch.channels_last):
            right = torch.cat((grad_h.permute(0, 2, 3, 1).reshape(b, n, -1),
                               grad_h.new_ones(b, n, 1)), 2).transpose(1, 2)
        else:
            right = torch.cat((grad_h.reshape(b, -1, n),
                               grad_h.new_ones(b, 1, n)), 1)
        grad_x = ctx.handoff.take()
        if ctx.needs_input_grad[0]:
            if grad_z is None:
                grad_z = x.new_zeros(b, c, 1, 1)
            # [W^T | g_z / N] (B, C, C/r + 1)
            left = torch.cat((weight.flatten(1).t().to(x.dtype).expand(
                b, c, -1), grad_z.reshape(b, c, 1).to(x.dtype) / n), 2)
            if grad_x is None:
                grad_x = torch.empty_like(x)
                torch.bmm(left, right, out=grad_x.flatten(2))
            else:
                grad_x.flatten(2).baddbmm_(left, right)
        grad_w = grad_b = None
        grad_h = right[:, :-1]  # (B, C/r, N)
        if ctx.needs_input_grad[1]:
            grad_w = torch.bmm(grad_h, rows).sum(0).to(
                weight.dtype).view_as(weight)  # (C/r, C, 1, 1)
        if ctx.needs_input_grad[2]:
            grad_b = grad_h.sum((0, 2)).to(weight.dtype)
        return grad_x, grad_w, grad_b, None


def amplify(x: torch.Tensor, s: torch.Tensor,
            residual: Optional[torch.Tensor] = None,
            out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """BAM's :math:`x (1 + s)`, as ``x + x s`` in one pass, then
    ``+ residual`` (the residual block's own order); into ``out`` if
    given."""
    y = torch.addcmul(x, x, s, out=out)
    return y if residual is None else y.add_(residual)


def _attention(mc: torch.Tensor, ms: torch.Tensor,
               product: bool) -> torch.Tensor:
    """:math:`\\sigma(M_c \\circledast M_s)` of a block of channels."""
    return (mc * ms if product else mc + ms).sigmoid_()


def bam_gate(x: torch.Tensor, mc: torch.Tensor, ms: torch.Tensor,
             product: bool,
             residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:math:`x (1 + \\sigma(M_c \\circledast M_s))` (+ ``residual``), a
    block of channels at a time on the CPU
    (:func:`~mmattn.models.common.channel_blocks`), so that the full-size
    attention map is never written (plain ops under graph capture)."""
    if capturing_graph():  # (B, C, H, W) map
        return amplify(x, _attention(mc, ms, product).to(x.dtype), residual)
    out = torch.empty_like(x)
    for x_b, mc_b, ms_b, out_b, res_b in channel_blocks(x, mc, ms, out,
                                                        residual):
        amplify(x_b, _attention(mc_b, ms_b, product).to(x.dtype), res_b,
                out=out_b)
    return out


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
                ms: torch.Tensor, product: bool,
                handoff: Optional[GradientHandoff] = None,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        ctx.product, ctx.handoff = product, handoff
        ctx.save_for_backward(x, mc, ms)
        return bam_gate(x, mc, ms, product, residual)

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
            amplify(g_b, s.to(g_b.dtype), out=gx_b)  # g (1 + s)
            q = (g_b * x_b).to(s.dtype).mul_(s)
            q.addcmul_(q, s, value=-1)  # g x s (1 - s)
            gmc_b.copy_((q * ms_b if ctx.product else q).sum((2, 3),
                                                             keepdim=True))
            grad_ms.add_(block_sum(q.mul_(mc_b) if ctx.product else q,
                                   (1, )))
        if ctx.handoff is not None:  # the pooling's backward returns it
            ctx.handoff.grad, grad_x = grad_x, None
        # residual (the last input): its gradient is the upstream one
        return (grad_x, grad_mc, grad_ms, None, None,
                grad if ctx.needs_input_grad[-1] else None)
