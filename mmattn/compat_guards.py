"""Clear errors for bad input where the pinned stack fails obscurely.
Imported by ``import mmattn``.

* **Plugin lists of mmdet's ResNet / ResNeXt** (what the attention configs
  use): mmdet checks them with bare ``assert`` statements (an
  ``AssertionError`` with no message for an unknown ``position`` or a
  ``stages`` tuple of the wrong length), and mmcv's ``build_plugin_layer``
  reports a misspelled ``type`` as ``KeyError: 'Cannot find None in
  registry'``. :func:`check_resnet_plugins` validates the whole list before
  any block is built and raises ``ValueError`` naming the field (with the
  closest registered names for a misspelled type).
  :class:`~mmattn.models.backbones.AttentionResNet` runs
  :func:`check_plugin_type` on its plugins too.
* **Undecodable images**: mmcv's ``LoadImageFromFile`` fails on a corrupt
  or non-image file with ``AssertionError: failed to load image``, even
  with ``ignore_empty=True``, whose purpose is to skip such files. Here it
  raises ``ValueError`` naming the file and the remedy, and with
  ``ignore_empty=True`` returns None, so that the dataset draws another
  image (mmengine's ``BaseDataset`` re-fetches on None in training).

Images smaller than the network stride and images without ground truth
need no guard: mmdet pads batches to ``pad_size_divisor`` and every mmattn
module accepts 1 x 1 maps; an image without boxes trains as negatives (see
``tests/reliability/test_bad_input.py``).
"""
from __future__ import annotations

import difflib
from typing import List, Optional, Sequence

from mmcv.transforms import LoadImageFromFile
from mmdet.models.backbones.resnet import BasicBlock, ResNet

from mmattn.registry import MODELS

#: Keys of a plugin entry of mmdet's ResNet.
MMDET_PLUGIN_KEYS = ('cfg', 'position', 'stages')
#: Positions of mmdet's Bottleneck plugins.
MMDET_PLUGIN_POSITIONS = ('after_conv1', 'after_conv2', 'after_conv3')


def _registered_names() -> List[str]:
    with MODELS.switch_scope_and_registry(None) as registry:
        names = set(registry.module_dict)
        parent = registry.parent
        while parent is not None:
            names |= set(parent.module_dict)
            parent = parent.parent
    return sorted(n for n in names if isinstance(n, str))


def check_plugin_type(cfg) -> type:
    """The class a plugin ``cfg`` names, looked up as mmcv's
    ``build_plugin_layer`` does (current scope, then the root registry).

    Raises:
        ValueError: ``cfg`` is not a dict with a ``type``, or the type is
            not registered (naming the closest registered names).
    """
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f'plugin "cfg" must be a dict with a "type", got '
                         f'{cfg!r}')
    name = cfg['type']
    if isinstance(name, type):
        return name
    with MODELS.switch_scope_and_registry(None) as registry:
        cls = registry.get(name)
    if cls is not None:
        return cls
    names = _registered_names()
    close = [n for n in names if str(name).lower() == n.lower()]
    close += difflib.get_close_matches(str(name), names, n=3, cutoff=0.6)
    close = list(dict.fromkeys(close))
    hint = f'; did you mean {" or ".join(map(repr, close))}?' if close \
        else ''
    raise ValueError(f'plugin cfg type {name!r} is not registered (a '
                     f'misspelling, or its package is not imported){hint}')


def check_resnet_plugins(plugins: Optional[Sequence[dict]], num_stages: int,
                         block: type) -> None:
    """Validate the ``plugins`` of mmdet's ``ResNet`` before it builds
    anything; raise ``ValueError`` naming the offending field."""
    if plugins is None:
        return
    if not isinstance(plugins, (list, tuple)):
        raise ValueError(f'plugins must be a list of dicts, got {plugins!r}')
    if plugins and issubclass(block, BasicBlock):
        raise ValueError('plugins: mmdet\'s ResNet-18/34 (BasicBlock) takes '
                         'no plugins; use type=\'AttentionResNet\' (same '
                         'options, plugins in BasicBlocks too)')
    for plugin in plugins:
        if not isinstance(plugin, dict) or 'cfg' not in plugin:
            raise ValueError(f'each plugin must be a dict with a "cfg", got '
                             f'{plugin!r}')
        unknown = sorted(set(plugin) - set(MMDET_PLUGIN_KEYS))
        if unknown:
            raise ValueError(f'unknown plugin key(s) {unknown}; mmdet\'s '
                             f'ResNet plugins take {MMDET_PLUGIN_KEYS}')
        check_plugin_type(plugin['cfg'])
        position = plugin.get('position')
        if position not in MMDET_PLUGIN_POSITIONS:
            raise ValueError(f'plugin position must be one of '
                             f'{MMDET_PLUGIN_POSITIONS} in mmdet\'s ResNet, '
                             f'got {position!r} (AttentionResNet also takes '
                             f'after_block and after_stage)')
        stages = plugin.get('stages')
        if stages is not None and len(stages) != num_stages:
            raise ValueError(f'plugin stages must have num_stages='
                             f'{num_stages} entries, got {tuple(stages)!r}')


_make_stage_plugins = ResNet.make_stage_plugins


def _checked_make_stage_plugins(self, plugins, stage_idx):
    if stage_idx == 0:
        check_resnet_plugins(plugins, self.num_stages, self.block)
    return _make_stage_plugins(self, plugins, stage_idx)


_load_image = LoadImageFromFile.transform


def _checked_load_image(self, results: dict) -> Optional[dict]:
    try:
        return _load_image(self, results)
    except AssertionError as err:
        if not str(err).startswith('failed to load image'):
            raise
    if self.ignore_empty:
        return None
    raise ValueError(
        f'img_path {results["img_path"]!r} cannot be decoded as an image '
        f'(corrupt, truncated or not an image file): replace it, remove it '
        f'from the annotation file, or set ignore_empty=True in '
        f'LoadImageFromFile to skip such images') from None


ResNet.make_stage_plugins = _checked_make_stage_plugins
LoadImageFromFile.transform = _checked_load_image

__all__ = ['check_plugin_type', 'check_resnet_plugins',
           'MMDET_PLUGIN_KEYS', 'MMDET_PLUGIN_POSITIONS']
