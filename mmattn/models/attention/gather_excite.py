"""Gather-Excite (GE)."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmattn.models.common import (ActLayer, NormInput, check_positive_int,
                                  create_act, reduced_channels,
                                  scale_channels, spatial_mean)
from mmattn.models.convs import PointwiseConv
from mmattn.registry import MODELS
from .base import AttentionModule


def _check_extent(extent: int) -> int:
    """``extent`` is 0 (global) or a power of two >= 2."""
    if (isinstance(extent, bool) or not isinstance(extent, int)
            or extent < 0 or extent == 1 or extent & (extent - 1)):
        raise ValueError('extent must be 0 (global) or a power of two >= 2 '
                         f'(the paper uses 2, 4, 8), got {extent!r}')
    return extent


@MODELS.register_module()
class GatherExcite(AttentionModule):
    """Gather-Excite block.

    `Gather-Excite: Exploiting Feature Context in Convolutional Neural
    Networks <https://arxiv.org/abs/1810.12348>`_ (Hu et al., NeurIPS 2018),
    Sec. 3. A *gather* :math:`\\xi_G` aggregates each channel over a spatial
    extent; an *excite* :math:`\\xi_E` resizes the aggregate back to the
    input (nearest neighbour), gates it and rescales the input:

    .. math::

        \\hat{x} = \\xi_G(x), \\quad
        y = x \\odot \\sigma(\\mathrm{NN}_{H \\times W}(
            \\mathrm{MLP}(\\hat{x})))

    Variants (official Caffe prototxts in hujie-frank/GENet):

    * **GE-theta-minus** (``extra_params=False``, ``RN50-GEPF``):
      parameter-free gather. ``extent=0``: global average; ``extent=e``:
      average over (2e - 1) x (2e - 1) windows at stride e (padding e - 1,
      padded cells not counted; the window is the receptive field of the
      GE-theta conv chain below, as in timm), giving a
      ceil(H/e) x ceil(W/e) map.
    * **GE-theta** (``extra_params=True``, ``RN50-GEP``): depthwise gather
      convs without bias, each followed by BN. ``extent=e``: log2(e)
      depthwise 3x3 stride-2 convs (padding 1), ``act_layer`` between them.
      ``extent=0``: the prototxts use one depthwise conv whose kernel is
      the whole map (56, 28, 14, 7 per ResNet stage at 224 px), i.e.
      :math:`\\hat{x}_c = \\sum_{ij} w_c(i, j)\\, x_c(i, j)`, which cannot
      serve maps of varying size. Here the map is first average-pooled to
      a fixed ``gather_size`` x ``gather_size`` grid (adaptive pooling),
      then one ``gather_size`` x ``gather_size`` depthwise conv without
      padding reduces it to 1 x 1. On a map of exactly
      ``gather_size`` x ``gather_size`` this *is* the official conv; on a
      map whose sides are multiples of ``gather_size`` it is a full-map
      kernel constant over each of the ``gather_size``\\ :sup:`2` cells and
      scaled by 1 / cell area; on other sizes the cells are adaptive
      pooling's bins (neighbours share a row / column when the side is not
      a multiple, pixels repeat on maps smaller than the grid). Either way
      the response to a constant map does not depend on the map size.
      Set ``gather_size`` to a stage's training map size to reproduce the
      official kernel there.
    * **GE-theta-plus** (``extra_params=True, use_mlp=True``,
      ``RN50-GEPP``): GE-theta, ``act_layer`` after the gather's last BN
      (the prototxt's ``gather/relu``), then an SE-style MLP: 1x1 conv
      C -> C/16 with bias, ReLU, 1x1 conv C/16 -> C with bias.
      ``use_mlp=True`` with ``extra_params=False`` and ``extent=0`` is SE.

    **Default: GE-theta-minus with global extent**, the parameter-free
    operator of the abstract's claim (ResNet-50 with it beats ResNet-101
    with no added parameter) and the released ``RN50-GEPF`` prototxt. It
    adds 0 parameters and no BN, so it needs no reinterpretation on
    detection maps of varying size (unlike global GE-theta) and trains at
    batch 1.

    :meth:`init_weights` follows the prototxts: gather convs ``msra``
    (:math:`\\mathcal{N}(0, 2 / \\mathrm{fan\\_in})`, fan_in = k*k for a
    depthwise kernel), BN :math:`\\gamma = 1, \\beta = 0`, MLP convs
    :math:`\\mathcal{N}(0, 0.01^2)` with zero bias.

    Position: after conv3 + BN of a bottleneck, before the residual add
    (``after_conv3``; the prototxts' ``Axpy(gate, x, shortcut)``).

    A global gate (``extent=0``) is a channel gate, (B, C, 1, 1): its
    product is :func:`~mmattn.models.common.scale_channels`, and such an
    instance ``takes_norm_input`` and ``takes_residual`` like a
    :class:`~mmattn.models.attention.ChannelGate`, so that a residual block
    of ``AttentionResNet`` hands it the BN input (training keeps no extra
    activation for the product) and its shortcut (added in the product's
    pass). A spatial gate (``extent=e``) takes neither.

    Args:
        in_channels (int): Channels C of the input.
        extent (int): Gather extent ratio e: 0 for global, else a power of
            two >= 2. Default: 0.
        extra_params (bool): Parameterised gather (GE-theta) instead of
            average pooling (GE-theta-minus). Default: False.
        use_mlp (bool): Excite through the C -> C*rd_ratio -> C MLP
            (GE-theta-plus when ``extra_params``). Default: False.
        gather_size (int): Side of the pooled grid and of the depthwise
            kernel of the global parameterised gather; used only with
            ``extent=0, extra_params=True``. Default: 7 (the official
            kernel of the last ResNet stage; 49 weights per channel).
        rd_ratio (float): MLP reduction 1/r. Default: 1/16 (official).
        rd_channels (int, optional): Explicit MLP width; overrides
            ``rd_ratio``. Default: None.
        rd_divisor (int): Round the MLP width to a multiple of this.
            Default: 1.
        act_layer (str | type): Activation in the gather chain and MLP.
            Default: 'relu'.
        gate_layer (str | type): :math:`\\sigma`. Default: 'sigmoid'.

    Raises:
        ValueError: at build time for a bad ``extent``, ``gather_size`` or
            reduction; in training with a batch of 1 for the global
            GE-theta, whose BN normalises pooled (B, C) vectors.
    """

    _abbr_ = 'ge'

    def __init__(self,
                 in_channels: int,
                 extent: int = 0,
                 extra_params: bool = False,
                 use_mlp: bool = False,
                 gather_size: int = 7,
                 rd_ratio: float = 1 / 16,
                 rd_channels: Optional[int] = None,
                 rd_divisor: int = 1,
                 act_layer: ActLayer = 'relu',
                 gate_layer: ActLayer = 'sigmoid') -> None:
        super().__init__()
        check_positive_int(in_channels, 'in_channels')
        self.extent = _check_extent(extent)
        # per instance: only a global gate is a channel gate
        self.takes_norm_input = self.takes_residual = self.extent == 0
        self.gather_size = check_positive_int(gather_size, 'gather_size')
        self.extra_params = bool(extra_params)
        create_act(act_layer, 'act_layer')  # validate the name once

        self.gather: Optional[nn.Sequential] = None
        if self.extra_params:
            self.gather = nn.Sequential()
            if self.extent == 0:
                self.gather.add_module('pool',
                                       nn.AdaptiveAvgPool2d(gather_size))
                kernels = [(gather_size, 1, 0)]  # (kernel, stride, padding)
            else:
                kernels = [(3, 2, 1)] * (self.extent.bit_length() - 1)
            for i, (k, s, p) in enumerate(kernels, 1):
                self.gather.add_module(
                    f'conv{i}',
                    nn.Conv2d(in_channels, in_channels, k, s, p,
                              groups=in_channels, bias=False))
                self.gather.add_module(f'norm{i}', nn.BatchNorm2d(in_channels))
                # act between convs; after the last one only before an MLP
                if i < len(kernels) or use_mlp:
                    self.gather.add_module(f'act{i}',
                                           create_act(act_layer, 'act_layer'))

        self.mlp: Optional[nn.Sequential] = None
        if use_mlp:
            width = reduced_channels(in_channels, rd_ratio, rd_channels,
                                     rd_divisor)
            self.mlp = nn.Sequential()
            self.mlp.add_module('fc1', PointwiseConv(in_channels, width))
            self.mlp.add_module('act', create_act(act_layer, 'act_layer'))
            self.mlp.add_module('fc2', PointwiseConv(width, in_channels))
        self.gate = create_act(gate_layer, 'gate_layer')
        self.init_weights()

    def init_weights(self) -> None:
        """Official fillers: msra gather convs, unit BN, N(0, 0.01) MLP."""
        if self.gather is not None:
            for m in self.gather.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode='fan_in',
                                            nonlinearity='relu')
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        if self.mlp is not None:
            for m in self.mlp.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, std=0.01)
                    nn.init.zeros_(m.bias)

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        if self.gather is not None:
            if self.extent == 0 and self.training and x.shape[0] == 1:
                raise ValueError(
                    'GatherExcite(extent=0, extra_params=True) applies BN to '
                    'pooled (B, C) vectors: training needs a batch size > 1, '
                    'got batch size 1')
            return self.gather(x)  # (B, C, 1, 1) or (B, C, H/e, W/e)
        if self.extent == 0:
            return spatial_mean(x).to(x.dtype)  # (B, C, 1, 1)
        e = self.extent
        return F.avg_pool2d(  # (B, C, ceil(H/e), ceil(W/e))
            x, 2 * e - 1, stride=e, padding=e - 1, count_include_pad=False)

    def forward(self,
                x: torch.Tensor,
                norm_input: Optional[NormInput] = None,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``y`` (+ ``residual``); ``norm_input``, x's BatchNorm input and
        affine, serves the product of a global gate (see
        :func:`~mmattn.models.common.scale_channels`)."""
        g = self._gather(x)
        if self.mlp is not None:
            g = self.mlp(g)
        # The gate is elementwise, so gating before the nearest-neighbour
        # resize equals gating after it, on fewer elements.
        g = self.gate(g)
        if self.extent == 0:  # a (B, C, 1, 1) gate: the lean channel product
            return scale_channels(x, g, norm_input, residual)
        g = F.interpolate(g, size=x.shape[-2:], mode='nearest')
        y = x * g  # (B, C, H, W)
        return y if residual is None else y + residual
