"""Residual Attention: the soft-mask branch of an attention module."""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmattn.models.common import (ActLayer, check_positive_int, create_act,
                                  reduced_channels)
from mmattn.registry import MODELS
from .base import AttentionModule


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck residual unit (He et al., ECCV 2016), the
    unit of the official Attention-56/92:

    ``x + conv1x1(act(BN(conv3x3(act(BN(conv1x1(act(BN(x)))))))))``,
    C -> ``mid_channels`` -> ``mid_channels`` -> C, convs without bias.
    """

    def __init__(self, channels: int, mid_channels: int,
                 act_layer: ActLayer = 'relu') -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, mid_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, mid_channels, 3, padding=1,
                               bias=False)
        self.bn3 = nn.BatchNorm2d(mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, channels, 1, bias=False)
        self.act = create_act(act_layer, 'act_layer')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act(self.bn1(x)))  # (B, mid, H, W)
        out = self.conv2(self.act(self.bn2(out)))  # (B, mid, H, W)
        out = self.conv3(self.act(self.bn3(out)))  # (B, C, H, W)
        return x + out


def _units(num: int, channels: int, mid_channels: int,
           act_layer: ActLayer) -> nn.Sequential:
    return nn.Sequential(*(PreActBottleneck(channels, mid_channels, act_layer)
                           for _ in range(num)))


@MODELS.register_module()
class ResidualAttention(AttentionModule):
    """Soft-mask branch of a Residual Attention module, with attention
    residual learning.

    `Residual Attention Network for Image Classification
    <https://arxiv.org/abs/1704.06904>`_ (Wang et al., CVPR 2017), Sec. 3.
    An attention module there is a trunk branch T and a soft-mask branch M
    combined by *attention residual learning* (Sec. 3.1):

    .. math::

        H_{i,c}(x) = (1 + M_{i,c}(x)) \\cdot T_{i,c}(x)

    Here the backbone's own layers play the trunk, so the module computes
    ``(1 + M(x)) * x`` and only adds the mask branch. The mask branch is an
    hourglass (Sec. 3.3, official ``Attention-56-deploy.prototxt``) built
    from ``r = num_units`` pre-activation bottleneck units
    (:class:`PreActBottleneck`, width C/4):

    * bottom-up, ``depth`` times: 3x3 stride-2 max-pool, then r units; the
      output of every level but the lowest also feeds a skip branch of
      one unit;
    * r more units at the lowest resolution (the prototxt's ``res3_2``);
    * top-down, for each level from the lowest skip up: bilinear upsampling
      to the skip's exact size, plus the skip, then r units;
    * bilinear upsampling to the input size, then
      BN-ReLU-1x1 conv-BN-ReLU-1x1 conv (C -> C, no bias) and the gate.

    ``depth`` follows the paper's rule of pooling a stage's map down to
    7 x 7 at 224 px: Attention-56 uses 3 levels on the 56 x 56 stage
    (its stage-1 module, the default here), 2 on 28 x 28 and 1 on 14 x 14.

    Size handling, for any H x W:

    * pooling is Caffe's: no padding, ceil mode, windows clipped to the
      map (``ceil((n - 3) / 2) + 1`` outputs: 56 -> 28 -> 14 -> 7);
    * a pooling that would leave a single pixel is skipped and the level
      runs on the unpooled map: a 1 x 1 map has no layout left to
      attend to, and train-mode BN of one image at one pixel is undefined;
    * upsampling is bilinear with ``align_corners=True`` (Caffe's ``Interp``
      layer), always to the exact size of the skip / input.

    Gate: ``'sigmoid'`` (paper, ``imagenet_model/`` prototxts); the
    repository's ``model/Attention-56-deploy.prototxt`` uses ``'tanh'``
    instead, which can be selected. Init: the released prototxts are
    deploy-only (no fillers), so :meth:`init_weights` uses the ``msra``
    filler of the Caffe ResNets the paper builds on
    (:math:`\\mathcal{N}(0, 2 / \\mathrm{fan\\_in})`) and BN
    :math:`\\gamma = 1, \\beta = 0`.

    Position: between stages (``after_stage``), where the paper's modules
    sit (one per stage in Attention-56); with mmdet's ResNet, whose plugin
    positions are inside bottlenecks, ``after_conv3`` also works but adds
    the (large) branch to every block.

    Args:
        in_channels (int): Channels C of the input.
        depth (int): Number of down/up levels of the hourglass. Default: 3
            (Attention-56 stage 1, for 56 x 56 maps).
        num_units (int): Residual units r between adjacent poolings.
            Default: 1 (paper: p = 1, t = 2, r = 1).
        rd_ratio (float): Bottleneck width of the units as a fraction of C.
            Default: 1/4 (official).
        rd_channels (int, optional): Explicit bottleneck width; overrides
            ``rd_ratio``. Default: None.
        rd_divisor (int): Round the bottleneck width to a multiple of this.
            Default: 1.
        act_layer (str | type): Activation of the units and the head.
            Default: 'relu'.
        gate_layer (str | type): Mask gate. Default: 'sigmoid'.
    """

    _abbr_ = 'res_att'
    default_position = 'after_stage'

    def __init__(self,
                 in_channels: int,
                 depth: int = 3,
                 num_units: int = 1,
                 rd_ratio: float = 1 / 4,
                 rd_channels: Optional[int] = None,
                 rd_divisor: int = 1,
                 act_layer: ActLayer = 'relu',
                 gate_layer: ActLayer = 'sigmoid') -> None:
        super().__init__()
        check_positive_int(in_channels, 'in_channels')
        self.depth = check_positive_int(depth, 'depth')
        check_positive_int(num_units, 'num_units')
        mid = reduced_channels(in_channels, rd_ratio, rd_channels, rd_divisor)
        c = in_channels
        self.down = nn.ModuleList(
            _units(num_units, c, mid, act_layer) for _ in range(depth))
        self.bottom = _units(num_units, c, mid, act_layer)
        self.skips = nn.ModuleList(
            PreActBottleneck(c, mid, act_layer) for _ in range(depth - 1))
        self.up = nn.ModuleList(
            _units(num_units, c, mid, act_layer) for _ in range(depth - 1))
        # BN-act-1x1-BN-act-1x1 (the prototxt's linear_1 / linear_2)
        self.head = nn.Sequential(
            nn.BatchNorm2d(c),
            create_act(act_layer, 'act_layer'),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
            create_act(act_layer, 'act_layer'),
            nn.Conv2d(c, c, 1, bias=False),
        )
        self.gate = create_act(gate_layer, 'gate_layer')
        self.init_weights()

    def init_weights(self) -> None:
        """Caffe ``msra`` convs, BN gamma 1 / beta 0 (see class doc)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_in',
                                        nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _pool(x: torch.Tensor) -> torch.Tensor:
        """Caffe max-pool 3x3/2 (ceil mode, clipped windows); identity if
        it would leave a single pixel."""
        h, w = x.shape[-2:]
        kernel = (min(3, h), min(3, w))  # a window clipped to a tiny map
        out_h = (h - kernel[0] + 1) // 2 + 1  # ceil((h - k) / 2) + 1
        out_w = (w - kernel[1] + 1) // 2 + 1
        if out_h * out_w < 2:
            return x
        return F.max_pool2d(x, kernel, stride=2, ceil_mode=True)

    @staticmethod
    def _upsample(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        return F.interpolate(x, size=size, mode='bilinear',
                             align_corners=True)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """Soft mask M(x), (B, C, H, W), in the gate's range."""
        m = x
        skips: List[torch.Tensor] = []
        for level, units in enumerate(self.down):
            m = units(self._pool(m))  # (B, C, ~H/2^(level+1), ~W/2^(level+1))
            if level < self.depth - 1:
                skips.append(m)
        m = self.bottom(m)
        for level in reversed(range(self.depth - 1)):
            skip = skips[level]
            m = self._upsample(m, skip.shape[-2:]) + self.skips[level](skip)
            m = self.up[level](m)  # (B, C, skip's H, skip's W)
        m = self._upsample(m, x.shape[-2:])  # (B, C, H, W)
        return self.gate(self.head(m))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + self.mask(x))
