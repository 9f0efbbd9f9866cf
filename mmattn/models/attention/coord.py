"""Coordinate Attention (CA)."""
from typing import Optional

import torch
import torch.nn as nn

from mmattn.models.common import (ActLayer, create_act, reduced_channels,
                                  scale_by_maps, spatial_mean)
from mmattn.registry import MODELS
from .base import AttentionModule


@MODELS.register_module()
class CoordAttention(AttentionModule):
    """Coordinate attention block.

    `Coordinate Attention for Efficient Mobile Network Design
    <https://arxiv.org/abs/2103.02907>`_ (Hou et al., CVPR 2021), Sec. 3.2.
    SE pools the whole map into one vector; CA pools along each axis
    separately, so the two gates keep the position along the other axis:

    .. math::

        z^h_c(i) = \\frac{1}{W} \\sum_{j} x_c(i, j), \\quad
        z^w_c(j) = \\frac{1}{H} \\sum_{i} x_c(i, j)

        f = \\delta(\\mathrm{BN}(F_1([z^h, z^w]))), \\quad
        [f^h, f^w] = \\mathrm{split}(f)

        g^h = \\sigma(F_h(f^h)), \\quad g^w = \\sigma(F_w(f^w)), \\quad
        y_c(i, j) = x_c(i, j) \\cdot g^h_c(i) \\cdot g^w_c(j)

    :math:`[\\cdot, \\cdot]` concatenates the H and W positions into one
    sequence of length H + W, so the shared 1x1 conv :math:`F_1`
    (C -> mip) and the BN see both directions at once (BN statistics are
    taken over B x (H + W) positions). :math:`\\delta` is h-swish,
    ``x * ReLU6(x + 3) / 6``, which is exactly ``nn.Hardswish``.

    Defaults follow the official ``coordatt.py``: ``mip = max(8, C // 32)``
    (``rd_ratio=1/32``, ``min_channels=8``), all three 1x1 convs with
    bias, BN between :math:`F_1` and h-swish. :meth:`init_weights` is the
    official model init (``mbv2_ca.py``): conv weights
    :math:`\\mathcal{N}(0, 2 / (k^2 C_{out}))`, conv biases 0, BN
    :math:`\\gamma = 1, \\beta = 0`.

    Position: the paper inserts CA in MobileNetV2's inverted residual after
    the depthwise 3x3 (+BN+ReLU6) and before the 1x1 projection; the
    official code gives no ResNet placement. The default here is
    ``after_conv3`` (after conv3 + BN, before the residual add), where SE
    and CBAM, the blocks CA is compared with, sit in a ResNet bottleneck;
    ``after_conv2`` is the structural analogue of the MobileNetV2 slot.

    Args:
        in_channels (int): Channels C of the input (and output).
        rd_ratio (float): Width of the shared conv as a fraction of C
            (1 / reduction). Default: 1/32 (official).
        rd_channels (int, optional): Explicit width mip; overrides
            ``rd_ratio`` and ``min_channels``. Default: None.
        rd_divisor (int): Round mip to a multiple of this. Default: 1.
        min_channels (int): Lower bound of mip. Default: 8 (official
            ``max(8, C // 32)``).
        bias (bool): Biases on the three 1x1 convs. Default: True
            (official).
        act_layer (str | type): :math:`\\delta`. Default: 'hard_swish'.
        gate_layer (str | type): :math:`\\sigma`. Default: 'sigmoid'.
    """

    _abbr_ = 'coord_att'
    takes_residual = True

    def __init__(self,
                 in_channels: int,
                 rd_ratio: float = 1 / 32,
                 rd_channels: Optional[int] = None,
                 rd_divisor: int = 1,
                 min_channels: int = 8,
                 bias: bool = True,
                 act_layer: ActLayer = 'hard_swish',
                 gate_layer: ActLayer = 'sigmoid') -> None:
        super().__init__()
        mip = reduced_channels(in_channels, rd_ratio, rd_channels, rd_divisor,
                               min_channels)
        # Names follow the official CoordAtt so weights map one to one.
        self.conv1 = nn.Conv2d(in_channels, mip, 1, bias=bias)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = create_act(act_layer, 'act_layer')
        self.conv_h = nn.Conv2d(mip, in_channels, 1, bias=bias)
        self.conv_w = nn.Conv2d(mip, in_channels, 1, bias=bias)
        self.gate = create_act(gate_layer, 'gate_layer')
        self.init_weights()

    def init_weights(self) -> None:
        """Official init (``mbv2_ca.py``): N(0, 2 / (k*k*C_out)) convs,
        zero biases, BN gamma 1 / beta 0."""
        for conv in (self.conv1, self.conv_h, self.conv_w):
            nn.init.kaiming_normal_(conv.weight, mode='fan_out',
                                    nonlinearity='relu')
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        nn.init.ones_(self.bn1.weight)
        nn.init.zeros_(self.bn1.bias)

    def forward(self, x: torch.Tensor,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``y (+ residual)``; a residual block may hand its shortcut as
        ``residual``, added in the pass of the product."""
        h, w = x.shape[-2:]
        z_h = spatial_mean(x, dims=(3, ))  # (B, C, H, 1), mean over W
        z_w = spatial_mean(x, dims=(2, ))  # (B, C, 1, W), mean over H
        # W positions laid along the H axis so both share the conv.
        z = torch.cat([z_h, z_w.transpose(2, 3)], dim=2)  # (B, C, H+W, 1)
        f = self.act(self.bn1(self.conv1(z.to(x.dtype))))  # (B, mip, H+W, 1)
        f_h, f_w = torch.split(f, [h, w], dim=2)  # (B, mip, H|W, 1)
        g_h = self.gate(self.conv_h(f_h))  # (B, C, H, 1)
        g_w = self.gate(self.conv_w(f_w.transpose(2, 3)))  # (B, C, 1, W)
        # x * g_h * g_w, the (B, C, H, W) product never kept for training
        return scale_by_maps(x, [g_h, g_w], product=True, residual=residual)
