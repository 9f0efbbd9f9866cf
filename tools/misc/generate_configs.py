"""Write the detection configs of ``configs/`` from one table.

Every config is ``configs/<detector>_<attention>_<depth>_fpn.py`` (and the
baseline ``configs/<detector>_<depth>_fpn.py``): a header comment and a
``_base_`` list naming MMDetection's own shipped config and the attention
snippet ``configs/_base_/attention/<attention>.py``, nothing else unless the
attention network has its own ImageNet checkpoint (:data:`CHECKPOINTS`).
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
                    'ContextBlock (r = 1/16) after conv3 + BN of the '
                    'blocks of c3-c5'),
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

#: (attention token, depth) -> ``init_cfg`` of the backbone when the
#: attention network has its own ImageNet checkpoint (written by the
#: pretraining / converter tools), e.g.
#: ``('sge', 'r50'): dict(type='Pretrained', prefix='backbone.',
#: checkpoint='https://.../sge_resnet50.pth')``. Absent: mmdet's
#: torchvision ResNet weights, attention freshly initialised.
CHECKPOINTS: Dict[Tuple[str, str], dict] = {}

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
    """The text of one config."""
    det = DETECTORS[detector]
    layers = depth[1:]
    base = 'mmdet::' + det.base.format(depth=depth)
    if attention is None:
        title = (f'{det.name}, ResNet-{layers}-FPN, no attention: the '
                 f'baseline of the configs {detector}_<attention>_{depth}'
                 f'_fpn.py (each differs from it by one snippet).')
        where = None
        init = (f'Backbone init: torchvision ResNet-{layers} ImageNet '
                f'weights (mmdet\'s default).')
        bases = [base]
    else:
        att = ATTENTIONS[attention]
        title = (f'{att.name} {det.name}, ResNet-{layers}-FPN '
                 f'({att.paper}).')
        where = f'Attention: {att.placement}.'
        if (attention, depth) in CHECKPOINTS:
            init = (f'Backbone init: the {att.name}-ResNet-{layers} '
                    f'ImageNet checkpoint below.')
        elif att.replaces_conv:
            init = (f'Backbone init: torchvision ResNet-{layers} ImageNet '
                    f'weights where the layout matches; the attention convs '
                    f'start from their own init.')
        else:
            init = (f'Backbone init: torchvision ResNet-{layers} ImageNet '
                    f'weights; the attention modules start from their own '
                    f'init.')
        bases = [base, f'./_base_/attention/{attention}.py']
    data = (f'Schedule and data: mmdet\'s {det.schedule}, COCO train2017 '
            f'-> val2017 (minival) under data/coco/.')
    lines = _wrap(title)
    if where:
        lines += _wrap(where)
    lines += _wrap(init) + _wrap(data)
    text = '\n'.join(lines) + '\n' + HEADER
    text += '_base_ = [\n' + ''.join(f"    '{b}',\n" for b in bases) + ']\n'
    if attention is None:
        return text
    checkpoint = CHECKPOINTS.get((attention, depth))
    if checkpoint is None:
        return text + 'model = dict(backbone=_base_.attention_backbone)\n'
    fields = ''.join(f'\n            {key}={value!r},'
                     for key, value in checkpoint.items())
    return text + ('model = dict(\n    backbone=dict(\n'
                   '        _base_.attention_backbone,\n'
                   f'        init_cfg=dict({fields[:-1]})))\n')


def expected_configs() -> Dict[str, str]:
    """File name -> text of every generated config."""
    configs = {}
    for detector in DETECTORS:
        for depth in DEPTHS:
            for attention in (None, *ATTENTIONS):
                configs[config_name(detector, attention, depth)] = render(
                    detector, attention, depth)
    return configs


def generated_pattern() -> re.Pattern:
    """Names this script owns in ``configs/`` (stale ones included)."""
    detectors = '|'.join(sorted(DETECTORS, key=len, reverse=True))
    return re.compile(rf'^({detectors})_(\w+_)?r\d+_fpn\.py$')


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
    pattern = generated_pattern()
    for name in sorted(os.listdir(config_dir)):
        if pattern.match(name) and name not in expected:
            found.append(f'not in the tables: {name}')
    return found


def write(config_dir: str = CONFIG_DIR) -> int:
    """(Re)write every config; remove generated-looking names that the
    tables no longer hold. Returns the number of files changed."""
    expected = expected_configs()
    changed = 0
    for name, text in expected.items():
        path = osp.join(config_dir, name)
        if not osp.isfile(path) or open(path).read() != text:
            with open(path, 'w') as f:
                f.write(text)
            changed += 1
    pattern = generated_pattern()
    for name in os.listdir(config_dir):
        if pattern.match(name) and name not in expected:
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
