"""Write the detection and pretraining configs of ``configs/`` from one
table.

* ``configs/<detector>_<attention>_<depth>_fpn.py`` (and the baseline
  ``configs/<detector>_<depth>_fpn.py``): a header comment, a ``_base_`` list
  naming MMDetection's own shipped config and the attention snippet
  ``configs/_base_/attention/<attention>.py``, and the backbone's
  ``init_cfg``: the ImageNet checkpoint of the matching pretraining config
  (:func:`pretrained_init`).
* ``configs/pretrain/<attention>_resnet<depth>_8xb32_in1k.py``: mmpretrain's
  ResNet classifier, the shared recipe :data:`PRETRAIN_BASE` (mmpretrain's
  ImageNet data, schedule and runtime ``_base_`` files), and the same
  snippet, so the classifier's ``backbone.`` keys are the
  detection backbone's keys.

Edit the tables below and re-run; never edit a generated config by hand.

Example::

    python tools/misc/generate_configs.py           # (re)write configs/
    python tools/misc/generate_configs.py --check   # exit 1 if stale
"""
import argparse
import os
import os.path as osp
import re
import sys
from typing import Dict, List, NamedTuple, Optional, Tuple

from mmattn.engine.launch import pretrain_config_name, pretrained_checkpoint

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(ROOT, 'configs')
SNIPPET_DIR = osp.join(CONFIG_DIR, '_base_', 'attention')


class Detector(NamedTuple):
    name: str
    base: str  # mmdet config, ``{depth}`` -> r50 / r101
    schedule: str


class Attention(NamedTuple):
    name: str
    paper: str
    placement: str
    replaces_conv: bool = False  # its convs cannot come from torchvision


#: detector token -> MMDetection config it inherits (2x; cascade: 20e).
DETECTORS: Dict[str, Detector] = {
    'faster_rcnn': Detector(
        'Faster R-CNN', 'faster_rcnn/faster-rcnn_{depth}_fpn_2x_coco.py',
        '2x (24 epochs)'),
    'mask_rcnn': Detector(
        'Mask R-CNN', 'mask_rcnn/mask-rcnn_{depth}_fpn_2x_coco.py',
        '2x (24 epochs)'),
    'retinanet': Detector(
        'RetinaNet', 'retinanet/retinanet_{depth}_fpn_2x_coco.py',
        '2x (24 epochs)'),
    'cascade_rcnn': Detector(
        'Cascade R-CNN', 'cascade_rcnn/cascade-rcnn_{depth}_fpn_20e_coco.py',
        '20e (20 epochs)'),
    'cascade_mask_rcnn': Detector(
        'Cascade Mask R-CNN',
        'cascade_rcnn/cascade-mask-rcnn_{depth}_fpn_20e_coco.py',
        '20e (20 epochs)'),
}

DEPTHS: Tuple[str, ...] = ('r50', 'r101')

#: attention token -> what the header says; the snippet
#: ``configs/_base_/attention/<token>.py`` holds the settings.
ATTENTIONS: Dict[str, Attention] = {
    'se': Attention('SE', 'arXiv 1709.01507',
                    'SE (r = 16) after conv3 + BN of every block'),
    'eca': Attention('ECA', 'arXiv 1910.03151',
                     'ECA (k = 3, 5, 5, 7 per stage) after conv3 + BN of '
                     'every block'),
    'cbam': Attention('CBAM', 'arXiv 1807.06521',
                      'CBAM (r = 16, 7x7 spatial) after conv3 + BN of every '
                      'block'),
    'bam': Attention('BAM', 'arXiv 1807.06514',
                     'BAM between stages, after stages 1-3 (BAMResNet)'),
    'nam': Attention('NAM', 'arXiv 2111.12419',
                     'NAM channel attention after conv3 + BN of every '
                     'block'),
    'sge': Attention('SGE', 'arXiv 1905.09646',
                     'SGE (G = 64) after conv3 + BN of every block'),
    'sk': Attention('SK', 'arXiv 1903.06586',
                    'SKConv in place of every block\'s 3x3 conv (SKResNet)',
                    replaces_conv=True),
    'epsa': Attention('EPSA', 'arXiv 2105.14447',
                      'PSA conv in place of every block\'s 3x3 conv '
                      '(EPSANet)', replaces_conv=True),
    'gc': Attention('GC', 'arXiv 1904.11492',
                    'GlobalContext (mmcv\'s ContextBlock, r = 1/16) after '
                    'conv3 + BN of the blocks of c3-c5'),
    'nl': Attention('Non-local', 'arXiv 1711.07971',
                    'one non-local block in c4, before its last block '
                    '(NLResNet)'),
    'danet': Attention('DANet', 'arXiv 1809.02983',
                       'dual (position + channel) attention on c5 '
                       '(DANetResNet)'),
    'ccnet': Attention('CCNet', 'arXiv 1811.11721',
                       'criss-cross attention on c5 (CCNetResNet)'),
    'coord': Attention('Coordinate attention', 'arXiv 2103.02907',
                       'CoordAttention (r = 32) after conv3 + BN of every '
                       'block'),
    'triplet': Attention('Triplet attention', 'arXiv 2010.03045',
                         'TripletAttention (k = 7) after conv3 + BN of '
                         'every block'),
    'simam': Attention('SimAM', 'ICML 2021',
                       'SimAM (lambda = 0.1) after conv3 + BN of every '
                       'block'),
    'ge': Attention('Gather-Excite', 'arXiv 1810.12348',
                    'GE-theta-minus after conv3 + BN of every block'),
    'fca': Attention('FcaNet', 'arXiv 2012.11879',
                     'multi-spectral attention (top16, DCT 56/28/14/7) after '
                     'conv3 + BN of every block'),
    'resatt': Attention('Residual Attention', 'arXiv 1704.06904',
                        'attention (mask) modules after stages 1-3 '
                        '(ResidualAttentionNet)'),
}

