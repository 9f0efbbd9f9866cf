"""Spatial Group-wise Enhance (SGE)."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch.autograd.function import FunctionCtx, once_differentiable

from mmattn.models.common import (capturing_graph, channel_blocks,
                                  check_divisible, check_positive_int,
                                  multiply_add, needs_grad, spatial_mean,
                                  spatial_mean_var)
from mmattn.registry import MODELS
from .base import AttentionModule


#: SGE's blocks of groups are 4x the shared size
#: (:func:`~mmattn.models.common.channel_blocks`): of the some 30 ops its
#: backward runs a block, 10 act on per-group statistics of a few elements,
#: whose cost is all dispatch. A ResNet-50 step with SGE took 0.96x the
#: time (interleaved, 11 rounds, 320x320); at 2x256x200x334 no change.
BLOCK_FACTOR = 4


@MODELS.register_module()
class SGE(AttentionModule):
    """Spatial Group-wise Enhance.

    `Spatial Group-wise Enhance: Improving Semantic Feature Learning in
    Convolutional Networks <https://arxiv.org/abs/1905.09646>`_ (Li et al.,
    2019) and the official ``SpatialGroupEnhance``
    (implus/PytorchInsight). The C channels are split into G groups of
    C/G; for group :math:`k` with features :math:`x_i \\in \\mathbb{R}^{C/G}`
    at each position :math:`i`:

    .. math::

        g = \\frac{1}{HW} \\sum_i x_i, \\quad
        c_i = g \\cdot x_i, \\quad
        \\hat{c}_i = \\frac{c_i - \\mu_c}{\\sigma_c + \\epsilon}, \\quad
        a_i = \\gamma_k \\hat{c}_i + \\beta_k, \\quad
        \\tilde{x}_i = x_i \\cdot \\sigma(a_i)

    where :math:`\\mu_c, \\sigma_c` are the mean and standard deviation of
    :math:`c` over the H x W positions of the group. As in the official
    code, :math:`\\sigma_c` is the **unbiased** standard deviation (torch's
    default ``std``, divisor HW - 1) and :math:`\\epsilon` = 1e-5 is added
    to the standard deviation, not to the variance. On a 1x1 map
    :math:`c_i - \\mu_c = 0`; there :math:`\\sigma_c` is taken as 0 (the
    official code gives NaN), so :math:`\\hat{c} = 0` and the gate is
    :math:`\\sigma(\\beta_k)`. The variance is floored at the smallest
    normal float before the square root, so a constant map (e.g. the zeros
    that mmdet's ``zero_init_residual`` bn3 gives a fresh ResNet) has finite
    gradients where the official code's are NaN. :math:`g`, :math:`c` and
    the statistics are computed in fp32 under fp16/bf16 autocast.

    **Init** (official): :math:`\\gamma = 0`, :math:`\\beta = 1`, so the
    block starts as a uniform gate :math:`\\sigma(1) \\approx 0.731`.
    Parameters: 2G per block (2,048 in ResNet-50 at ``after_conv3``).

    Position: after conv3 + BN of a bottleneck, before the residual add
    (``after_conv3``), as in the official ImageNet and mmdetection
    ``ResNetSGE`` backbones.

    Args:
        in_channels (int): Channels C of the input.
        groups (int): Number of groups G; must divide C. Default: 64
            (official).
        eps (float): :math:`\\epsilon`, added to the standard deviation.
            Default: 1e-5 (official).
    """

    _abbr_ = 'sge'
    takes_residual = True

    def __init__(self,
                 in_channels: int,
                 groups: int = 64,
                 eps: float = 1e-5) -> None:
        super().__init__()
        check_positive_int(in_channels, 'in_channels')
        check_positive_int(groups, 'groups')
        check_divisible(in_channels, groups, 'in_channels', 'groups')
        self.groups = groups
        self.eps = eps
        # gamma_k, beta_k: one scale/shift per group, shaped to broadcast
        # over (B, G, H, W).
        self.weight = nn.Parameter(torch.empty(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.empty(1, groups, 1, 1))
        self.init_weights()

    def init_weights(self) -> None:
        """gamma = 0, beta = 1: the gate starts at sigmoid(1)."""
        nn.init.zeros_(self.weight)
        nn.init.ones_(self.bias)

    def forward(self, x: torch.Tensor,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The gated x (+ ``residual``: a residual block may hand its
        shortcut, added in the pass of the product)."""
        if needs_grad(x, self.weight, self.bias):
            return SGEFunction.apply(x, self.weight, self.bias, self.groups,
                                     self.eps, residual)
        t = normalised_similarity(x, self.groups, self.eps)[0]
        return apply_sge_gate(x, t, self.weight, self.bias, residual)

    def extra_repr(self) -> str:
        return f'groups={self.groups}, eps={self.eps}'


def normalised_similarity(
        x: torch.Tensor, groups: int, eps: float
) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...]]:
    """SGE's normalised similarity map :math:`\\hat{c}` and the small
    tensors its backward pass needs.

    Args:
        x (Tensor): Input (B, C, H, W), G dividing C.
        groups (int): G.
        eps (float): :math:`\\epsilon`, added to the standard deviation.

    Returns:
        tuple: :math:`\\hat{c}` = t (B, G, H, W) and ``(g, std, var)``: the
        group descriptors g (B, G, C/G, 1, 1) and the statistics std, var
        (B, G, 1, 1), all in at least fp32.
    """
    b, c, h, w = x.shape
    xg = x.view(b, groups, c // groups, h, w)  # (B, G, C/G, H, W)
    g = spatial_mean(xg, dims=(3, 4))  # (B, G, C/G, 1, 1), fp32
    # Similarity of each position to its group's global descriptor: one
    # (1, C/G) x (C/G, H*W) product per sample and group.
    sim = torch.matmul(g.view(b, groups, 1, c // groups),
                       xg.to(g.dtype).flatten(3))  # (B, G, 1, H*W), fp32
    sim = sim.view(b, groups, h, w)  # (B, G, H, W)
    # Unbiased std as official; a 1x1 map has std 0 (see SGE).
    mean, var = spatial_mean_var(sim, correction=1 if h * w > 1 else 0)
    # Flooring var keeps sqrt's gradient finite on constant maps.
    std = var.clamp_min(torch.finfo(var.dtype).tiny).sqrt()
    # (sim - mean) / (std + eps) (B, G, H, W), in sim's memory outside
    # autograd (the hand-written backward's forward, inference): a fresh map
    # costs as much in page faults as the two passes
    centred = sim - mean if sim.requires_grad else sim.sub_(mean)
    t = centred.div_(std + eps)
    return t, (g, std, var)


def sge_gate(t: torch.Tensor, weight: torch.Tensor,
             bias: torch.Tensor) -> torch.Tensor:
    """:math:`\\sigma(\\gamma_k \\hat{c} + \\beta_k)` of (a block of groups
    of) the normalised similarity t (B, G, H, W), weight and bias
    (1, G, 1, 1)."""
    return torch.addcmul(bias, t, weight).sigmoid_()


def apply_sge_gate(x: torch.Tensor, t: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor,
                   residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x * sge_gate(t)`` (+ ``residual`` in the same pass), each group's
    gate broadcast over its C/G channels, a block of groups at a time on
    the CPU (:func:`~mmattn.models.common.channel_blocks`): the full-size
    gate only ever in cache (the whole map under graph capture)."""
    b, c, h, w = x.shape
    shape = (b, t.shape[1], c // t.shape[1], h, w)  # (B, G, C/G, H, W)
    residual = None if residual is None else residual.reshape(shape)
    if capturing_graph():
        gate = sge_gate(t, weight, bias).to(x.dtype).unsqueeze(2)
        return multiply_add(x.view(shape), gate, residual).reshape(x.shape)
    # written into a tensor of x's shape: a custom Function must not return
    # a view (``(xg * gate).reshape`` is one)
    out = torch.empty_like(x)
    for x_b, t_b, w_b, b_b, r_b, out_b in channel_blocks(
            x.view(shape), t, weight, bias, residual, out.view(shape),
            factor=BLOCK_FACTOR):
        gate = sge_gate(t_b, w_b, b_b).to(x.dtype).unsqueeze(2)
        multiply_add(x_b, gate, r_b, out=out_b)  # (B, G_block, C/G, H, W)
    return out


class SGEFunction(torch.autograd.Function):
    """SGE with a hand-written backward that saves x, the normalised
    similarity map t (C/G times smaller than x) and per-group statistics,
    instead of autograd's products, similarity, centred and gate maps.

    Per group, with :math:`s = \\sigma(\\gamma t + \\beta)`, upstream
    gradient G, :math:`\\delta_i = \\gamma\\, s_i (1 - s_i) \\sum_c G_{ci}
    x_{ci}`, :math:`\\hat\\sigma = \\sigma_c + \\epsilon` and n the
    variance divisor:

    .. math::

        \\frac{\\partial L}{\\partial c_i} = \\frac{\\delta_i
            - \\overline{\\delta}}{\\hat\\sigma}
            - \\frac{\\sum_j \\delta_j t_j}{\\hat\\sigma^2 \\sigma_c\\, n}
              (c_i - \\mu_c), \\qquad
        \\frac{\\partial L}{\\partial x_{ci}} = G_{ci} s_i
            + \\frac{\\partial L}{\\partial c_i} g_c
            + \\frac{1}{HW} \\sum_j \\frac{\\partial L}{\\partial c_j}
              x_{cj}

    (the variance term vanishes where the variance is floored, as autograd's
    ``clamp_min`` gradient does). The forward output is inference's
    (:func:`apply_sge_gate`), bit for bit.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor, groups: int, eps: float,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        t, (g, std, var) = normalised_similarity(x, groups, eps)
        ctx.groups, ctx.eps = groups, eps
        ctx.save_for_backward(x, weight, bias, g, t, std, var)
        return apply_sge_gate(x, t, weight, bias, residual)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, None,
                            None, Optional[torch.Tensor]]:
        x, weight, bias, g, t, std, var = ctx.saved_tensors
        b, c, h, w = x.shape
        shape = g.shape[:3] + (h, w)  # (B, G, C/G, H, W)
        grad_x = torch.empty_like(x)
        grad_weight = torch.empty_like(weight, dtype=t.dtype)
        grad_bias = torch.empty_like(bias, dtype=t.dtype)
        for blocks in channel_blocks(x.view(shape), grad.view(shape),
                                     weight, bias, g, t, std, var,
                                     grad_x.view(shape), grad_weight,
                                     grad_bias, factor=BLOCK_FACTOR):
            _grad_block(*blocks, ctx.eps)
        # residual (the last input): its gradient is the upstream one
        return (grad_x, grad_weight.to(weight.dtype),
                grad_bias.to(bias.dtype), None, None,
                grad if ctx.needs_input_grad[-1] else None)


def _grad_block(x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor, g: torch.Tensor, t: torch.Tensor,
                std: torch.Tensor, var: torch.Tensor, grad_x: torch.Tensor,
                grad_weight: torch.Tensor, grad_bias: torch.Tensor,
                eps: float) -> None:
    """:class:`SGEFunction`'s gradients for one block of groups (dim 1 of
    every argument), written into ``grad_x``, ``grad_weight`` and
    ``grad_bias``."""
    num = x.shape[3] * x.shape[4]
    n = num - 1 if num > 1 else num
    acc = t.dtype
    x, grad = x.to(acc), grad.to(acc)  # (B, G_block, C/G, H, W)
    # the block's full-size products go straight into grad_x (in the
    # accumulation dtype, else into a scratch block copied at the end)
    out = grad_x if grad_x.dtype == acc else torch.empty_like(grad_x,
                                                              dtype=acc)
    s = sge_gate(t, weight, bias)  # (B, G_block, H, W)
    da = torch.mul(grad, x, out=out).sum(dim=2).mul_(s).mul_(1 - s)  # dL/da
    torch.sum(da * t, dim=(0, 2, 3), keepdim=True, out=grad_weight)
    torch.sum(da, dim=(0, 2, 3), keepdim=True, out=grad_bias)
    denom = std + eps
    dt = da.mul_(weight)  # dL/dt
    # dL/dstd = -sum(dt * t) / denom; std = sqrt(max(var, tiny)).
    dvar = (dt * t).sum(dim=(2, 3), keepdim=True).div_(denom).neg_()
    dvar = dvar.div_(2 * std).mul_(var >= torch.finfo(acc).tiny)
    # dL/dsim: direct term (centred), then the variance path, with
    # sim - mean = t * denom.
    dsim = dt.div_(denom)
    dsim = dsim.sub_(dsim.mean(dim=(2, 3), keepdim=True)).addcmul_(
        t, dvar * denom * (2. / n))
    # through g = mean(x): sum_i dsim_i x_ci / HW, (B, G_block, C/G, 1, 1)
    dg = torch.einsum('bgchw,bghw->bgc', x, dsim).div_(num)[..., None, None]
    # G s + dsim g (through sim = sum_c x g) + dg
    torch.addcmul(dg, dsim.unsqueeze(2), g, out=out).addcmul_(
        grad, s.unsqueeze(2))
    if out is not grad_x:
        grad_x.copy_(out)
