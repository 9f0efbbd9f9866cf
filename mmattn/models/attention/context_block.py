"""Global Context (GC) block: mmcv's ``ContextBlock`` with an init that
survives a parent backbone's init, and :class:`GlobalContext`, the same
module with a training pass that reads and writes memory far less.

`GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond
<https://arxiv.org/abs/1904.11492>`_ (Cao et al., 2019), eqs. 3-4:

.. math::

    c = \\sum_j \\operatorname{softmax}_j(W_k x_j)\\, x_j, \\qquad
    z_i = x_i + W_{v2}\\, \\mathrm{ReLU}(\\mathrm{LN}(W_{v1} c))

**mmcv's class.** ``mmcv.cnn.bricks.context_block.ContextBlock`` is the
reference implementation (ported from the official xvjiarui/GCNet) and is
registered as ``'ContextBlock'`` in mmengine's root ``MODELS``. The block is
meant to start as the identity: mmcv's ``reset_parameters()``
zero-initialises the last conv of each fusion branch (and
Kaiming-initialises ``conv_mask``). But it is a plain ``nn.Module`` without
``init_weights()``, the only hook mmengine's ``BaseModule.init_weights``
calls on children. An mmdet ``ResNet`` built without a checkpoint applies
``Kaiming(layer='Conv2d')`` to *every* conv it contains, plugins included,
so ``ResNet(...).init_weights()`` leaves random weights in those last convs
and every GC block starts by adding noise. This file gives mmcv's class the
hook, pointing at its own ``reset_parameters``; mmengine then restores GC's
init right after the backbone's (the same order that protects mmcv's
``NonLocal2d``, which has an ``init_weights``). It is applied once, on
import of :mod:`mmattn.models.attention` (hence on ``import mmattn``), and
only if mmcv does not define the hook itself.

**mmattn's class.** :class:`GlobalContext` subclasses ``ContextBlock``
(same arguments, parameters, state-dict keys and init) and replaces only
its training pass with two autograd functions that share the upstream
gradient (:class:`~mmattn.models.common.GradientHandoff`), so that the
backward writes the input gradient once.
"""
from typing import Optional, Sequence, Tuple

import torch
from mmcv.cnn.bricks.context_block import ContextBlock
from torch.autograd.function import once_differentiable

from mmattn.models.common import (GradientHandoff, NormInput, accumulate_dtype,
                                  check_choice, check_positive_int,
                                  multiply_add, needs_grad, per_channel_sums)
from mmattn.models.convs import PointwiseConv
from mmattn.registry import MODELS
from .base import AttentionModule

if not hasattr(ContextBlock, 'init_weights'):
    ContextBlock.init_weights = ContextBlock.reset_parameters

POOLING_TYPES = ('att', 'avg')
FUSION_TYPES = ('channel_add', 'channel_mul')


def attention_pool(x: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """GC's context modelling (eq. 3): the context :math:`c = X p`, (B, C,
    1, 1), and the attention :math:`p = \\operatorname{softmax}(w^\\top X +
    b)` over the N = HW positions, (B, 1, N) in at least fp32; X is the (C,
    N) map of a sample, w and b those of the 1x1 ``conv_mask``.

    Two batched matrix products, each one read of x: on the CPU some 10x
    faster than the (C -> 1) 1x1 convolution mmcv runs for the logits.
    """
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)  # (B, C, N), a view unless strided
    # (B, 1, C) x (B, C, N) -> (B, 1, N)
    logits = torch.bmm(weight.view(1, 1, c).to(x.dtype).expand(b, 1, c),
                       flat)
    prob = torch.softmax(logits.to(accumulate_dtype(x)) + bias, dim=2)
    # (B, C, N) x (B, N, 1) -> (B, C, 1)
    context = torch.bmm(flat, prob.to(x.dtype).transpose(1, 2))
    return context.view(b, c, 1, 1), prob


