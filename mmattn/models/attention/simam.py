"""SimAM: a simple, parameter-free attention module."""
from typing import Optional, Tuple

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from mmattn.models.common import (capturing_graph, channel_blocks,
                                  multiply_add, needs_grad, spatial_mean_var)
from mmattn.registry import MODELS
from .base import AttentionModule


@MODELS.register_module()
class SimAM(AttentionModule):
    """Simple parameter-free attention module (SimAM).

    `SimAM: A Simple, Parameter-Free Attention Module for Convolutional
    Neural Networks <https://proceedings.mlr.press/v139/yang21o.html>`_
    (Yang et al., ICML 2021), eq. 5 and the official
    ``simam_module``. Each neuron's weight is the inverse of its minimal
    energy, computed per channel over the H x W map:

    .. math::

        d = (x - \\mu)^2, \\quad
        v = \\frac{1}{n} \\sum_{h,w} d, \\quad n = HW - 1, \\quad
        E^{-1} = \\frac{d}{4 (v + \\lambda)} + \\frac{1}{2}, \\quad
        \\tilde{x} = x \\cdot \\sigma(E^{-1})

    with :math:`\\mu` the channel's spatial mean, so :math:`v` is the
    unbiased spatial variance. It has **no parameters**; a 3-D (C x H x W)
    weight comes from the statistics alone. :math:`\\mu` and :math:`v` are
    computed in fp32 under fp16/bf16 autocast.

    **1x1 maps.** With a single position :math:`n = 0` and the official
    code divides 0 by 0 (NaN). Here :math:`v` is taken as 0 there; since
    :math:`d = 0` as well, :math:`E^{-1} = 1/2` and the output is
    :math:`x \\cdot \\sigma(1/2)`: the limit of a map whose positions are
    all equal, i.e. a neuron with nothing to stand out from.

    Position: after conv3 + BN of a bottleneck, before the residual add
    (``after_conv3``); the official ResNets use
    ``bn3 = Sequential(bn3, simam)``.

    Args:
        in_channels (int): Channels C of the input. Unused (the module has
            no parameters); kept for the plugin interface.
        e_lambda (float): :math:`\\lambda`, the energy regulariser, > 0.
            Default: 1e-4, the official module's default (the paper's
            CIFAR setting). The released ImageNet checkpoints and the
            official mmdetection configs (``attention_param=0.1``) use 0.1.
    """

    _abbr_ = 'simam'
    takes_residual = True

    def __init__(self, in_channels: int, e_lambda: float = 1e-4) -> None:
        super().__init__()
        if not e_lambda > 0:
            raise ValueError(f'e_lambda must be > 0, got {e_lambda!r}')
        self.in_channels = in_channels
        self.e_lambda = float(e_lambda)

    def forward(self, x: torch.Tensor,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """:math:`\\tilde{x}` (+ ``residual``: a residual block may hand
        its shortcut, added in the pass of the product)."""
        if needs_grad(x):
            return SimAMFunction.apply(x, self.e_lambda, residual)
        return simam_forward(x, *simam_statistics(x, self.e_lambda),
                             residual)

    def extra_repr(self) -> str:
        return f'e_lambda={self.e_lambda}'


def simam_statistics(x: torch.Tensor,
                     e_lambda: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel :math:`\\mu` and :math:`1 / (4 (v + \\lambda))`,
    (B, C, 1, 1) in at least fp32 (:func:`spatial_mean_var`); the variance
    has divisor HW - 1, or HW on a 1x1 map (see :class:`SimAM`)."""
    n = x.shape[2] * x.shape[3] - 1
    mean, var = spatial_mean_var(x, correction=1 if n > 0 else 0)
    return mean, 1.0 / (4 * (var + e_lambda))


def simam_forward(x: torch.Tensor, mean: torch.Tensor, inv: torch.Tensor,
                  residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:math:`x \\cdot \\sigma((x - \\mu)^2 \\cdot inv + 1/2)`
    (+ ``residual``), a block of channels at a time on the CPU
    (:func:`channel_blocks`), so that the gate's temporaries stay in cache:
    memory sees one read of x (and of the residual) and one write of the
    output."""
    if capturing_graph():  # plain graph ops (the loop's out= writes)
        gate = (x - mean).square().mul(inv).add(0.5).sigmoid()
        return multiply_add(x, gate.to(x.dtype), residual)
    out = torch.empty_like(x)
    for x_b, mean_b, inv_b, out_b, res_b in channel_blocks(x, mean, inv, out,
                                                           residual):
        gate = (x_b - mean_b).square_().mul_(inv_b).add_(0.5).sigmoid_()
        multiply_add(x_b, gate.to(x.dtype), res_b, out=out_b)
    return out


class SimAMFunction(torch.autograd.Function):
    """SimAM with a hand-written backward that saves only x and the
    (B, C, 1, 1) statistics; the gate is recomputed in the backward pass, a
    block of channels at a time on the CPU (:func:`channel_blocks`).

    With :math:`d = x - \\mu`, :math:`s = \\sigma(d^2 r + 1/2)`,
    :math:`r = 1 / (4 (v + \\lambda))`, :math:`v = \\sum d^2 / n`,
    N = HW positions, upstream gradient g and
    :math:`q = g\\, x\\, s (1 - s)` (all per channel):

    .. math::

        \\frac{\\partial L}{\\partial x} = g s + 2 r\\, q d
            - \\frac{2 r}{N} \\sum q d
            - \\frac{8 r^2}{n} \\Big(\\sum q d^2\\Big) d

    (direct term, then the paths through :math:`\\mu` and through v). The
    forward output is :func:`simam_forward`'s, bit for bit the eager
    module's; autograd's version would keep x, the gate and
    :math:`(x - \\mu)^2` alive until the backward pass.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, e_lambda: float,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        mean, inv = simam_statistics(x, e_lambda)
        ctx.save_for_backward(x, mean, inv)
        return simam_forward(x, mean, inv, residual)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor
                 ) -> Tuple[torch.Tensor, None, Optional[torch.Tensor]]:
        x, mean, inv = ctx.saved_tensors
        num = x.shape[2] * x.shape[3]
        grad_x = torch.empty_like(x)
        for blocks in channel_blocks(x, grad, mean, inv, grad_x):
            _grad_block(*blocks, num)
        # residual (the last input): its gradient is the upstream one
        return grad_x, None, grad if ctx.needs_input_grad[-1] else None


def _grad_block(x: torch.Tensor, grad: torch.Tensor, mean: torch.Tensor,
                inv: torch.Tensor, out: torch.Tensor, num: int) -> None:
    """:class:`SimAMFunction`'s gradient of one block of channels into
    ``out``; ``num`` = N, the positions per channel."""
    n = max(num - 1, 1)
    dims = (2, 3)
    xf = x.to(mean.dtype)
    d = xf - mean
    s = d.square().mul_(inv).add_(0.5).sigmoid_()  # the gate
    gs = grad.to(mean.dtype) * s  # direct term g s
    qd = gs * xf
    qd.addcmul_(qd, s, value=-1).mul_(d)  # q d = g x s (1 - s) d
    sum_qd = qd.sum(dims, keepdim=True)
    sum_qdd = torch.mul(qd, d, out=s).sum(dims, keepdim=True)
    # g s + 2 r q d - (2 r / N) sum(q d) - (8 r^2 / n) sum(q d^2) d
    gs.addcmul_(qd, inv, value=2.)
    d.mul_(inv.square() * sum_qdd * (8. / n)).add_(
        inv * sum_qd * (2. / num))
    out.copy_(gs.sub_(d))
