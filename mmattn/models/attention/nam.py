"""Normalization-based Attention Module (NAM)."""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch.autograd.function import FunctionCtx, once_differentiable

from mmattn.models.common import (batch_norm_state, batch_norm_with_stats,
                                  channel_block_size, channel_blocks,
                                  check_positive_int, multiply_add,
                                  needs_grad)
from mmattn.registry import MODELS
from .base import AttentionModule

def _bn_importance(bn: nn.Module) -> torch.Tensor:
    """NAM's weight factors |gamma_i| / sum_j |gamma_j| of ``bn``, taken
    without gradient (the official code reads ``bn.weight.data``).

    All-zero scales give all-zero factors instead of 0/0.
    """
    gamma = bn.weight.detach().abs()
    return gamma / gamma.sum().clamp_min(torch.finfo(gamma.dtype).tiny)


def nam_channel_gate_(y: torch.Tensor, x: torch.Tensor,
                      importance: torch.Tensor,
                      residual: Optional[torch.Tensor] = None
                      ) -> torch.Tensor:
    """NAM's output ``x * sigmoid(w * y)`` (+ ``residual``) from
    ``y = BN(x)``, w the ``importance`` (C,): the eager module's
    operations, done in place in y when the gate keeps y's dtype, a block
    of channels at a time (:func:`~mmattn.models.common.channel_blocks`:
    one pass over memory instead of three)."""
    importance = importance.view(1, -1, 1, 1)
    if torch.result_type(y, importance) != y.dtype:
        return multiply_add(x, torch.sigmoid(y * importance).to(x.dtype),
                            residual)
    for y_b, x_b, importance_b, res_b in channel_blocks(
            y, x, importance, residual):
        y_b.mul_(importance_b).sigmoid_().mul_(x_b)
        if res_b is not None:
            y_b.add_(res_b)
    return y


