"""Save a PNG per stage showing what every attention module of a config's
backbone does to one image: spatial weights as heatmaps over the image,
per-channel weights as bars and histograms.

Without ``--checkpoint`` the maps show the modules' initialisation (the
backbone's own weights are random too); pass a trained detector or
backbone checkpoint to see what a model learned.

Example::

    python tools/analysis/visualize_attention.py \\
        configs/faster_rcnn_cbam_r50_fpn.py demo.jpg \\
        --checkpoint work_dirs/faster_rcnn_cbam_r50_fpn/epoch_24.pth \\
        --out-dir vis/cbam
"""
import argparse
from typing import Optional, Sequence

import mmattn  # noqa: F401  (registers the modules)
from mmattn.analysis.visualize import Visualization, visualize


def main(argv: Optional[Sequence[str]] = None) -> Visualization:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('image', help='image file')
    parser.add_argument('--checkpoint', help='detector, classifier or '
                        'backbone checkpoint')
    parser.add_argument('--out-dir', default='attention_maps',
                        help='where the stage<k>.png files go')
    parser.add_argument(
        '--scale', type=int, nargs=2, metavar=('LONG', 'SHORT'),
        help='resize bound (keeps the aspect ratio); default: the '
        'config\'s test Resize scale, else 1333 800')
    parser.add_argument('--dpi', type=int, default=100)
    parser.add_argument('--max-per-stage', type=int,
                        help='draw at most N modules per stage (evenly '
                        'spaced, first and last included); default all')
    args = parser.parse_args(argv)
    result = visualize(args.config, args.image, args.out_dir,
                       checkpoint=args.checkpoint,
                       scale=tuple(args.scale) if args.scale else None,
                       dpi=args.dpi, max_per_stage=args.max_per_stage)
    if not result.files:
        print(f'{args.config}: no attention modules in the backbone')
    for stage, path in result.files.items():
        count = sum(m.stage == stage for m in result.maps)
        print(f'stage {stage}: {count} attention module(s) -> {path}')
    return result


if __name__ == '__main__':
    main()
