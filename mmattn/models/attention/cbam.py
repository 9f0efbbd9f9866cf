"""Convolutional Block Attention Module (CBAM)."""
from typing import Optional

import torch
import torch.nn as nn

from mmattn.models.common import (ActLayer, GradientHandoff,
                                  capturing_graph, create_act, max_mean_pool,
                                  nchw_or_channels_last, reduced_channels,
                                  scale_by_maps, scale_channels)
from mmattn.registry import MODELS
from .base import AttentionModule
from .zpool_gate import ZPoolGate, scaled_zpool


@MODELS.register_module()
class CBAM(AttentionModule):
    """Convolutional Block Attention Module.

    `CBAM: Convolutional Block Attention Module
    <https://arxiv.org/abs/1807.06521>`_ (Woo et al., ECCV 2018), eqs. 1-3,
    official code ``Jongchan/attention-module`` ``MODELS/cbam.py``. A channel
    gate, then a spatial gate, in sequence:

    .. math::

        M_c = \\sigma\\big(\\mathrm{MLP}(\\mathrm{AvgPool}(x))
              + \\mathrm{MLP}(\\mathrm{MaxPool}(x))\\big), \\quad
        x' = M_c \\otimes x,

        M_s = \\sigma\\big(\\mathrm{BN}(f^{7\\times7}(
              [\\max_c x'; \\mathrm{mean}_c x']))\\big), \\quad
        x'' = M_s \\otimes x'

    with one MLP shared by both pooled vectors: ``Linear(C, C/r) -> ReLU ->
    Linear(C/r, C)``, both with bias, r = 16 (so the second bias enters
    :math:`M_c` twice, as in the official code). The spatial gate is a
    :class:`~mmattn.models.attention.zpool_gate.ZPoolGate`: 7x7 conv 2 -> 1
    without bias, BN(eps 1e-5, momentum 0.01), as in the official
    ``SpatialGate``; the paper's eq. 3 has no BN, the released models do.
    The Z-pool order is the official one, ``[max; mean]``, so official
    weights load unchanged (the paper writes ``[avg; max]``).

    **Init** (the official ResNet's state-dict loop, implemented in
    :meth:`init_weights` so that mmdet's generic ``Constant(1)`` BN init
    does not override it): the spatial BN weight is 0, so :math:`M_s` starts
    at exactly 0.5 and the block starts as ``0.5 * M_c * x``; the spatial
    conv is ``kaiming_normal_`` (fan_out); every bias is 0, MLP biases
    included; the MLP weights keep PyTorch's default init.

    Position: after conv3 + BN of a bottleneck, before the residual add
    (``after_conv3``), with C = the block's output channels.

    Args:
        in_channels (int): Channels C of the input.
        rd_ratio (float): Reduction 1/r of the shared MLP. Default: 1/16.
        rd_channels (int, optional): Explicit hidden width; overrides
            ``rd_ratio``. Default: None.
        rd_divisor (int): Round the hidden width to a multiple of this.
            Default: 1, the paper's plain C/r.
        bias (bool): Biases on both MLP layers. Default: True (official).
        act_layer (str | type): Activation of the MLP. Default: 'relu'.
        gate_layer (str | type): :math:`\\sigma` of both gates.
            Default: 'sigmoid'.
        spatial_kernel_size (int): Odd size of the spatial conv. Default: 7.
        no_spatial (bool): Channel gate only (the official ``no_spatial``
            option). Default: False.
    """

    _abbr_ = 'cbam'
    takes_residual = True

    def __init__(self,
                 in_channels: int,
                 rd_ratio: float = 1 / 16,
                 rd_channels: Optional[int] = None,
                 rd_divisor: int = 1,
                 bias: bool = True,
                 act_layer: ActLayer = 'relu',
                 gate_layer: ActLayer = 'sigmoid',
                 spatial_kernel_size: int = 7,
                 no_spatial: bool = False) -> None:
        super().__init__()
        rd_channels = reduced_channels(in_channels, rd_ratio, rd_channels,
                                       rd_divisor)
        self.fc1 = nn.Linear(in_channels, rd_channels, bias=bias)
        self.act = create_act(act_layer, 'act_layer')
        self.fc2 = nn.Linear(rd_channels, in_channels, bias=bias)
        self.gate = create_act(gate_layer, 'gate_layer')
        self.spatial_gate = None if no_spatial else ZPoolGate(
            spatial_kernel_size, gate_layer, zero_init=True,
            kernel_name='spatial_kernel_size')
        self.init_weights()

    def init_weights(self) -> None:
        for fc in (self.fc1, self.fc2):
            if fc.bias is not None:
                nn.init.zeros_(fc.bias)
        if self.spatial_gate is not None:
            self.spatial_gate.init_weights()

    def channel_gate(self, x: torch.Tensor,
                     handoff: Optional[GradientHandoff] = None
                     ) -> torch.Tensor:
        """:math:`M_c`, (B, C, 1, 1) in x's dtype."""
        b, c, h, w = x.shape
        # Both pooled descriptors through the shared MLP in one call.
        if x.stride(1) == 1 and c > 1:  # channels last: (B, HW, C), a view
            flat, dim = x.permute(0, 2, 3, 1).reshape(b, h * w, c), 1
        else:  # (B, C, HW), a view of planes-contiguous x
            flat, dim = x.reshape(b, c, h * w), 2
        pooled = max_mean_pool(flat, dim, handoff).to(x.dtype)
        if dim == 2:
            pooled = pooled.transpose(1, 2)  # [max; mean] (B, 2, C)
        logits = self.fc2(self.act(self.fc1(pooled))).sum(dim=1)  # (B, C)
        return self.gate(logits).reshape(b, c, 1, 1).to(x.dtype)

    def forward(self, x: torch.Tensor,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x'' (+ residual)``; a residual block may hand its shortcut as
        ``residual``, added in the pass of the last product.

        x' is never written: the spatial gate pools :math:`M_c \\otimes x`
        a block of rows at a time (:func:`~.zpool_gate.scaled_zpool`) and
        the output is :math:`x \\otimes M_c \\otimes M_s` in one pass, so
        training keeps x and the small gates only, and the gates'
        gradients reach x through one tensor
        (:class:`~mmattn.models.common.GradientHandoff`). Graph capture
        and inputs neither contiguous nor channels-last (pooled as views
        of x) take the plain composition."""
        if self.spatial_gate is None:
            return scale_channels(x, self.channel_gate(x), residual=residual)
        if capturing_graph() or not nchw_or_channels_last(x):
            x = scale_channels(x, self.channel_gate(x))
            return scale_by_maps(x, [self.spatial_gate(x)],
                                 residual=residual)  # (B, 1, H, W) gate
        handoff = GradientHandoff()
        scale = self.channel_gate(x, handoff)
        spatial = self.spatial_gate.gate_pooled(
            scaled_zpool(x, scale, handoff))  # (B, 1, H, W)
        return scale_by_maps(x, [scale, spatial], product=True,
                             residual=residual, handoff=handoff)
