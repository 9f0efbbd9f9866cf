"""Spatial Group-wise Enhance (SGE)."""
import torch
import torch.nn as nn

from mmattn.models.common import (check_divisible, check_positive_int,
                                  spatial_mean, spatial_mean_var)
from mmattn.registry import MODELS
from .base import AttentionModule


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        xg = x.view(b, self.groups, c // self.groups, h, w)  # (B,G,C/G,H,W)
        g = spatial_mean(xg, dims=(3, 4))  # (B, G, C/G, 1, 1), fp32
        # Similarity of each position to its group's global descriptor.
        sim = (xg * g).sum(dim=2)  # (B, G, H, W), fp32
        # Unbiased std as official; a 1x1 map has std 0 (see docstring).
        mean, var = spatial_mean_var(sim, correction=1 if h * w > 1 else 0)
        # Flooring var keeps sqrt's gradient finite on constant maps.
        std = var.clamp_min(torch.finfo(var.dtype).tiny).sqrt()
        t = (sim - mean) / (std + self.eps)  # (B, G, H, W)
        a = t * self.weight + self.bias  # (B, G, H, W)
        gate = torch.sigmoid(a).to(x.dtype).unsqueeze(2)  # (B, G, 1, H, W)
        return (xg * gate).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f'groups={self.groups}, eps={self.eps}'
