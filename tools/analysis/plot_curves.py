"""Plot training curves (loss, validation mAP) of one or several runs from
mmengine's logs, e.g. a baseline beside its attention variant.

Each run is a work directory (the newest ``*/vis_data/scalars.json`` below
it is read) or a ``scalars.json`` file.

Example::

    python tools/analysis/plot_curves.py \\
        work_dirs/faster_rcnn_r50_fpn work_dirs/faster_rcnn_eca_r50_fpn \\
        --labels baseline ECA --smooth 20 --out curves.png
"""
import argparse
from typing import List, Optional, Sequence

from mmattn.analysis.curves import Run, load_run, plot_curves


def main(argv: Optional[Sequence[str]] = None) -> List[Run]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('runs', nargs='+',
                        help='work directories or scalars.json files')
    parser.add_argument('--labels', nargs='+',
                        help='legend names, one per run (default: the '
                        'work directory names)')
    parser.add_argument('--loss', default='loss',
                        help='training key to plot (default: loss)')
    parser.add_argument('--metric',
                        help='validation key to plot (default: '
                        'coco/bbox_mAP, else the first *mAP key)')
    parser.add_argument('--smooth', type=int, default=1,
                        help='moving-average window for the loss')
    parser.add_argument('--title', default='')
    parser.add_argument('--out', default='curves.png', help='PNG to write')
    parser.add_argument('--dpi', type=int, default=100)
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        parser.error(f'--labels needs one name per run ({len(args.runs)})')
    labels = args.labels or [None] * len(args.runs)
    runs = [load_run(path, label) for path, label in zip(args.runs, labels)]
    fig = plot_curves(runs, args.loss, args.metric, args.smooth, args.title)
    fig.savefig(args.out, dpi=args.dpi)
    print(f'{len(runs)} run(s) -> {args.out}')
    return runs


if __name__ == '__main__':
    main()