class NAMChannelFunction(torch.autograd.Function):
    """NAM's channel gate ``x * sigmoid(w * BN(x))`` with a hand-written
    backward that saves x and per-channel statistics only (autograd's
    version keeps BN(x), the gate and their products); the gate is
    recomputed in the backward pass, a block of channels at a time on the
    CPU (:func:`~mmattn.models.common.channel_block_size`).

    Per channel, with :math:`\\mu, r` the mean and inverse standard
    deviation that normalise (the batch's in train mode, the running ones in
    eval mode), :math:`d = x - \\mu`, :math:`\\hat{x} = d r`,
    :math:`z = w (\\gamma \\hat{x} + \\beta)`, :math:`s = \\sigma(z)`, the
    importance w held constant (it carries no gradient, see :class:`NAM`),
    upstream gradient g, :math:`q = g\\, x\\, s (1 - s)` (the gradient of
    z), :math:`k = w \\gamma r` and means :math:`\\langle \\cdot \\rangle`
    over the N = B H W positions of the channel:

    .. math::

        \\frac{\\partial L}{\\partial x} = g s + k \\big(q
            - \\langle q \\rangle - r^2 d \\langle q d \\rangle\\big), \\quad
        \\frac{\\partial L}{\\partial \\gamma} = w r \\sum q d, \\quad
        \\frac{\\partial L}{\\partial \\beta} = w \\sum q

    The two mean terms are those of batch statistics; in eval mode
    :math:`\\partial L / \\partial x = g s + k q`. The forward pass is
    :func:`~mmattn.models.common.batch_norm_with_stats` (one
    ``torch.native_batch_norm`` call, running statistics updated as
    ``nn.BatchNorm2d`` does) followed by :func:`nam_channel_gate_`: the
    eager module's output, up to the last bit of the sigmoid (its vector
    and scalar code split a block's elements differently from the whole
    map's).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor, importance: torch.Tensor, eps: float,
                running_mean: Optional[torch.Tensor],
                running_var: Optional[torch.Tensor], use_batch_stats: bool,
                factor: float,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        y, mean, invstd = batch_norm_with_stats(x, weight, bias, eps,
                                                running_mean, running_var,
                                                use_batch_stats, factor)
        ctx.use_batch_stats = use_batch_stats
        ctx.save_for_backward(x, weight, bias, importance, mean, invstd)
        return nam_channel_gate_(y, x, importance, residual)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx,
                 grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        x, weight, bias, importance, mean, invstd = ctx.saved_tensors
        b, c, h, w = x.shape
        dims, num = (0, 2, 3), b * h * w  # N
        importance = importance.to(mean.dtype)
        scale = importance * weight.to(mean.dtype) * invstd  # k
        shift = importance * bias.to(mean.dtype)  # z = k d + shift
        # -k / N and -k r^2 / N: the factors of sum q and of (sum q d) d in
        # dL/dx with batch statistics
        centre = -scale / num
        slope = centre * invstd.square()
        channel = torch.stack([mean, scale, shift, centre, slope]).view(
            5, 1, c, 1, 1)  # per channel, broadcasting over (B, C, H, W)
        sums = channel.new_empty(2, 1, c, 1, 1)  # sum q, sum q d
        grad_x = torch.empty_like(x)
        size = channel_block_size(x)
        for x_b, grad_b, out_b, channel_b, sums_b in zip(
                x.split(size, 1), grad.split(size, 1), grad_x.split(size, 1),
                channel.split(size, 2), sums.split(size, 2)):
            mean_b, scale_b, shift_b, centre_b, slope_b = channel_b
            d = x_b - mean_b  # (B, C_block, H, W)
            s = (d * scale_b).add_(shift_b).sigmoid_()
            gs = grad_b * s  # direct term g s
            q = gs * x_b
            q.addcmul_(q, s, value=-1)  # q = g x s (1 - s)
            torch.sum(q, dims, keepdim=True, out=sums_b[0])
            torch.sum(torch.mul(q, d, out=s), dims, keepdim=True,
                      out=sums_b[1])
            if ctx.use_batch_stats:  # - k <q> - k r^2 d <q d>
                gs.addcmul_(d, slope_b * sums_b[1]).add_(centre_b * sums_b[0])
            torch.addcmul(gs, q, scale_b, out=out_b)
        sum_q, sum_qd = sums.view(2, c)
        grad_weight = importance * invstd * sum_qd  # (C, )
        grad_bias = importance * sum_q
        # residual (the last input): its gradient is the upstream one
        return (grad_x, grad_weight.to(weight.dtype), grad_bias.to(bias.dtype),
                None, None, None, None, None, None,
                grad if ctx.needs_input_grad[-1] else None)


def _pair(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2 or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 1
            for s in size)):
        raise ValueError('spatial_size must be a positive int or a pair '
                         f'(H, W) of positive ints, got {size!r}')
    return tuple(size)


@MODELS.register_module()
class NAM(AttentionModule):
    """Normalization-based Attention Module.

    `NAM: Normalization-based Attention Module
    <https://arxiv.org/abs/2111.12419>`_ (Liu et al., 2021) and the
    official code (Christian-lyc/NAM,
    ``MODELS/attention.py``). The scale factors :math:`\\gamma` of a batch
    normalisation measure how much each channel varies, and serve as its
    importance:

    .. math::

        \\hat{x} = \\mathrm{BN}(x) = \\gamma \\frac{x - \\mu_B}
            {\\sqrt{\\sigma_B^2 + \\epsilon}} + \\beta, \\quad
        w_c = \\frac{|\\gamma_c|}{\\sum_j |\\gamma_j|}, \\quad
        M_c = \\sigma(w_c \\cdot \\hat{x}_c), \\quad
        \\tilde{x} = M_c \\odot x

    **Channel gate (default, the official code).** ``BatchNorm2d(C)``
    with affine parameters; :math:`w` is computed **without gradient**
    (the official code reads ``bn.weight.data``), so :math:`\\gamma` is
    trained only through :math:`\\hat{x}`. The gate multiplies this
    module's own input x (the conv3 + BN output in a bottleneck), not the
    block's residual. Parameters: 2C per block (30,208 in ResNet-50 at
    ``after_conv3``). Under autograd it runs as
    :class:`NAMChannelFunction` (same output bit for bit, same running
    statistics, a backward pass that keeps only x); inference, tracing and
    export, and a BN converted to another type (e.g. SyncBN, whose
    statistics are not this module's to compute), run the plain ops.

    **Pixel gate (``spatial=True``).** The paper's spatial sub-module,
    present only in the first official commit (d135ad4, ``Spatial_Att``)
    and later removed: every one of the H*W positions is a feature of a
    ``BatchNorm1d(H*W)`` normalised over batch and channels, with its own
    :math:`\\gamma_p`; :math:`\\lambda_p = |\\gamma_p| / \\sum |\\gamma|` and
    :math:`\\tilde{x} \\leftarrow \\sigma(\\lambda_p \\cdot
    \\mathrm{BN}_s(\\tilde{x})) \\odot \\tilde{x}`, applied after the
    channel gate as in the official ``Att``. It owns one parameter pair per
    pixel and so only accepts the ``spatial_size`` it was built for
    (e.g. 56/28/14/7 per ResNet stage at 224 px): not for detection inputs
    of varying size.

    The paper's optional L1 sparsity penalty on :math:`\\gamma`
    (``--sparsity-regularization``, s = 1e-4) is
    :class:`mmattn.engine.hooks.NAMSparsityHook`.

    Init (official): BN weight 1, bias 0, which is also what mmdet's ResNet
    gives every BN. Note that mmdet's ``norm_eval=True`` puts these BNs in
    eval mode like the backbone's own.

    Position: after conv3 + BN of a bottleneck, before the residual add
    (``after_conv3``), as in the official ResNet.

    Args:
        in_channels (int): Channels C of the input.
        spatial (bool): Add the pixel gate. Requires ``spatial_size``.
            Default: False (the official code's final version).
        spatial_size (int | tuple[int, int], optional): The fixed input
            H x W (an int means square) of the pixel gate. Only with
            ``spatial=True``. Default: None.
        eps (float): BN epsilon. Default: 1e-5.
        momentum (float): BN momentum. Default: 0.1.
    """

    _abbr_ = 'nam'
    takes_residual = True

    def __init__(self,
                 in_channels: int,
                 spatial: bool = False,
                 spatial_size: Optional[Union[int, Tuple[int, int]]] = None,
                 eps: float = 1e-5,
                 momentum: float = 0.1) -> None:
        super().__init__()
        check_positive_int(in_channels, 'in_channels')
        self.channel_bn = nn.BatchNorm2d(in_channels, eps, momentum)
        self.spatial_size: Optional[Tuple[int, int]] = None
        self.spatial_bn: Optional[nn.BatchNorm1d] = None
        if spatial:
            if spatial_size is None:
                raise ValueError(
                    'spatial=True needs spatial_size=(H, W): the pixel gate '
                    'has one BN scale per position of a fixed-size map')
            self.spatial_size = _pair(spatial_size)
            h, w = self.spatial_size
            self.spatial_bn = nn.BatchNorm1d(h * w, eps, momentum)
        elif spatial_size is not None:
            raise ValueError(f'spatial_size={spatial_size!r} is only used by '
                             'the pixel gate; set spatial=True as well')
        self.init_weights()

    def init_weights(self) -> None:
        """BN weight 1, bias 0 (official)."""
        for bn in (self.channel_bn, self.spatial_bn):
            if bn is not None:
                nn.init.ones_(bn.weight)
                nn.init.zeros_(bn.bias)

    def forward(self, x: torch.Tensor,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The gated x (+ ``residual``: a residual block may hand its
        shortcut, added in the pass of the channel gate when it is the
        last one)."""
        b, c, h, w = x.shape
        if self.spatial_bn is not None and (h, w) != self.spatial_size:
            raise ValueError(
                f'NAM was built with spatial_size={self.spatial_size} for its '
                f'pixel gate but got an input of H x W = {(h, w)}')
        bn = self.channel_bn
        weight = _bn_importance(bn)  # (C, )
        fused = residual if self.spatial_bn is None else None
        if type(bn) is nn.BatchNorm2d and needs_grad(x, bn.weight, bn.bias):
            out = NAMChannelFunction.apply(x, bn.weight, bn.bias, weight,
                                           bn.eps, *batch_norm_state(bn),
                                           fused)
        else:
            gate = torch.sigmoid(bn(x) * weight.view(1, c, 1, 1))
            out = multiply_add(x, gate.to(x.dtype), fused)  # (B, C, H, W)
        if self.spatial_bn is None:
            return out
        # Positions become BN1d features, normalised over batch and C.
        flat = out.flatten(2).transpose(1, 2)  # (B, H*W, C)
        weight = _bn_importance(self.spatial_bn).view(1, h * w, 1)
        gate = torch.sigmoid(self.spatial_bn(flat) * weight)  # (B, H*W, C)
        gate = gate.transpose(1, 2).reshape(b, c, h, w)  # (B, C, H, W)
        return multiply_add(out, gate.to(x.dtype), residual)

    def extra_repr(self) -> str:
        return f'spatial_size={self.spatial_size}'