class _AttentionPool(torch.autograd.Function):
    """GC's context modelling, :math:`c = X p` with
    :math:`p = \\operatorname{softmax}(w^\\top X + b)` over the N = HW
    positions (X: the (C, N) map of a sample), softmax in at least fp32.
    With :math:`g_c` the gradient of c and g the upstream gradient of x
    handed over by :class:`_Fuse`:

    .. math::

        g_p = X^\\top g_c, \\quad
        g_\\ell = p \\odot (g_p - p^\\top g_p), \\quad
        \\frac{\\partial L}{\\partial w} = X g_\\ell, \\quad
        \\frac{\\partial L}{\\partial X} = g + g_c\\, p^\\top
            + w\\, g_\\ell^\\top

    the last one a single rank-2 update of g (``baddbmm``): the input
    gradient is written once, where autograd writes the two rank-1 terms
    and sums three full-size tensors. Given ``x = a * z + d`` per channel
    (``affine = (a, d)``, x a BatchNorm's output, z its input), the
    backward keeps z instead of x: :math:`X^\\top v = Z^\\top (a \\odot v)
    + d^\\top v` and :math:`X u = a \\odot (Z u) + d \\sum u`.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor, handoff: GradientHandoff,
                source: Optional[torch.Tensor],
                affine: Optional[Tuple[torch.Tensor, torch.Tensor]]
                ) -> torch.Tensor:
        context, prob = attention_pool(x, weight, bias)
        if source is None:
            ctx.save_for_backward(x, weight, prob, None, None)
        else:
            ctx.save_for_backward(source, weight, prob, *affine)
        ctx.handoff = handoff
        return context

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_context: torch.Tensor):
        data, weight, prob, scale, shift = ctx.saved_tensors
        upstream = ctx.handoff.take()  # g, from _Fuse
        b, c, h, w = data.shape
        dtype = grad_context.dtype  # x's
        flat = data.reshape(b, c, h * w)  # X, or Z with the affine
        g_c = grad_context.reshape(b, c, 1)  # (B, C, 1)
        if scale is not None:  # (1, C) each -> (1, C, 1)
            scale, shift = scale.view(1, c, 1), shift.view(1, c, 1)
        # g_p = X^T g_c: (B, 1, C) x (B, C, N) -> (B, 1, N)
        left = g_c if scale is None else g_c * scale
        g_p = torch.bmm(left.to(data.dtype).transpose(1, 2), flat)
        g_p = g_p.to(prob.dtype)
        if scale is not None:
            g_p = g_p + (g_c * shift).sum(1, keepdim=True)
        g_logits = prob * (g_p - (g_p * prob).sum(2, keepdim=True))
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[1]:
            # X g_l: (B, C, N) x (B, N, 1) -> (B, C, 1), summed over B
            rows = torch.bmm(flat, g_logits.to(data.dtype).transpose(1, 2))
            if scale is not None:
                rows = rows * scale + shift * g_logits.sum(2, keepdim=True)
            grad_weight = rows.sum(0).view(weight.shape).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = g_logits.sum().view(1).to(weight.dtype)
        if ctx.needs_input_grad[0]:
            # [g_c, w] (B, C, 2) x [p; g_l] (B, 2, N): the rank-2 update
            left = torch.cat([g_c.to(dtype), weight.view(1, c, 1).to(
                dtype).expand(b, c, 1)], dim=2)
            right = torch.cat([prob, g_logits], dim=1).to(dtype)
            if upstream is None:
                grad_x = torch.bmm(left, right)
            else:
                grad_x = torch.baddbmm(
                    upstream.to(dtype).reshape(b, c, h * w), left, right)
            grad_x = grad_x.view(b, c, h, w)
        return grad_x, grad_weight, grad_bias, None, None, None


class _Fuse(torch.autograd.Function):
    """GC's fusion, ``x * mul + add (+ residual)`` for (B, C, 1, 1) terms
    (``mul`` or ``add`` may be None) and a full-size ``residual`` (a
    residual block's shortcut, added in the same pass). Its backward
    returns no gradient for x: it leaves
    :math:`\\partial L / \\partial z \\odot mul` to
    :class:`_AttentionPool`, which completes it. Sums over H x W for the
    terms, one pass each (:func:`~mmattn.models.common.per_channel_sums`,
    from the BatchNorm's input when x is its output)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mul: Optional[torch.Tensor],
                add: Optional[torch.Tensor],
                residual: Optional[torch.Tensor],
                handoff: GradientHandoff, source: Optional[torch.Tensor],
                affine: Optional[Tuple[torch.Tensor, torch.Tensor]]
                ) -> torch.Tensor:
        ctx.handoff = handoff
        ctx.add_dtype = None if add is None else add.dtype
        if mul is None:
            ctx.save_for_backward(None, None, None, None)
            if residual is None:
                return x + add
            return torch.add(x, residual).add_(add)
        if source is None:
            ctx.save_for_backward(mul, x, None, None)
        else:
            ctx.save_for_backward(mul, source, *affine)
        out = multiply_add(x, mul, residual)
        return out if add is None else out.add_(add)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        mul, data, scale, shift = ctx.saved_tensors
        needs_add = ctx.needs_input_grad[2]
        grad_mul = grad_add = None
        if mul is None:
            ctx.handoff.grad = grad
            if needs_add:
                grad_add = grad.sum((2, 3), keepdim=True,
                                    dtype=accumulate_dtype(grad))
        else:
            ctx.handoff.grad = grad * mul
            if ctx.needs_input_grad[1] or needs_add:
                affine = None if scale is None else (scale, shift)
                dots, sums = per_channel_sums(grad, data, needs_add, affine)
                grad_mul = dots.view(mul.shape).to(mul.dtype)
                grad_add = sums.view(mul.shape) if needs_add else None
        if grad_add is not None:
            grad_add = grad_add.to(ctx.add_dtype)
        grad_residual = grad if ctx.needs_input_grad[3] else None
        return None, grad_mul, grad_add, grad_residual, None, None, None


@MODELS.register_module()
class GlobalContext(ContextBlock, AttentionModule):
    """Global Context block: mmcv's ``ContextBlock`` with a lean training
    pass.

    `arXiv 1904.11492 <https://arxiv.org/abs/1904.11492>`_, eqs. 3-4:

    .. math::

        c = \\sum_j \\frac{e^{W_k x_j}}{\\sum_m e^{W_k x_m}}\\, x_j,
        \\qquad
        z_i = x_i \\odot \\sigma(T_{mul}(c)) + T_{add}(c), \\qquad
        T(c) = W_{v2}\\, \\mathrm{ReLU}(\\mathrm{LN}(W_{v1} c))

    (``'avg'`` pooling: c = the mean of x; each fusion term only when named
    in ``fusion_types``; the paper's GC block is ``'att'`` with
    ``channel_add`` alone.)

    **Same module as mmcv's**: this class subclasses
    ``mmcv.cnn.bricks.context_block.ContextBlock``, so parameters,
    state-dict keys (``conv_mask``, ``channel_add_conv``,
    ``channel_mul_conv``), ``_abbr_ = 'context_block'`` and init (Kaiming
    ``conv_mask``, zero last conv of each branch: the block starts as the
    identity) are mmcv's, and weights load either way. Arguments are
    checked with errors that name them (mmcv asserts).

    **What differs** is the training pass with attention pooling: the
    pooling and the fusion are two autograd functions
    (:class:`_AttentionPool`, :class:`_Fuse`) that save x and the (B, 1,
    HW) softmax instead of autograd's intermediates, and write the input
    gradient once (a rank-2 update of the upstream gradient) instead of
    three full-size gradients and their sums. The transforms' 1x1 convs
    are :class:`~mmattn.models.convs.PointwiseConv` (matrix products on
    the (B, C, 1, 1) context). Inference computes the
    attention pooling with the same two batched products
    (:func:`attention_pool`) instead of mmcv's 1x1 convolution, then mmcv's
    fusion, and so does graph capture (tracing, ONNX, ``torch.compile``,
    which derives its own backward: about the eager pass's time on the
    CPU, where compiling mmcv's ops costs 2x more). ``'avg'`` pooling runs
    mmcv's forward.

    Position: after conv3 + BN of a bottleneck, before the residual add
    (``after_conv3``); the paper's detection setting is ratio 1/16 in
    stages c3-c5.

    Args:
        in_channels (int): Channels C of the input.
        ratio (float): Width of the transform's bottleneck, int(C * ratio)
            channels. Default: 1/16 (the paper's r16; mmcv has no default).
        pooling_type (str): ``'att'`` (eq. 3) or ``'avg'`` (global average
            pooling, the paper's ablation). Default: 'att'.
        fusion_types (Sequence[str]): Non-empty subset of
            ``('channel_add', 'channel_mul')``. Default: ('channel_add',).
    """

    takes_residual = True
    takes_norm_input = True

    def __init__(self,
                 in_channels: int,
                 ratio: float = 1 / 16,
                 pooling_type: str = 'att',
                 fusion_types: Sequence[str] = ('channel_add', )) -> None:
        check_positive_int(in_channels, 'in_channels')
        if not (isinstance(ratio, (int, float)) and 0 < ratio
                and int(in_channels * ratio) >= 1):
            raise ValueError(f'ratio must be a number with int(in_channels '
                             f'* ratio) >= 1, got {ratio!r} for in_channels '
                             f'{in_channels}')
        check_choice(pooling_type, POOLING_TYPES, 'pooling_type')
        if (isinstance(fusion_types, str) or not fusion_types
                or len(set(fusion_types)) != len(fusion_types)):
            raise ValueError(f'fusion_types must be a non-empty sequence of '
                             f'distinct names from {FUSION_TYPES}, got '
                             f'{fusion_types!r}')
        for name in fusion_types:
            check_choice(name, FUSION_TYPES, 'fusion_types')
        super().__init__(in_channels, ratio, pooling_type,
                         tuple(fusion_types))
        # the transforms' 1x1 convs run on (B, C, 1, 1): as matrix products
        for branch in (self.channel_add_conv, self.channel_mul_conv):
            if branch is not None:
                branch[0] = PointwiseConv.from_conv(branch[0])
                branch[3] = PointwiseConv.from_conv(branch[3])

    def spatial_pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling_type != 'att':
            return super().spatial_pool(x)  # mmcv's average pooling
        return attention_pool(x, self.conv_mask.weight,
                              self.conv_mask.bias)[0].to(x.dtype)

    def forward(self,
                x: torch.Tensor,
                norm_input: Optional[NormInput] = None,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``norm_input`` and ``residual`` as for a
        :class:`~mmattn.models.attention.ChannelGate`: a residual block that
        places the block right after its last BatchNorm hands the norm's
        input and affine (the backward keeps that input, which the norm
        keeps anyway, instead of x) and its shortcut (added in the pass of
        the fusion)."""
        if self.pooling_type != 'att' or not needs_grad(
                x, *self.parameters()):
            out = super().forward(x)  # through spatial_pool above
            return out if residual is None else out + residual
        source, affine = None, None
        if norm_input is not None:
            source, scale, shift = norm_input
            affine = (scale.view(1, -1), shift.view(1, -1))
        handoff = GradientHandoff()
        context = _AttentionPool.apply(x, self.conv_mask.weight,
                                       self.conv_mask.bias, handoff, source,
                                       affine)
        mul = add = None  # (B, C, 1, 1) each
        if self.channel_mul_conv is not None:
            mul = torch.sigmoid(self.channel_mul_conv(context))
        if self.channel_add_conv is not None:
            add = self.channel_add_conv(context)
        return _Fuse.apply(x, mul, add, residual, handoff, source, affine)
