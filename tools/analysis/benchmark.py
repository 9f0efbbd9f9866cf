"""Benchmark the attention modules: time and peak memory against the memory
floor and peer implementations (timm, mmcv, official code), at module,
backbone and detector level. Writes ``benchmark.md`` (tables) and
``benchmark.png`` (ratios) to ``--out-dir``; see
``mmattn/analysis/benchmark.py`` for what is measured and how.

Examples::

    # every module on the four ResNet-50 stage outputs of an 800x1333 image
    python tools/analysis/benchmark.py
    # a quick look at two modules, small maps, 3 rounds
    python tools/analysis/benchmark.py --modules SE SimAM --quick --repeat 3
    # ResNet-50 train step with each gate vs plain, then Faster R-CNN
    python tools/analysis/benchmark.py --level backbone detector
    # each module eager and compiled (torch.compile), side by side
    python tools/analysis/benchmark.py --modules SimAM GE --compile
"""
import argparse
import os
import os.path as osp
from typing import List, Optional, Sequence

import torch

import mmattn  # noqa: F401  (registers the modules)
from mmattn.analysis.benchmark import (DETECTION_SHAPES, DETECTOR_MODULES,
                                       MODULES, QUICK_SHAPES, Row,
                                       benchmark_backbone, benchmark_detector,
                                       benchmark_module, markdown_table,
                                       module_shapes, plot_ratios)

LEVELS = ('module', 'backbone', 'detector')


def _shape(text: str) -> tuple:
    try:
        shape = tuple(int(v) for v in text.lower().split('x'))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f'a shape is BxCxHxW with positive ints, got {text!r}')
    return shape


def _modules(names: Optional[Sequence[str]], level: str) -> List[str]:
    if level == 'module':
        default = list(MODULES)
    elif level == 'backbone':
        default = [n for n, s in MODULES.items() if s.plugin is not None]
    else:
        default = list(DETECTOR_MODULES)
    if not names:
        return default
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        raise SystemExit(f'unknown modules {unknown}; choose from '
                         f'{list(MODULES)}')
    if level != 'module':
        names = [n for n in names if MODULES[n].plugin is not None]
    return list(names)


def _print_row(row: Row) -> None:
    """Progress: the row's line of its markdown table."""
    print(markdown_table([row]).splitlines()[-1], flush=True)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--level', nargs='+', choices=LEVELS,
                        default=['module'], help='what to benchmark')
    parser.add_argument('--modules', nargs='+', default=None,
                        help=f'module names (default: all of the level): '
                        f'{", ".join(MODULES)}')
    parser.add_argument(
        '--shapes', nargs='+', type=_shape, default=None,
        help='module-level input shapes BxCxHxW of the gates (conv '
        'replacements use C/4; self-attention modules their own shape). '
        'Default: the ResNet-50 stage outputs of an 800x1333 image, batch 2')
    parser.add_argument('--image-size', type=int, nargs=2, default=None,
                        metavar=('H', 'W'),
                        help='backbone / detector input size. Default: '
                        '320 320 (64 64 with --quick)')
    parser.add_argument('--repeat', type=int, default=5,
                        help='timed rounds; medians are reported')
    parser.add_argument('--quick', action='store_true',
                        help='small shapes and images (a smoke run)')
    parser.add_argument(
        '--compile', action='store_true',
        help='also measure every module compiled (mmattn.models.compiled; '
        'rows marked "compiled"; the first call of each compiles)')
    parser.add_argument('--device', default='cuda' if
                        torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out-dir', default='work_dirs/benchmark',
                        help='where benchmark.md and benchmark.png go')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> List[Row]:
    args = parse_args(argv)
    if args.repeat < 1:
        raise SystemExit('--repeat must be >= 1')
    device = torch.device(args.device)
    shapes = args.shapes or (QUICK_SHAPES if args.quick else DETECTION_SHAPES)
    image_size = tuple(args.image_size or ((64, 64) if args.quick else
                                           (320, 320)))
    rows: List[Row] = []
    for level in args.level:
        for name in _modules(args.modules, level):
            spec = MODULES[name]
            variants = (False, True) if args.compile and \
                spec.kind != 'floor' else (False, )
            for compiled in variants:
                if level == 'module':
                    for shape in module_shapes(spec, shapes, args.quick):
                        rows.append(benchmark_module(
                            spec, shape, args.repeat, device, compiled))
                        _print_row(rows[-1])
                    continue
                bench = (benchmark_backbone if level == 'backbone' else
                         benchmark_detector)
                rows.append(bench(spec, image_size, args.repeat, device,
                                  compiled=compiled))
                _print_row(rows[-1])
    os.makedirs(args.out_dir, exist_ok=True)
    note = (f'device: {device}'
            + (f' ({torch.cuda.get_device_name(device)})'
               if device.type == 'cuda' else
               f', {torch.get_num_threads()} threads')
            + f'; torch {torch.__version__}; medians of {args.repeat} '
            'interleaved rounds\n\n')
    with open(osp.join(args.out_dir, 'benchmark.md'), 'w') as f:
        f.write(note + markdown_table(rows))
    plot_ratios(rows, osp.join(args.out_dir, 'benchmark.png'))
    print(f'wrote {osp.join(args.out_dir, "benchmark.md")} and '
          f'benchmark.png')
    return rows


if __name__ == '__main__':
    main()
