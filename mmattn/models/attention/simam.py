"""SimAM: a simple, parameter-free attention module."""
import torch

from mmattn.models.common import spatial_mean_var
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

    def __init__(self, in_channels: int, e_lambda: float = 1e-4) -> None:
        super().__init__()
        if not e_lambda > 0:
            raise ValueError(f'e_lambda must be > 0, got {e_lambda!r}')
        self.in_channels = in_channels
        self.e_lambda = float(e_lambda)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[2] * x.shape[3] - 1
        # var with divisor n = HW - 1; a 1x1 map has var 0 (see docstring).
        mean, var = spatial_mean_var(x, correction=1 if n > 0 else 0)
        inv = 1.0 / (4 * (var + self.e_lambda))  # (B, C, 1, 1), fp32
        e_inv = (x - mean).square_().mul_(inv).add_(0.5)  # (B, C, H, W)
        return x * torch.sigmoid(e_inv).to(x.dtype)

    def extra_repr(self) -> str:
        return f'e_lambda={self.e_lambda}'
