"""Parameters and FLOPs of a config: whole detector and backbone, with the
attention modules' own cost (pooling, gates, softmax, attention matmuls)
counted.

Counting is mmengine's FlopAnalyzer with the handles of
``mmattn/analysis/complexity.py``; 1 FLOP = 1 multiply-add.

Examples::

    # whole detector and its backbone on a 1333x800 image (padded to 32)
    python tools/analysis/get_flops.py configs/faster_rcnn_cbam_r50_fpn.py
    # the backbone as an ImageNet classifier at 224x224 (the papers' figure)
    python tools/analysis/get_flops.py configs/faster_rcnn_cbam_r50_fpn.py \\
        --classifier
"""
import argparse
from typing import Dict, Optional, Sequence

from mmengine.config import Config, DictAction

import mmattn  # noqa: F401  (registers the modules)
from mmattn.analysis.complexity import (Complexity, classifier_complexity,
                                        detector_complexity)


def _size(values: Sequence[int]) -> tuple:
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) == 2:
        return tuple(values)
    raise SystemExit('--shape takes H W, or one value for a square image')


def _row(name: str, params: int, flops: int) -> str:
    return f'  {name:<22}{params / 1e6:>10.2f} M{flops / 1e9:>12.3f} G'


def _attention_lines(result: Complexity, reference: int,
                     reference_name: str) -> list:
    if not result.num_attention_modules:
        return ['attention modules: none']
    share = 100 * result.attention_flops / max(reference, 1)
    types = ', '.join(f'{n} x {name}'
                      for name, n in result.attention_types.items())
    ops = ', '.join(f'{op} {n / 1e6:.2f}' for op, n in
                    result.attention_by_operator.most_common())
    lines = [
        f'attention modules ({types}): '
        f'{result.attention_params / 1e6:.3f} M params, '
        f'{result.attention_flops / 1e9:.4f} GFLOPs '
        f'({share:.2f}% of the {reference_name})',
        f'  MFLOPs by operator: {ops}'
    ]
    if result.attention_uncounted:
        lines.append('  NOT counted (no handle): ' + ', '.join(
            f'{op} x{n}' for op, n in result.attention_uncounted.items()))
    return lines


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Complexity]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--shape', type=int, nargs='+', default=None,
        help='input H W (one value: square). Default: 800 1333 (a '
        '1333x800 image), or 224 224 with --classifier')
    parser.add_argument(
        '--classifier', action='store_true',
        help='measure the backbone as an ImageNet classifier (last stage, '
        'global pooling, FC) instead of the detector: the setting of the '
        'papers\' parameter and FLOP counts')
    parser.add_argument('--num-classes', type=int, default=1000,
                        help='classes of the --classifier FC')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    args = parser.parse_args(argv)

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    results: Dict[str, Complexity] = {}
    lines = [f'config: {args.config}']
    if args.classifier:
        size = _size(args.shape or [224])
        result = classifier_complexity(cfg.model.backbone, size,
                                       args.num_classes)
        results['classifier'] = result
        lines += [
            f'input: 1 x 3 x {size[0]} x {size[1]}; backbone '
            f'{cfg.model.backbone.type} + global pooling + '
            f'{args.num_classes}-class FC',
            f'  {"":<22}{"params":>12}{"GFLOPs":>14}',
            _row('classifier', result.params, result.flops)
        ] + _attention_lines(result, result.flops, 'classifier')
    else:
        size = _size(args.shape or [800, 1333])
        result = detector_complexity(cfg.model, size)
        results['detector'] = result
        lines += [f'input: 1 x 3 x {size[0]} x {size[1]} (padded as the '
                  f'data preprocessor pads)',
                  f'  {"":<22}{"params":>12}{"GFLOPs":>14}',
                  _row('whole detector', result.params, result.flops)]
        lines += [_row(part, *value)
                  for part, value in result.by_module.items()]
        backbone = result.by_module.get('backbone', (0, result.flops))[1]
        lines += _attention_lines(result, backbone, 'backbone')
        lines.append('heads run as mmdet\'s mode="tensor" (RoI heads on '
                     'every RPN proposal)')
    lines.append('1 FLOP = 1 multiply-add (see mmattn/analysis/'
                 'complexity.py for what is counted)')
    print('\n'.join(lines))
    return results


if __name__ == '__main__':
    main()
