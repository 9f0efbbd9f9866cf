"""Triplet attention."""
from typing import Optional

import torch

from mmattn.models.common import (ActLayer, GradientHandoff,
                                  check_positive_int, max_mean_pools,
                                  scale_by_maps)
from mmattn.registry import MODELS
from .base import AttentionModule
from .zpool_gate import ZPoolGate


@MODELS.register_module()
class TripletAttention(AttentionModule):
    """Triplet attention: three Z-pool gates on rotated views, averaged.

    `Rotate to Attend: Convolutional Triplet Attention Module
    <https://arxiv.org/abs/2010.03045>`_ (Misra et al., WACV 2021), official
    code ``landskape-ai/triplet-attention`` (``triplet_attention.py`` and the
    older ``MODELS/triplet_attention.py`` used by its ``MODELS/resnet.py``).
    Each branch is a :class:`~mmattn.models.attention.zpool_gate.ZPoolGate`
    :math:`G` (Z-pool, 7x7 conv 2 -> 1 without bias, BN(eps 1e-5, momentum
    0.01), sigmoid) applied to a rotation of x, whose gated output is
    rotated back:

    .. math::

        y = \\tfrac{1}{3}\\big(
              x \\odot G_{hw}(x)
            + \\big(\\hat{x}_1 \\odot G_{cw}(\\hat{x}_1)\\big)^{\\top_1}
            + \\big(\\hat{x}_2 \\odot G_{hc}(\\hat{x}_2)\\big)^{\\top_2}\\big)

    with :math:`\\hat{x}_1` = x permuted (0, 2, 1, 3) (H pooled away, the
    conv runs over the (C, W) plane) and :math:`\\hat{x}_2` = x permuted
    (0, 3, 2, 1) (W pooled away, the conv runs over the (H, C) plane, in that
    order). ``no_spatial=True`` drops the plain H-W branch and averages the
    other two (1/2). The module computes the same thing as
    ``x * mean(maps)``: it rotates only the small maps, never x.

    **Init** (the official ``MODELS/resnet.py`` state-dict loop, in
    :meth:`init_weights` so that mmdet's generic BN init does not override
    it): the BN weight of the plain H-W branch (``hw``, official name
    ``SpatialGate``) is 0, so that map starts at exactly 0.5; the rotated
    branches ``cw`` and ``hc`` (official ``ChannelGateH``,
    ``ChannelGateW``) keep BN weight 1; convs ``kaiming_normal_``
    (fan_out), BN biases 0. The loop zeroes every BN whose name contains
    ``SpatialGate``, and the repo's training ResNet builds its blocks from
    ``MODELS/triplet_attention.py``, where only the H-W branch has that
    name. (The newer root ``triplet_attention.py`` renames the branches
    ``cw``/``hc``/``hw``, which the loop would no longer match.)

    Position: after conv3 + BN of a bottleneck, before the residual add
    (``after_conv3``). 3 x (2*49 + 2) = 300 parameters per block, none of
    which depend on C.

    Args:
        in_channels (int): Channels C of the input (only checked; the
            parameters do not depend on it).
        kernel_size (int): Odd size of the three convs. Default: 7 (the
            official README also reports 3).
        no_spatial (bool): Drop the H-W branch (official option).
            Default: False.
        gate_layer (str | type): Gate of each branch. Default: 'sigmoid'.
    """

    _abbr_ = 'triplet'
    takes_residual = True

    def __init__(self,
                 in_channels: int,
                 kernel_size: int = 7,
                 no_spatial: bool = False,
                 gate_layer: ActLayer = 'sigmoid') -> None:
        super().__init__()
        check_positive_int(in_channels, 'in_channels')
        self.cw = ZPoolGate(kernel_size, gate_layer)
        self.hc = ZPoolGate(kernel_size, gate_layer)
        self.hw = None if no_spatial else ZPoolGate(
            kernel_size, gate_layer, zero_init=True)
        self.init_weights()

    def init_weights(self) -> None:
        for branch in (self.cw, self.hc, self.hw):
            if branch is not None:
                branch.init_weights()

    def forward(self, x: torch.Tensor,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``y (+ residual)``; a residual block may hand its shortcut as
        ``residual``, added in the pass of the product. In training the
        gradient of x is written once: the product's backward hands it to
        the pooling's (:class:`~mmattn.models.common.GradientHandoff`)."""
        handoff = GradientHandoff()
        # Z-pools over H, W (and C) in one call, whose backward completes
        # the product's gradient of x: (B, C, 2, W), (B, C, H, 2) (and
        # (B, 2, H, W)).
        dims = (2, 3) if self.hw is None else (2, 3, 1)
        pooled = [p.to(x.dtype) for p in max_mean_pools(x, dims, handoff)]
        # C-W branch: (B, 2, C, W) -> map (B, 1, C, W) -> (B, C, 1, W)
        map_cw = self.cw.gate_pooled(
            pooled[0].transpose(1, 2)).transpose(1, 2)
        # H-C branch: (B, 2, H, C) -> map (B, 1, H, C) -> (B, C, H, 1)
        map_hc = self.hc.gate_pooled(
            pooled[1].permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        maps = [map_cw, map_hc]
        if self.hw is not None:
            maps.append(self.hw.gate_pooled(pooled[2]))  # (B, 1, H, W)
        # x times the branches' mean, never materialised under autograd
        return scale_by_maps(x, maps, divisor=len(maps), residual=residual,
                             handoff=handoff)
