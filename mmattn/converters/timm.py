"""timm ResNet-family checkpoints -> mmattn backbones.

timm names a block's attention ``se`` whatever it is, wraps SK convs in
``ConvNormAct`` (``conv``/``bn``) with ``paths`` and ``attn``, and keeps a
deep ("-D") stem in ``conv1`` (a Sequential) + ``bn1``. The rest (block
convs/norms, ``downsample``) already has mmdet's names.
"""
from typing import Dict, List

from .common import Rule, StateDict, convert

#: timm model name -> mmattn backbone config.
TIMM_BACKBONES: Dict[str, dict] = {
    'seresnet50': dict(type='SEResNet', depth=50),
    'seresnext50_32x4d': dict(type='SEResNeXt', depth=50),
    # ResNet-D stem and avg-pool downsample; ECA's k from the paper's rule
    # (5, 5, 5, 7), as timm computes it from the channels.
    'ecaresnet50d': dict(type='ECAResNet', depth=50, deep_stem=True,
                         avg_down=True, attn_cfg=dict(kernel_size=None)),
    'ecaresnet101d': dict(type='ECAResNet', depth=101, deep_stem=True,
                          avg_down=True, attn_cfg=dict(kernel_size=None)),
    'skresnet18': dict(type='SKResNet', depth=18, variant='timm'),
    'skresnet34': dict(type='SKResNet', depth=34, variant='timm'),
    'skresnext50_32x4d': dict(type='SKResNeXt', depth=50),
}

_BLOCK = r'^(layer\d+\.\d+)\.'


def timm_rules(name: str) -> List[Rule]:
    """Key rules for the timm model ``name``."""
    cfg = TIMM_BACKBONES[name]
    rules: List[Rule] = [(r'^fc\.', None)]
    if cfg.get('deep_stem'):
        rules += [(r'^conv1\.(\d+)\.', r'stem.\1.'), (r'^bn1\.', 'stem.7.')]
    # ConvNormAct around plain convs: convK.conv/bn -> convK/bnK. Then SK
    # convs: paths -> branches, the attention's layers sit on the conv
    # (after the first rules, so that its norm stays convK.bn).
    rules += [(_BLOCK + r'conv(\d)\.conv\.', r'\1.conv\2.'),
              (_BLOCK + r'conv(\d)\.bn\.', r'\1.bn\2.'),
              (_BLOCK + r'(conv\d)\.paths\.', r'\1.\2.branches.'),
              (_BLOCK + r'(conv\d)\.attn\.', r'\1.\2.')]
    abbr = {'ECAResNet': 'eca'}.get(cfg['type'], 'se')
    rules.append((_BLOCK + r'se\.', rf'\1.{abbr}.'))
    return rules


def convert_timm(state_dict: StateDict, name: str):
    """Convert the state dict of timm model ``name`` (one of
    :data:`TIMM_BACKBONES`) into its mmattn backbone's. Returns
    ``(state_dict, backbone_cfg)``.

    Raises:
        ConversionError: if any key is left over or missing.
    """
    if name not in TIMM_BACKBONES:
        raise ValueError(f'name must be one of {tuple(TIMM_BACKBONES)}, got '
                         f'{name!r}')
    cfg = TIMM_BACKBONES[name]
    return convert(state_dict, timm_rules(name), cfg,
                   source=f'timm {name}'), dict(cfg)
