"""Squeeze-and-Excitation (SE)."""
from typing import Optional

import torch

from mmattn.models.common import (ActLayer, create_act, reduced_channels,
                                  spatial_mean)
from mmattn.models.convs import PointwiseConv
from mmattn.registry import MODELS
from .base import ChannelGate


@MODELS.register_module()
class SE(ChannelGate):
    """Squeeze-and-Excitation block.

    `Squeeze-and-Excitation Networks <https://arxiv.org/abs/1709.01507>`_
    (Hu et al., CVPR 2018), eqs. 2-4:

    .. math::

        z = \\mathrm{GAP}(x), \\quad
        s = \\sigma(W_2\\,\\delta(W_1 z + b_1) + b_2), \\quad
        \\tilde{x}_c = s_c \\cdot x_c

    with :math:`W_1 \\in \\mathbb{R}^{C/r \\times C}`, ``act_layer`` as
    :math:`\\delta` and ``gate_layer`` as :math:`\\sigma`. The paper and the
    official Caffe models use r = 16 and FCs with bias. Position: after
    conv3 + BN of a bottleneck, before the residual add (``after_conv3``).

    Args:
        in_channels (int): Channels C of the input.
        rd_ratio (float): Reduction 1/r of the squeeze FC. Default: 1/16.
        rd_channels (int, optional): Explicit squeeze width; overrides
            ``rd_ratio``. Default: None.
        rd_divisor (int): Round the squeeze width to a multiple of this
            (timm uses 8). Default: 1, the paper's plain C/r.
        bias (bool): Biases on both FCs. Default: True (paper).
        act_layer (str | type): :math:`\\delta`. Default: 'relu'.
        gate_layer (str | type): :math:`\\sigma`. Default: 'sigmoid'.
    """

    _abbr_ = 'se'

    def __init__(self,
                 in_channels: int,
                 rd_ratio: float = 1 / 16,
                 rd_channels: Optional[int] = None,
                 rd_divisor: int = 1,
                 bias: bool = True,
                 act_layer: ActLayer = 'relu',
                 gate_layer: ActLayer = 'sigmoid') -> None:
        super().__init__()
        rd_channels = reduced_channels(in_channels, rd_ratio, rd_channels,
                                       rd_divisor)
        # 1x1 convs act as the FCs on the pooled (B, C, 1, 1) descriptor.
        self.fc1 = PointwiseConv(in_channels, rd_channels, bias=bias)
        self.act = create_act(act_layer, 'act_layer')
        self.fc2 = PointwiseConv(rd_channels, in_channels, bias=bias)
        self.gate = create_act(gate_layer, 'gate_layer')

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        z = spatial_mean(x).to(x.dtype)  # (B, C, 1, 1)
        return self.gate(self.fc2(self.act(self.fc1(z))))  # (B, C, 1, 1)
