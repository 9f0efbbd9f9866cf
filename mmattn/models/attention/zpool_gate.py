"""The Z-pool spatial gate shared by CBAM and Triplet attention."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable

from mmattn.models.common import (ActLayer, GradientHandoff, accumulate_dtype,
                                  capturing_graph, check_odd_kernel,
                                  create_act, max_mean_pool, needs_grad,
                                  row_blocks)
from mmattn.models.convs import few_channel_conv_layout


def zpool(x: torch.Tensor) -> torch.Tensor:
    """Z-pool: ``cat[max, mean]`` over dim 1, ``(B, N, P, Q) -> (B, 2, P,
    Q)``.

    The order (max first, then mean) is the official code's
    (``ChannelPool`` in Jongchan/attention-module, ``ZPool`` in
    landskape-ai/triplet-attention), so official conv weights load as they
    are; the CBAM paper writes ``[AvgPool; MaxPool]``, which only permutes the
    conv's two input channels. The mean is accumulated in fp32 under
    half-precision autocast, then both maps return to ``x.dtype``.
    """
    return max_mean_pool(x, dim=1).to(x.dtype)  # (B, 2, P, Q)


class _ScaledZPool(torch.autograd.Function):
    """The Z-pool of ``y = x * s`` for a (B, C, 1, 1) ``s`` that never
    writes y: a block of rows at a time (:func:`row_blocks`), y rebuilt in
    cache. Keeps x, s and the argmax over channels. With
    :math:`g_{max}, g_{mean}` the gradients of the two maps, the gradient
    of y is :math:`g_y = [c = c^*] g_{max} + g_{mean} / C`, and

    .. math::

        \\frac{\\partial L}{\\partial x} = g_y\\, s, \\qquad
        \\frac{\\partial L}{\\partial s_c} = \\sum_{hw} g_y\\, x
            = \\frac{1}{C} \\sum_{hw} g_{mean}\\, x_c
            + \\sum_{hw:\\, c^* = c} g_{max}\\, x_c

    the first added into the gradient of x the module's last function
    hands over (:class:`~mmattn.models.common.GradientHandoff`), a rank-1
    update and a scatter, then left there for its first function; without
    a handoff, returned.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor,
                handoff: GradientHandoff) -> torch.Tensor:
        pooled, indices = _scaled_zpool_in_blocks(x, scale, argmax=True)
        ctx.save_for_backward(x, scale, indices)
        ctx.handoff = handoff
        return pooled

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, scale, indices = ctx.saved_tensors
        b, c = x.shape[:2]
        g_max = grad[:, :1].to(x.dtype)  # (B, 1, H, W)
        g_mean = (grad[:, 1:] / c).to(x.dtype)  # (B, 1, H, W)
        grad_scale = None
        if ctx.needs_input_grad[1]:
            # (B, C, H, W) . (B, 1, H, W) over H, W -> (B, C)
            dots = torch.einsum('bchw,bhw->bc', x, g_mean[:, 0])
            x_at_max = x.gather(1, indices)  # (B, 1, H, W)
            dots.scatter_add_(1, indices.flatten(1),
                              (g_max * x_at_max).flatten(1))
            grad_scale = dots.view(scale.shape).to(scale.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = None if ctx.handoff is None else ctx.handoff.take()
            if grad_x is None:  # no handoff: this function's own gradient
                grad_x = scale * g_mean  # (B, C, H, W)
            else:
                grad_x.addcmul_(scale, g_mean)
            scale_at_max = scale.expand_as(x).gather(1, indices)
            grad_x.scatter_add_(1, indices, g_max * scale_at_max)
            if ctx.handoff is not None:  # left for the module's first
                ctx.handoff.grad, grad_x = grad_x, None
        return grad_x, grad_scale, None


def _scaled_zpool_in_blocks(x: torch.Tensor, scale: torch.Tensor,
                            argmax: bool
                            ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """[max; mean] over channels of ``x * scale``, (B, 2, H, W) in at least
    fp32, a block of rows at a time, and the argmax (None without
    ``argmax``: ``amax`` is the faster kernel)."""
    b, c, h, w = x.shape
    acc = accumulate_dtype(x)
    values = x.new_empty(b, 1, h, w)
    indices = torch.empty(b, 1, h, w, dtype=torch.long,
                          device=x.device) if argmax else None
    sums = torch.empty(b, 1, h, w, dtype=acc, device=x.device)
    for rows in row_blocks(x):
        y = x[:, :, rows] * scale  # (B, C, rows, W), in cache
        if argmax:
            torch.max(y, 1, keepdim=True,
                      out=(values[:, :, rows], indices[:, :, rows]))
        else:
            torch.amax(y, 1, keepdim=True, out=values[:, :, rows])
        torch.sum(y, 1, keepdim=True, dtype=acc, out=sums[:, :, rows])
    # the values of zpool(x * scale) before its cast
    return torch.cat([values.to(acc), sums.div_(c)], dim=1), indices


def scaled_zpool(x: torch.Tensor, scale: torch.Tensor,
                 handoff: Optional[GradientHandoff] = None) -> torch.Tensor:
    """``zpool(x * scale)`` for a (B, C, H, W) x and a (B, C, 1, 1)
    ``scale`` without the full-size product: CBAM's spatial gate pools its
    channel gate's output. Under autograd (:class:`_ScaledZPool`) the
    gradient of x is added to the one ``handoff`` holds and left there (or,
    without one, returned); graph capture records the plain ops."""
    scale = scale.to(x.dtype)
    if needs_grad(x, scale):
        return _ScaledZPool.apply(x, scale, handoff).to(x.dtype)
    if capturing_graph():
        return zpool(x * scale)
    return _scaled_zpool_in_blocks(x, scale, argmax=False)[0].to(x.dtype)


class ZPoolGate(nn.Module):
    """Spatial attention map from a Z-pool:
    :math:`\\sigma(\\mathrm{BN}(f^{k \\times k}([\\max_1 x; \\mathrm{mean}_1
    x])))`.

    The spatial gate of CBAM (`arXiv 1807.06521
    <https://arxiv.org/abs/1807.06521>`_, eq. 3) and the gate of each
    Triplet-attention branch (`arXiv 2010.03045
    <https://arxiv.org/abs/2010.03045>`_): Z-pool over dim 1, a k x k conv
    2 -> 1 without bias, padding (k-1)/2, a one-channel BN with the official
    ``eps=1e-5, momentum=0.01``, and the gate. Dim 1 is the channel axis for
    CBAM; Triplet attention passes rotated views so that H or W plays that
    role.

    :meth:`forward` returns the map ``(B, 1, P, Q)`` for an input ``(B, N, P,
    Q)``; the caller multiplies (Triplet attention averages three maps
    before one multiplication). It is a building block, not a registered
    attention module.

    Args:
        kernel_size (int): Odd size k of the conv. Default: 7 (both papers).
        gate_layer (str | type): :math:`\\sigma`. Default: 'sigmoid'.
        zero_init (bool): Initialise the BN weight to 0 (the official
            ResNets do it for every BN whose name contains ``SpatialGate``),
            so the map starts at exactly :math:`\\sigma(0) = 0.5`; False sets
            it to 1. Default: False.
        kernel_name (str): Argument name reported when ``kernel_size`` is
            invalid. Default: 'kernel_size'.
    """

    def __init__(self,
                 kernel_size: int = 7,
                 gate_layer: ActLayer = 'sigmoid',
                 zero_init: bool = False,
                 kernel_name: str = 'kernel_size') -> None:
        super().__init__()
        check_odd_kernel(kernel_size, kernel_name)
        self.zero_init = zero_init
        self.conv = nn.Conv2d(2, 1, kernel_size,
                              padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)
        self.gate = create_act(gate_layer, 'gate_layer')
        self.init_weights()

    def init_weights(self) -> None:
        """The official ResNets' state-dict loop: conv ``kaiming_normal_``
        (fan_out), BN weight 0 (``zero_init``) or 1, BN bias 0."""
        nn.init.kaiming_normal_(self.conv.weight, mode='fan_out',
                                nonlinearity='relu')
        nn.init.constant_(self.bn.weight, 0. if self.zero_init else 1.)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, N, P, Q) -> (B, 2, P, Q) -> (B, 1, P, Q)
        return self.gate_pooled(zpool(x))

    def gate_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """The map from a Z-pool computed by the caller, (B, 2, P, Q) ->
        (B, 1, P, Q) (Triplet attention pools its three views at once); the
        conv runs channels-last on the CPU
        (:func:`~mmattn.models.convs.few_channel_conv_layout`: 3.5x faster
        forward + backward at 2x2x256x334)."""
        return self.gate(self.bn(self.conv(few_channel_conv_layout(pooled))))
