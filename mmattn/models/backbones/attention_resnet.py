"""The attention ResNet family: mmdet's ResNet with attention anywhere."""
import inspect
from typing import List, Optional, Sequence, Tuple

import torch
from mmdet.models.backbones.resnet import ResNet
from mmdet.models.layers import ResLayer
from mmdet.registry import MODELS as MMDET_MODELS

from mmattn.compat_guards import check_plugin_type
from mmattn.models.attention.base import POSITIONS
from mmattn.models.common import check_choice, check_positive_int
from .blocks import (AttentionBasicBlock, AttentionBottleneck,
                     AttentionResNeXtBottleneck, build_attention)

#: Keys a plugin dict may hold.
PLUGIN_KEYS = ('cfg', 'position', 'stages', 'block_indices', 'interval')
IN_BLOCK_POSITIONS = ('after_conv1', 'after_conv2', 'after_conv3')
_RESNET_OPTIONS = tuple(
    p for p in inspect.signature(ResNet.__init__).parameters
    if p not in ('self', 'depth', 'plugins'))


def default_position(cfg: dict) -> str:
    """The ``default_position`` of the module ``cfg`` builds."""
    module_type = cfg.get('type')
    cls = module_type if isinstance(module_type, type) else \
        MMDET_MODELS.get(module_type)
    if cls is None:
        raise ValueError(f'plugin cfg type {module_type!r} is not '
                         f'registered')
    position = getattr(cls, 'default_position', None)
    if position is None:
        raise ValueError(f'plugin "position" is required for '
                         f'{module_type!r}, which states no '
                         f'default_position; one of {POSITIONS}')
    return position


def normalize_plugin(plugin: dict, num_stages: int) -> dict:
    """Check a plugin dict and fill in its position and stages.

    Raises:
        ValueError: naming the field: unknown keys, unknown position,
            ``stages`` of the wrong length, ``block_indices``/``interval``
            anywhere but ``after_block``.
    """
    if not isinstance(plugin, dict) or 'cfg' not in plugin:
        raise ValueError(f'each plugin must be a dict with a "cfg", got '
                         f'{plugin!r}')
    unknown = set(plugin) - set(PLUGIN_KEYS)
    if unknown:
        raise ValueError(f'unknown plugin key(s) {sorted(unknown)}; allowed: '
                         f'{PLUGIN_KEYS} ("postfix" goes inside "cfg")')
    plugin = dict(plugin)
    check_plugin_type(plugin['cfg'])
    position = plugin.get('position') or default_position(plugin['cfg'])
    plugin['position'] = check_choice(position, POSITIONS, 'position')
    stages = plugin.get('stages')
    if stages is None:
        stages = (True, ) * num_stages
    if len(stages) != num_stages:
        raise ValueError(f'plugin stages must have num_stages={num_stages} '
                         f'entries, got {stages!r}')
    plugin['stages'] = tuple(bool(s) for s in stages)
    selects_blocks = ('block_indices' in plugin) or ('interval' in plugin)
    if selects_blocks and position != 'after_block':
        raise ValueError('block_indices / interval select blocks for '
                         f'position="after_block" only, got {position!r}')
    if 'block_indices' in plugin and 'interval' in plugin:
        raise ValueError('give block_indices or interval, not both')
    if 'interval' in plugin:
        check_positive_int(plugin['interval'], 'interval')
    return plugin


def selected_blocks(plugin: dict, num_blocks: int) -> List[int]:
    """Indices of the blocks of a stage an ``after_block`` plugin follows:
    all, every ``interval``-th (official Non-local ``nonlocal_mod``:
    blocks i with i % k == k - 1), or ``block_indices`` (negative counts
    from the end)."""
    if 'interval' in plugin:
        k = plugin['interval']
        return [i for i in range(num_blocks) if i % k == k - 1]
    if 'block_indices' in plugin:
        indices = []
        for i in plugin['block_indices']:
            if not -num_blocks <= i < num_blocks:
                raise ValueError(f'block_indices entry {i} is out of range '
                                 f'for a stage of {num_blocks} blocks')
            indices.append(i % num_blocks)
        return sorted(set(indices))
    return list(range(num_blocks))


