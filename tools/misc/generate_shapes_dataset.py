"""Generate the small COCO-format shapes dataset (boxes + instance masks).

Example::

    python tools/misc/generate_shapes_dataset.py data/shapes --num-train 400
"""
import argparse

from mmattn.datasets import generate_shapes_coco


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir', help='output folder (data root)')
    parser.add_argument('--num-train', type=int, default=400)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--image-size', type=int, default=256)
    parser.add_argument('--max-objects', type=int, default=5)
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_args()
    files = generate_shapes_coco(args.out_dir, args.num_train, args.num_val,
                                 args.image_size, args.max_objects, args.seed)
    for split, path in files.items():
        print(f'{split}: {path}')


if __name__ == '__main__':
    main()
