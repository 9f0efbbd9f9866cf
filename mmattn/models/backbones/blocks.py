"""Residual blocks that accept attention anywhere.

mmdet's ``Bottleneck`` takes plugins after conv1/conv2/conv3 only, and its
``BasicBlock`` takes none. These subclasses add

* plugins in ``BasicBlock``: ``after_conv1`` (after conv1 + BN + ReLU) and
  ``after_conv2`` (after conv2 + BN, before the residual add: the SE
  position of a BasicBlock). ``after_conv3`` is accepted as an alias of
  ``after_conv2``, "after the block's last conv + BN", so one plugin list
  (and every module's ``default_position``) serves both block types;
* ``after_block`` modules, applied to the block's output after the final
  ReLU (Non-local networks append their blocks there);
* a lean path in training for the modules after the block's last norm:
  the first, if it ``takes_norm_input`` (the channel gates
  :class:`~mmattn.models.attention.ChannelGate`, e.g. SE, ECA, a global
  :class:`~mmattn.models.attention.GatherExcite`, and GC's
  :class:`~mmattn.models.attention.GlobalContext`), is handed the norm's
  input and affine (:func:`batch_norm_with_affine`), so that training
  keeps no copy of the norm's output for its backward; the last, if it
  ``takes_residual`` (those, CBAM, Triplet, Coordinate attention, SimAM,
  SGE, NAM and BAM), the shortcut, to add in the pass of its product;
* a replacement of the block's strided 3x3 conv (``attn_conv``, e.g.
  :class:`~mmattn.models.backbones.SKConv`, :class:`PSAConv`): conv2 of a
  Bottleneck, conv1 of a BasicBlock (as timm's SK-ResNet-18/34). A
  replacement whose branches end in their own norm + activation
  (``includes_norm_act = True``) takes the block's norm and ReLU with it.

State-dict names stay those of mmdet's blocks (``conv1``, ``bn1``, ...,
``downsample``), so torchvision/mmdet/mmpretrain ResNet checkpoints load.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_conv_layer, build_plugin_layer
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck
from mmdet.models.backbones.resnext import Bottleneck as ResNeXtBottleneck

from mmattn.models.common import (NormInput, batch_norm_state,
                                  batch_norm_with_stats, check_choice,
                                  needs_grad)

#: Positions inside a block, per block type.
BASIC_POSITIONS = ('after_conv1', 'after_conv2', 'after_conv3')
BOTTLENECK_POSITIONS = ('after_conv1', 'after_conv2', 'after_conv3')


def build_attention(cfg: dict, in_channels: int, postfix=''):
    """``build_plugin_layer``, honouring a ``postfix`` key inside ``cfg``.

    Every module's official init survives the backbone's generic
    Kaiming/Constant init through its ``init_weights`` (mmcv's
    ``ContextBlock`` gets one in :mod:`mmattn.models.attention.context_block`).
    """
    cfg = dict(cfg)
    return build_plugin_layer(cfg, in_channels=in_channels,
                              postfix=cfg.pop('postfix', postfix))


def batch_norm_with_affine(norm: nn.BatchNorm2d, z: torch.Tensor
                           ) -> Tuple[torch.Tensor, NormInput]:
    """``norm(z)`` and ``(z, w, b)`` with ``norm(z) = w * z + b`` per
    channel (w, b: (C,), fp32 or wider, no grad), from the statistics that
    :func:`batch_norm_with_stats` returns with the output (running
    statistics and ``num_batches_tracked`` updated as
    ``nn.BatchNorm2d.forward`` does)."""
    out, mean, invstd = batch_norm_with_stats(
        z, norm.weight, norm.bias, norm.eps, *batch_norm_state(norm))
    with torch.no_grad():
        weight, bias = invstd, -mean * invstd
        if norm.affine:
            weight = weight * norm.weight
            bias = bias * norm.weight + norm.bias
    return out, (z, weight, bias)


class _AttentionBlockMixin:
    """What the attention blocks share: building and running plugins,
    after-block modules and the conv replacement."""

    def make_block_plugins(self, in_channels: int,
                           plugins: List[dict]) -> List[str]:
        """Build ``plugins`` (configs) on ``in_channels``; return names."""
        names = []
        for plugin in plugins:
            name, layer = build_attention(plugin, in_channels)
            if hasattr(self, name):
                raise ValueError(f'duplicate plugin {name!r} in one block: '
                                 f'give each a distinct "postfix"')
            self.add_module(name, layer)
            names.append(name)
        return names

    def forward_plugin(self, x: torch.Tensor,
                       plugin_names: List[str]) -> torch.Tensor:
        for name in plugin_names:
            x = getattr(self, name)(x)
        return x

    def norm_plugins_add(self, z: torch.Tensor, norm: nn.Module,
                         plugin_names: List[str],
                         identity: torch.Tensor) -> torch.Tensor:
        """``forward_plugin(norm(z), plugin_names) + identity``: the end of
        a residual block before its final ReLU.

        In training, a module with ``takes_norm_input`` (a
        :class:`~mmattn.models.attention.ChannelGate`, ``GlobalContext``)
        first in line after a ``BatchNorm2d`` gets the norm's input and
        affine (:func:`batch_norm_with_affine`), so that its backward keeps
        ``z``, which the norm keeps anyway, rather than ``norm(z)``; and
        the last module, if it ``takes_residual`` (those, CBAM, Triplet,
        Coordinate attention, SimAM, SGE, NAM, BAM), the shortcut, to
        add in the pass of its product. Other norms (SyncBN, GN:
        statistics not the block's to reproduce), a norm with forward hooks
        (which the kernel call would bypass) and inference take the plain
        path."""
        modules = [getattr(self, name) for name in plugin_names]
        if not (modules and needs_grad(z)):
            return self.forward_plugin(norm(z), plugin_names) + identity
        hooked = norm._forward_hooks or norm._forward_pre_hooks
        if getattr(modules[0], 'takes_norm_input', False) and \
                type(norm) is nn.BatchNorm2d and not hooked:
            x, affine = batch_norm_with_affine(norm, z)
            extras = [dict(norm_input=affine)] + [{}] * (len(modules) - 1)
        else:
            x, extras = norm(z), [{}] * len(modules)
        fused = getattr(modules[-1], 'takes_residual', False)
        if fused:
            extras[-1] = dict(extras[-1], residual=identity)
        for module, extra in zip(modules, extras):
            x = module(x, **extra)
        return x if fused else x + identity

    def add_after_block(self, cfg: dict) -> str:
        """Append a module applied to the block's output (after its final
        ReLU); its input has the block's output channels."""
        out_channels = self.planes * self.expansion
        name = self.make_block_plugins(out_channels, [cfg])[0]
        self.after_block_names.append(name)
        return name

    def _replace_conv(self, conv_name: str, norm_attr: str,
                      cfg: dict) -> None:
        """Rebuild the 3x3 conv ``conv_name`` from ``cfg`` with the same
        channels, stride, dilation and groups; drop the norm named by
        ``norm_attr`` when the new conv brings its own."""
        old = getattr(self, conv_name)
        new = build_conv_layer(
            cfg, old.in_channels, old.out_channels, kernel_size=3,
            stride=old.stride[0], padding=old.dilation[0],
            dilation=old.dilation[0], groups=old.groups, bias=False)
        setattr(self, conv_name, new)
        if getattr(new, 'includes_norm_act', False):
            delattr(self, getattr(self, norm_attr))
            setattr(self, norm_attr, None)