#: the recipe every ImageNet config (``configs/pretrain/``) inherits.
PRETRAIN_BASE = '../_base_/pretrain/imagenet_8xb32_100e.py'
#: its number of epochs: the detection configs load ``epoch_<this>.pth``.
PRETRAIN_EPOCHS = 100


def pretrain_name(attention: str, depth: str) -> str:
    """``configs/pretrain/`` file of the attention network of ``depth``,
    e.g. ``eca_resnet50_8xb32_in1k.py``."""
    return pretrain_config_name(attention, int(depth[1:])) + '.py'


def pretrained_init(attention: str, depth: str) -> dict:
    """The detection backbone's ``init_cfg``: the last checkpoint of the
    pretraining config, the classifier's ``backbone.`` keys (the name that
    ``tools/train.py`` recognises and explains while the file is missing)."""
    return dict(type='Pretrained', prefix='backbone.',
                checkpoint=pretrained_checkpoint(attention, int(depth[1:]),
                                                 PRETRAIN_EPOCHS))


def snippet_backbone_type(attention: str,
                          snippet_dir: str = SNIPPET_DIR) -> str:
    """The backbone type an attention snippet sets (a preset such as
    ``SKResNet``), or ``ResNet`` for a snippet that adds plugins."""
    from mmengine.config import Config
    snippet = Config.fromfile(osp.join(snippet_dir, f'{attention}.py'),
                              import_custom_modules=False)
    return snippet.attention_backbone.get('type', 'ResNet')


HEADER = ('# Generated by tools/misc/generate_configs.py: edit its tables '
          'and re-run it,\n# do not edit this file.\n')


def _wrap(text: str, width: int = 79) -> List[str]:
    """``text`` as ``# `` comment lines of at most ``width`` columns."""
    lines, line = [], '#'
    for word in text.split():
        if len(line) + 1 + len(word) > width:
            lines.append(line)
            line = '#'
        line += ' ' + word
    lines.append(line)
    return lines


def config_name(detector: str, attention: Optional[str], depth: str) -> str:
    parts = [detector] + ([attention] if attention else []) + [depth, 'fpn']
    return '_'.join(parts) + '.py'


def render(detector: str, attention: Optional[str], depth: str) -> str:
    """The text of one detection config."""
    det = DETECTORS[detector]
    layers = depth[1:]
    base = 'mmdet::' + det.base.format(depth=depth)
    data = (f'Schedule and data: mmdet\'s {det.schedule}, COCO train2017 '
            f'-> val2017 (minival) under data/coco/.')
    if attention is None:
        lines = _wrap(f'{det.name}, ResNet-{layers}-FPN, no attention: the '
                      f'baseline of the configs {detector}_<attention>_'
                      f'{depth}_fpn.py (each differs from it by one '
                      f'snippet and its pretrained backbone).')
        lines += _wrap(f'Backbone init: torchvision ResNet-{layers} '
                       f'ImageNet weights (mmdet\'s default).')
        lines += _wrap(data)
        return ('\n'.join(lines) + '\n' + HEADER +
                f"_base_ = [\n    '{base}',\n]\n")
    att = ATTENTIONS[attention]
    init = pretrained_init(attention, depth)
    lines = _wrap(f'{att.name} {det.name}, ResNet-{layers}-FPN '
                  f'({att.paper}).')
    lines += _wrap(f'Attention: {att.placement}.')
    lines += _wrap(f'Backbone init: the {att.name}-ResNet-{layers} ImageNet '
                   f'classifier of configs/pretrain/'
                   f'{pretrain_name(attention, depth)} (tools/train.py '
                   f'writes its last checkpoint where init_cfg below looks). '
                   f'Until that file exists, tools/train.py starts from '
                   f'torchvision\'s ResNet-{layers} instead, attention '
                   f'{"convs" if att.replaces_conv else "modules"} from their '
                   f'own init, and warns.')
    lines += _wrap(data)
    fields = ''.join(f'\n            {key}={value!r},'
                     for key, value in init.items())
    return ('\n'.join(lines) + '\n' + HEADER + '_base_ = [\n'
            f"    '{base}',\n    './_base_/attention/{attention}.py',\n]\n"
            'model = dict(\n    backbone=dict(\n'
            '        _base_.attention_backbone,\n'
            f'        init_cfg=dict({fields[:-1]})))\n')