@MMDET_MODELS.register_module()
class AttentionResNet(ResNet):
    """mmdet's ResNet / ResNeXt with attention anywhere.

    Every option of mmdet's ``ResNet`` keeps working (depth 18-152,
    ``style``, ``deep_stem``, ``avg_down``, ``frozen_stages``,
    ``norm_eval``, ``with_cp``, ``dcn``, ``zero_init_residual``,
    ``init_cfg``); ``groups`` / ``base_width`` > 1 give ResNeXt. Added:

    * ``plugins`` in BasicBlocks too, and at two more positions. Each entry
      is ``dict(cfg=..., position=..., stages=...)`` as in mmdet, where

      - ``position`` defaults to the module's ``default_position``, and may
        be ``'after_conv1'``, ``'after_conv2'``, ``'after_conv3'`` (in a
        BasicBlock an alias of ``'after_conv2'``: after the last conv +
        BN, before the residual add), ``'after_block'`` (after a whole
        residual block; choose blocks with ``block_indices`` or
        ``interval``) or ``'after_stage'`` (between stages; the stage's
        output, and so its feature in ``out_indices``, is the module's
        output; built as backbone attributes ``<abbr><stage>`` like the
        official ``bam1``..``bam3``);
      - ``stages`` (one bool per stage) defaults to all stages.

    * ``attn_conv``: a conv config (e.g. ``dict(type='SKConv')``,
      ``dict(type='PSAConv')``) replacing each block's strided 3x3 conv on
      the stages of ``stage_with_attn_conv``.

    Init: the generic Kaiming/Constant init of ResNet runs first, then each
    attention module's own ``init_weights`` (zero-init gates stay zero),
    then a ``Pretrained`` checkpoint (loaded non-strictly: attention keys
    absent from a plain ResNet checkpoint are reported missing and keep
    their init). ``zero_init_residual`` zeroes the last norm of each block
    as in mmdet. ``frozen_stages`` freezes the stem and ``layer1``..``k``
    with their in-block and after-block modules (as mmdet does with
    plugins); after-stage modules are not part of a stage and stay
    trainable.

    Args:
        depth (int): 18, 34, 50, 101 or 152.
        plugins (list[dict], optional): See above. Default: None.
        attn_conv (dict, optional): Conv config replacing the strided 3x3
            conv (Bottleneck conv2, BasicBlock conv1). Default: None.
        stage_with_attn_conv (Sequence[bool]): Stages ``attn_conv`` applies
            to. Default: all.
        groups (int): ResNeXt cardinality; 1 gives ResNet. Default: 1.
        base_width (int): ResNeXt base width. Default: 4.
        **kwargs: mmdet ``ResNet`` options.
    """

    #: Options a subclass (preset) adds, named in the unknown-option error.
    preset_options: Tuple[str, ...] = ()

    arch_settings = {
        18: (AttentionBasicBlock, (2, 2, 2, 2)),
        34: (AttentionBasicBlock, (3, 4, 6, 3)),
        50: (AttentionBottleneck, (3, 4, 6, 3)),
        101: (AttentionBottleneck, (3, 4, 23, 3)),
        152: (AttentionBottleneck, (3, 8, 36, 3))
    }

    def __init__(self,
                 depth: int,
                 plugins: Optional[List[dict]] = None,
                 attn_conv: Optional[dict] = None,
                 stage_with_attn_conv: Sequence[bool] = (True, True, True,
                                                         True),
                 groups: int = 1,
                 base_width: int = 4,
                 **kwargs) -> None:
        unknown = set(kwargs) - set(_RESNET_OPTIONS)
        if unknown:
            allowed = self.preset_options + (
                'depth', 'plugins', 'attn_conv', 'stage_with_attn_conv',
                'groups', 'base_width') + _RESNET_OPTIONS
            raise ValueError(f'unknown option(s) {sorted(unknown)} for '
                             f'{type(self).__name__}; allowed: {allowed}')
        check_choice(depth, tuple(self.arch_settings), 'depth')
        check_positive_int(groups, 'groups')
        if groups > 1 and depth < 50:
            raise ValueError(f'groups={groups} (ResNeXt) needs Bottleneck '
                             f'blocks: depth must be >= 50, got {depth}')
        num_stages = kwargs.get('num_stages', 4)
        if len(stage_with_attn_conv) != num_stages:
            raise ValueError(f'stage_with_attn_conv must have num_stages='
                             f'{num_stages} entries, got '
                             f'{stage_with_attn_conv!r}')
        plugins = [normalize_plugin(p, num_stages) for p in plugins or []]
        stage_plugins = [p for p in plugins if p['position'] != 'after_stage']
        after_stage = [p for p in plugins if p['position'] == 'after_stage']
        # Set before ResNet.__init__ builds the stages (make_res_layer).
        self.groups = groups
        self.base_width = base_width
        self.attn_conv = attn_conv
        self.stage_with_attn_conv = tuple(stage_with_attn_conv)
        # mmdet's ResNet zero-inits the last norm only for its own block
        # classes; make_res_layer does it for ours.
        self.zero_init_blocks = (kwargs.get('zero_init_residual', True)
                                 and kwargs.get('init_cfg') is None
                                 and kwargs.get('pretrained') is None)
        super().__init__(depth, plugins=stage_plugins or None, **kwargs)

        self.after_stage_names: List[List[str]] = []
        for i in range(self.num_stages):
            channels = self.base_channels * 2**i * self.block.expansion
            names = []
            for plugin in after_stage:
                if plugin['stages'][i]:
                    cfg = dict(plugin['cfg'])
                    postfix = f"{cfg.pop('postfix', '')}{i + 1}"
                    name, layer = build_attention(cfg, channels, postfix)
                    if hasattr(self, name):
                        raise ValueError(f'duplicate after-stage module '
                                         f'{name!r}: give a distinct '
                                         f'"postfix" in its cfg')
                    self.add_module(name, layer)
                    names.append(name)
            self.after_stage_names.append(names)

    def make_stage_plugins(self, plugins: List[dict],
                           stage_idx: int) -> List[dict]:
        """The (normalized) plugins of stage ``stage_idx``."""
        return [p for p in plugins if p['stages'][stage_idx]]

    def make_res_layer(self, **kwargs) -> ResLayer:
        """Build a stage: in-block plugins, the conv replacement and the
        zero-init of the last norm go to every block; after-block modules
        to the selected blocks."""
        planes = kwargs['planes']
        stage = (planes // self.base_channels).bit_length() - 1
        plugins = kwargs.pop('plugins') or []
        in_block = [p for p in plugins if p['position'] != 'after_block']
        kwargs['plugins'] = in_block or None
        if self.stage_with_attn_conv[stage]:
            kwargs['attn_conv'] = self.attn_conv
        block = kwargs['block']
        if self.groups > 1:
            block = kwargs['block'] = AttentionResNeXtBottleneck
            kwargs.update(groups=self.groups, base_width=self.base_width,
                          base_channels=self.base_channels)
        if self.zero_init_blocks:
            last_norm = 'norm2' if block is AttentionBasicBlock else 'norm3'
            kwargs['init_cfg'] = dict(
                type='Constant', val=0, override=dict(name=last_norm))
        layer = ResLayer(**kwargs)
        for plugin in plugins:
            if plugin['position'] == 'after_block':
                for j in selected_blocks(plugin, len(layer)):
                    layer[j].add_after_block(plugin['cfg'])
        return layer

    def forward(self, x: torch.Tensor) -> tuple:
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(self.norm1(self.conv1(x)))
        x = self.maxpool(x)
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            x = getattr(self, layer_name)(x)
            for name in self.after_stage_names[i]:
                x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True) -> 'AttentionResNet':
        """mmdet's ``ResNet.train`` (frozen stages, ``norm_eval``),
        returning the module as ``nn.Module.train`` does, so that
        ``net.double().train()`` chains (mmdet's returns None)."""
        super().train(mode)
        return self


@MMDET_MODELS.register_module()
class AttentionResNetV1d(AttentionResNet):
    """:class:`AttentionResNet` on ResNetV1d (`Bag of Tricks
    <https://arxiv.org/abs/1812.01187>`_, timm's "-D" models): deep 3x3
    stem and average-pool downsampling."""

    def __init__(self, depth: int, **kwargs) -> None:
        super().__init__(depth, deep_stem=True, avg_down=True, **kwargs)


@MMDET_MODELS.register_module()
class AttentionResNeXt(AttentionResNet):
    """:class:`AttentionResNet` on ResNeXt; ``groups=32, base_width=4``
    (32x4d) by default."""

    def __init__(self, depth: int, groups: int = 32, base_width: int = 4,
                 **kwargs) -> None:
        super().__init__(depth, groups=groups, base_width=base_width,
                         **kwargs)


__all__ = [
    'AttentionResNet', 'AttentionResNetV1d', 'AttentionResNeXt',
    'normalize_plugin', 'selected_blocks', 'default_position'
]
