"""Write the model zoo table of README.md: parameters and FLOPs of every
attention module on ResNet-50, measured here, beside the published
ImageNet top-1 and COCO AP with their sources.

The published figures live in ``mmattn/analysis/model_zoo.py``; the
measurement takes a minute on CPU.

Example::

    python tools/analysis/model_zoo.py          # rewrite the README section
    python tools/analysis/model_zoo.py --check  # exit 1 if it is stale
"""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

import mmattn  # noqa: F401  (registers the modules)
from mmattn.analysis.model_zoo import (measure_zoo, render_table,
                                       replace_section)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def expected_readme(readme: str, config_dir: str) -> str:
    """``readme`` with a freshly measured model zoo section."""
    return replace_section(readme, render_table(measure_zoo(config_dir)))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true',
                        help='write nothing; exit 1 if README.md is stale')
    parser.add_argument('--readme', default=osp.join(ROOT, 'README.md'))
    parser.add_argument('--config-dir', default=osp.join(ROOT, 'configs'))
    args = parser.parse_args(argv)
    with open(args.readme) as f:
        current = f.read()
    expected = expected_readme(current, args.config_dir)
    if args.check:
        if expected != current:
            print(f'{args.readme}: model zoo is stale; run python '
                  f'tools/analysis/model_zoo.py')
            return 1
        print(f'{args.readme}: model zoo up to date')
        return 0
    if expected != current:
        with open(args.readme, 'w') as f:
            f.write(expected)
        print(f'{args.readme}: model zoo rewritten')
    else:
        print(f'{args.readme}: model zoo already up to date')
    return 0


if __name__ == '__main__':
    sys.exit(main())