def _split_plugins(plugins: Optional[List[dict]], positions, alias=None):
    """Group plugin configs by position; ``alias`` maps accepted names onto
    the block's own positions."""
    alias = alias or {}
    groups = {p: [] for p in positions}
    for plugin in plugins or []:
        position = check_choice(plugin['position'],
                                tuple(groups) + tuple(alias), 'position')
        groups[alias.get(position, position)].append(plugin['cfg'])
    return groups


class AttentionBasicBlock(_AttentionBlockMixin, BasicBlock):
    """mmdet's ``BasicBlock`` with plugins (``after_conv1``,
    ``after_conv2``; ``after_conv3`` = ``after_conv2``), after-block modules
    and an ``attn_conv`` replacement of conv1 (the strided 3x3)."""

    def __init__(self,
                 inplanes: int,
                 planes: int,
                 dcn: Optional[dict] = None,
                 plugins: Optional[List[dict]] = None,
                 attn_conv: Optional[dict] = None,
                 **kwargs) -> None:
        if dcn is not None:
            raise ValueError('dcn is not supported in BasicBlock (mmdet '
                             'neither): use depth >= 50 or stage_with_dcn '
                             'all False')
        super().__init__(inplanes, planes, **kwargs)
        self.planes = planes
        if attn_conv is not None:
            self._replace_conv('conv1', 'norm1_name', attn_conv)
        groups = _split_plugins(plugins, ('after_conv1', 'after_conv2'),
                                alias={'after_conv3': 'after_conv2'})
        self.after_conv1_plugin_names = self.make_block_plugins(
            planes, groups['after_conv1'])
        self.after_conv2_plugin_names = self.make_block_plugins(
            planes, groups['after_conv2'])
        self.after_block_names: List[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:

        def _inner_forward(x):
            identity = x
            out = self.conv1(x)
            if self.norm1_name is not None:
                out = self.relu(self.norm1(out))
            out = self.forward_plugin(out, self.after_conv1_plugin_names)
            if self.downsample is not None:
                identity = self.downsample(x)
            return self.norm_plugins_add(self.conv2(out), self.norm2,
                                         self.after_conv2_plugin_names,
                                         identity)

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(_inner_forward, x, use_reentrant=False)
        else:
            out = _inner_forward(x)
        out = self.relu(out)
        return self.forward_plugin(out, self.after_block_names)


class AttentionBottleneck(_AttentionBlockMixin, Bottleneck):
    """mmdet's ``Bottleneck`` with after-block modules and an ``attn_conv``
    replacement of conv2 (the strided 3x3); plugins as in mmdet
    (``after_conv1/2/3``)."""

    def __init__(self,
                 inplanes: int,
                 planes: int,
                 plugins: Optional[List[dict]] = None,
                 attn_conv: Optional[dict] = None,
                 **kwargs) -> None:
        if plugins is not None:
            # validates the positions with a ValueError (mmdet asserts)
            _split_plugins(plugins, BOTTLENECK_POSITIONS)
        super().__init__(inplanes, planes, plugins=plugins, **kwargs)
        if not self.with_plugins:
            self.after_conv1_plugin_names = []
            self.after_conv2_plugin_names = []
            self.after_conv3_plugin_names = []
        if attn_conv is not None:
            if self.with_dcn:
                raise ValueError('attn_conv and dcn both replace conv2: '
                                 'enable them on different stages')
            self._replace_conv('conv2', 'norm2_name', attn_conv)
        self.after_block_names: List[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:

        def _inner_forward(x):
            identity = x
            out = self.relu(self.norm1(self.conv1(x)))
            out = self.forward_plugin(out, self.after_conv1_plugin_names)
            out = self.conv2(out)
            if self.norm2_name is not None:
                out = self.relu(self.norm2(out))
            out = self.forward_plugin(out, self.after_conv2_plugin_names)
            if self.downsample is not None:
                identity = self.downsample(x)
            return self.norm_plugins_add(self.conv3(out), self.norm3,
                                         self.after_conv3_plugin_names,
                                         identity)

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(_inner_forward, x, use_reentrant=False)
        else:
            out = _inner_forward(x)
        out = self.relu(out)
        return self.forward_plugin(out, self.after_block_names)


class AttentionResNeXtBottleneck(AttentionBottleneck, ResNeXtBottleneck):
    """ResNeXt's grouped ``Bottleneck`` (``groups``, ``base_width``) with
    the additions of :class:`AttentionBottleneck`."""


__all__ = [
    'AttentionBasicBlock', 'AttentionBottleneck',
    'AttentionResNeXtBottleneck', 'build_attention'
]