def render_pretrain(attention: str, depth: str) -> str:
    """The text of one ImageNet pretraining config (mmpretrain scope)."""
    att = ATTENTIONS[attention]
    layers = depth[1:]
    # mmpretrain's scope does not see mmdet's backbones: name them fully
    backbone = 'mmdet.' + snippet_backbone_type(attention)
    lines = _wrap(f'{att.name}-ResNet-{layers} ImageNet-1k classifier '
                  f'({att.paper}): the pretrained backbone of '
                  f'configs/*_{attention}_{depth}_fpn.py.')
    lines += _wrap(f'Attention: {att.placement}.')
    lines += _wrap('Recipe: the papers\' (mmpretrain\'s ResNet one), in '
                   f'configs/{PRETRAIN_BASE[3:]}.')
    lines += _wrap(f'Train: python tools/train.py configs/pretrain/'
                   f'{pretrain_name(attention, depth)} (last checkpoint: '
                   f'{pretrained_init(attention, depth)["checkpoint"]}).')
    return ('\n'.join(lines) + '\n' + HEADER + '_base_ = [\n'
            f"    'mmpretrain::_base_/models/resnet{layers}.py',\n"
            f"    '{PRETRAIN_BASE}',\n"
            f"    '../_base_/attention/{attention}.py',\n]\n"
            + '\n'.join(_wrap(
                f'{backbone}: the detection backbone\'s class, so the keys '
                'match; trained from scratch, its BatchNorm must not be '
                'frozen.')) + '\n'
            'model = dict(\n    backbone=dict(\n'
            '        _base_.attention_backbone,\n'
            f"        type='{backbone}',\n"
            '        norm_eval=False))\n')


def expected_configs() -> Dict[str, str]:
    """Path relative to ``configs/`` -> text of every generated config."""
    configs = {}
    for detector in DETECTORS:
        for depth in DEPTHS:
            for attention in (None, *ATTENTIONS):
                configs[config_name(detector, attention, depth)] = render(
                    detector, attention, depth)
    for depth in DEPTHS:
        for attention in ATTENTIONS:
            configs[osp.join('pretrain', pretrain_name(
                attention, depth))] = render_pretrain(attention, depth)
    return configs


def generated_files(config_dir: str) -> List[str]:
    """Paths (relative to ``config_dir``) with the names this script
    writes, stale ones included."""
    detectors = '|'.join(sorted(DETECTORS, key=len, reverse=True))
    patterns = {'': rf'^({detectors})_(\w+_)?r\d+_fpn\.py$',
                'pretrain': r'^\w+_resnet\d+_8xb32_in1k\.py$'}
    found = []
    for folder, pattern in patterns.items():
        path = osp.join(config_dir, folder)
        if osp.isdir(path):
            found += [osp.join(folder, name) for name in sorted(
                os.listdir(path)) if re.match(pattern, name)]
    return found


def problems(config_dir: str = CONFIG_DIR) -> List[str]:
    """What differs between ``config_dir`` and the tables."""
    found = []
    for token in ATTENTIONS:
        if not osp.isfile(osp.join(config_dir, '_base_', 'attention',
                                   f'{token}.py')):
            found.append(f'missing snippet _base_/attention/{token}.py')
    expected = expected_configs()
    for name, text in expected.items():
        path = osp.join(config_dir, name)
        if not osp.isfile(path):
            found.append(f'missing {name}')
        elif open(path).read() != text:
            found.append(f'stale {name}')
    found += [f'not in the tables: {name}'
              for name in generated_files(config_dir)
              if name not in expected]
    return found


def write(config_dir: str = CONFIG_DIR) -> int:
    """(Re)write every config; remove generated-looking names that the
    tables no longer hold. Returns the number of files changed."""
    expected = expected_configs()
    changed = 0
    for name, text in expected.items():
        path = osp.join(config_dir, name)
        if not osp.isfile(path) or open(path).read() != text:
            os.makedirs(osp.dirname(path), exist_ok=True)
            with open(path, 'w') as f:
                f.write(text)
            changed += 1
    for name in generated_files(config_dir):
        if name not in expected:
            os.remove(osp.join(config_dir, name))
            changed += 1
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true',
                        help='write nothing; exit 1 if a config is missing, '
                        'stale or no longer in the tables')
    parser.add_argument('--config-dir', default=CONFIG_DIR)
    args = parser.parse_args(argv)
    if args.check:
        found = problems(args.config_dir)
        for line in found:
            print(line)
        if found:
            print(f'{len(found)} problem(s); run python '
                  f'tools/misc/generate_configs.py')
            return 1
        print(f'{len(expected_configs())} configs up to date')
        return 0
    missing = [p for p in problems(args.config_dir)
               if p.startswith('missing snippet')]
    if missing:
        print('\n'.join(missing))
        return 1
    changed = write(args.config_dir)
    print(f'{len(expected_configs())} configs, {changed} written or removed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
