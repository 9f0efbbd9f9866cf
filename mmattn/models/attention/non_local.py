"""Non-local block, with the attention computed without the HW x HW matrix."""
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import NonLocal2d
from mmengine.model import constant_init, normal_init

from mmattn.models.common import check_choice, check_positive_int
from mmattn.models.convs import is_plain_pointwise, pointwise_convs
from mmattn.registry import MODELS
from .base import AttentionModule
from .self_attention import check_chunk_size, softmax_attention

MODES = ('embedded_gaussian', 'gaussian', 'dot_product', 'concatenation')


def _conv_module(branch: nn.Module) -> nn.Module:
    """The ConvModule of a projection, which ``sub_sample`` wraps in
    ``nn.Sequential(conv_module, max_pool)``."""
    return branch[0] if isinstance(branch, nn.Sequential) else branch


def _bare_conv(conv_module: nn.Module) -> Optional[nn.Conv2d]:
    """The conv of a ConvModule that computes nothing but a plain 1x1 conv
    (no norm, activation or spectral norm), else None."""
    if (conv_module.with_norm or conv_module.with_activation
            or conv_module.with_spectral_norm):
        return None
    conv = conv_module.conv
    return conv if is_plain_pointwise(conv) else None


@MODELS.register_module()
class NonLocal(NonLocal2d, AttentionModule):
    """Non-local block; mmcv's ``NonLocal2d`` with memory-efficient attention.

    `Non-local Neural Networks <https://arxiv.org/abs/1711.07971>`_ (Wang et
    al., CVPR 2018), eqs. 1-6. For every position i, with
    :math:`\\theta, \\phi, g` 1x1 convs C -> C' (C' = C / ``reduction``):

    .. math::

        y_i = \\sum_j \\operatorname{softmax}_j\\big(s\\,
              \\theta(x_i)^\\top \\phi(x_j)\\big)\\, g(x_j), \\qquad
        z_i = W_z\\, y_i + x_i

    ``mode`` picks the pairwise function: ``'embedded_gaussian'`` (above,
    the paper's default; :math:`s = 1/\\sqrt{C'}` if ``use_scale``, else 1),
    ``'gaussian'`` (:math:`\\theta, \\phi` are the identity, :math:`s = 1`),
    ``'dot_product'`` (:math:`\\theta^\\top\\phi / N`, no softmax) and
    ``'concatenation'`` (:math:`\\mathrm{ReLU}(w^\\top[\\theta;\\phi]) / N`).

    **Same module as mmcv's** ``NonLocal2d``: this class subclasses it, so
    the parameters, state-dict keys (``g``, ``theta``, ``phi``,
    ``conv_out``), ``_abbr_ = 'nonlocal_block'``, arguments and init are
    mmcv's, and weights load either way. Only the forward pass of the two
    softmax modes differs: mmcv builds the (HW x HW) matrix, this class calls
    :func:`~mmattn.models.attention.self_attention.softmax_attention` (SDPA,
    or blocks of ``chunk_size`` queries), whose memory grows with HW, not
    HW^2. ``'dot_product'`` and ``'concatenation'`` run mmcv's own code.

    **mmcv vs the official code** (facebookresearch/video-nonlocal-net,
    Caffe2): both use C' = C/2, scale 1/sqrt(C'), Gaussian N(0, 0.01^2)
    projection init and a zero-initialised output. The official block
    max-pools :math:`\\phi` and g (``sub_sample=True`` here) and puts a BN
    with :math:`\\gamma = 0` after :math:`W_z` (``norm_cfg=dict(type='BN')``
    here, whose weight is then the zero-initialised part). The defaults
    below are mmcv's (no pooling, no BN), so that ``NonLocal`` is a drop-in
    replacement for ``NonLocal2d``; pass ``sub_sample=True,
    norm_cfg=dict(type='BN')`` for the official block. Either way the block
    starts as the identity.

    **Init** is mmcv's and is re-applied by :meth:`init_weights`, which
    mmengine calls after a parent backbone's generic Kaiming init; unlike
    mmcv's, it also works once ``sub_sample`` has wrapped the projections.

    Position: the official networks append the block **after whole residual
    blocks** (every other block of res3/res4, ``default_position =
    'after_block'``); as an mmdet ResNet plugin it also works at
    ``after_conv2`` / ``after_conv3``.

    Args:
        in_channels (int): Channels C of the input.
        sub_sample (bool): 2x2 max-pool behind :math:`\\phi` and g (mmcv's
            option; the official setting). In the softmax modes the pool is
            skipped on a map thinner than 2 pixels (mmcv raises there).
            Default: False (mmcv).
        reduction (int): C' = max(C // reduction, 1), as mmcv. Default: 2.
        use_scale (bool): Divide the embedded-Gaussian scores by
            sqrt(C'). Default: True.
        mode (str): Pairwise function, one of ``MODES``.
            Default: 'embedded_gaussian'.
        chunk_size (int, optional): None (default) computes the softmax
            modes with PyTorch's SDPA; an int processes that many queries
            at a time with an explicit fp32 softmax (for devices where SDPA
            would materialise the matrix). Ignored by the other modes.
        conv_cfg (dict, optional): Conv config of the projections.
            Default: None, i.e. ``dict(type='PointwiseConv')``:
            ``nn.Conv2d``'s parameters and state-dict keys, run as a matrix
            product on the CPU (:class:`~mmattn.models.convs.PointwiseConv`;
            ``dict(type='Conv2d')`` runs oneDNN's convolution). With
            either, 'embedded_gaussian' runs :math:`\\theta, \\phi, g` as
            one 1x1 conv of their concatenated weights; another conv type
            runs each ConvModule.
        norm_cfg (dict, optional): Norm after :math:`W_z`. Default: None.
        std (float): Std of the Gaussian projection init. Default: 0.01.
        zeros_init (bool): Zero-initialise :math:`W_z` (or its norm), so
            the block starts as the identity. Default: True.
    """

    default_position = 'after_block'
    _SOFTMAX_MODES = ('embedded_gaussian', 'gaussian')

    def __init__(self,
                 in_channels: int,
                 sub_sample: bool = False,
                 reduction: int = 2,
                 use_scale: bool = True,
                 mode: str = 'embedded_gaussian',
                 chunk_size: Optional[int] = None,
                 conv_cfg: Optional[Dict] = None,
                 norm_cfg: Optional[Dict] = None,
                 std: float = 0.01,
                 zeros_init: bool = True) -> None:
        check_positive_int(in_channels, 'in_channels')
        check_positive_int(reduction, 'reduction')
        check_choice(mode, MODES, 'mode')
        check_chunk_size(chunk_size)
        super().__init__(
            in_channels,
            sub_sample=sub_sample,
            conv_cfg=conv_cfg or dict(type='PointwiseConv'),
            reduction=reduction,
            use_scale=use_scale,
            norm_cfg=norm_cfg,
            mode=mode,
            std=std,
            zeros_init=zeros_init)
        self.chunk_size = chunk_size

    def init_weights(self,
                     std: Optional[float] = None,
                     zeros_init: Optional[bool] = None) -> None:
        """mmcv's init: :math:`\\theta, \\phi, g` ~ N(0, std^2) with zero
        bias; :math:`W_z` (or its norm, with ``norm_cfg``) zero if
        ``zeros_init`` else N(0, std^2).

        ``std`` and ``zeros_init`` are remembered from construction, so the
        argument-less call of mmengine's ``BaseModule.init_weights`` restores
        the same init.
        """
        if std is not None:
            self.init_std = std
        if zeros_init is not None:
            self.zeros_init = zeros_init
        projections = [self.g] if self.mode == 'gaussian' else [
            self.g, self.theta, self.phi]
        for branch in projections:
            normal_init(_conv_module(branch).conv, std=self.init_std)
        out = (self.conv_out.conv if self.conv_out.norm_cfg is None else
               self.conv_out.norm)
        if self.zeros_init:
            constant_init(out, 0)
        else:
            normal_init(out, std=self.init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode not in self._SOFTMAX_MODES:
            return super().forward(x)  # mmcv's (HW x HW) path
        b, _, h, w = x.shape
        if self.mode == 'gaussian':
            # theta, phi are the identity (phi is the bare pool, if any).
            query, key, value = x, x, _conv_module(self.g)(x)
            scale = 1.0
        else:
            query, key, value = self._project(x)
            scale = self.inter_channels**-0.5 if self.use_scale else 1.0
        # mmcv's 2x2 max-pool behind phi and g, where a 2x2 window fits
        if self.sub_sample and min(h, w) >= 2:
            key, value = self.g[1](key), self.g[1](value)
        q = query.flatten(2).transpose(1, 2)  # (B, HW, Cq)
        k = key.flatten(2).transpose(1, 2)  # (B, H'W', Cq)
        v = value.flatten(2).transpose(1, 2)  # (B, H'W', C')
        y = softmax_attention(q, k, v, scale, self.chunk_size)  # (B, HW, C')
        y = y.transpose(1, 2).reshape(b, self.inter_channels, h, w)
        return x + self.conv_out(y)

    def _project(self, x: torch.Tensor
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:math:`\\theta(x), \\phi(x), g(x)`, each (B, C', H, W), before
        any pool: as one 1x1 conv C -> 3C'
        (:func:`~mmattn.models.convs.pointwise_convs`: x read once, its
        gradient written once) when the three ConvModules are bare 1x1
        convs (the default), else each ConvModule on its own."""
        modules = [_conv_module(m) for m in (self.theta, self.phi, self.g)]
        convs = [_bare_conv(m) for m in modules]
        if all(conv is not None for conv in convs):
            return pointwise_convs(x, convs).chunk(3, dim=1)
        return tuple(m(x) for m in modules)

    def extra_repr(self) -> str:
        return (f'mode={self.mode!r}, sub_sample={self.sub_sample}, '
                f'use_scale={self.use_scale}, chunk_size={self.chunk_size}')
