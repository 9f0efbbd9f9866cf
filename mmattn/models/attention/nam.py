"""Normalization-based Attention Module (NAM)."""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from mmattn.models.common import check_positive_int
from mmattn.registry import MODELS
from .base import AttentionModule


def _bn_importance(bn: nn.Module) -> torch.Tensor:
    """NAM's weight factors |gamma_i| / sum_j |gamma_j| of ``bn``, taken
    without gradient (the official code reads ``bn.weight.data``).

    All-zero scales give all-zero factors instead of 0/0.
    """
    gamma = bn.weight.detach().abs()
    return gamma / gamma.sum().clamp_min(torch.finfo(gamma.dtype).tiny)


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
    ``after_conv3``).

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.spatial_bn is not None and (h, w) != self.spatial_size:
            raise ValueError(
                f'NAM was built with spatial_size={self.spatial_size} for its '
                f'pixel gate but got an input of H x W = {(h, w)}')
        weight = _bn_importance(self.channel_bn).view(1, c, 1, 1)
        gate = torch.sigmoid(self.channel_bn(x) * weight)  # (B, C, H, W)
        out = x * gate.to(x.dtype)
        if self.spatial_bn is None:
            return out
        # Positions become BN1d features, normalised over batch and C.
        flat = out.flatten(2).transpose(1, 2)  # (B, H*W, C)
        weight = _bn_importance(self.spatial_bn).view(1, h * w, 1)
        gate = torch.sigmoid(self.spatial_bn(flat) * weight)  # (B, H*W, C)
        gate = gate.transpose(1, 2).reshape(b, c, h, w)  # (B, C, H, W)
        return out * gate.to(x.dtype)

    def extra_repr(self) -> str:
        return f'spatial_size={self.spatial_size}'
