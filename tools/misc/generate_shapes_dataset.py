"""Generate a small shapes dataset: COCO format (boxes + instance masks, for
detection) or ImageNet format (one label per image, for pretraining).

Examples::

    python tools/misc/generate_shapes_dataset.py data/shapes --num-train 400
    python tools/misc/generate_shapes_dataset.py data/shapes_imagenet \\
        --format imagenet --num-classes 6 --num-train 50 --num-val 10
"""
import argparse

from mmattn.datasets import generate_shapes_coco, generate_shapes_imagenet


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir', help='output folder (data root)')
    parser.add_argument('--format', choices=['coco', 'imagenet'],
                        default='coco')
    parser.add_argument('--num-train', type=int, default=400,
                        help='training images (imagenet: per class)')
    parser.add_argument('--num-val', type=int, default=100,
                        help='validation images (imagenet: per class)')
    parser.add_argument('--image-size', type=int, default=256)
    parser.add_argument('--max-objects', type=int, default=5,
                        help='coco: shapes per image, at most')
    parser.add_argument('--num-classes', type=int, default=6,
                        help='imagenet: classes, 1-9')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_args()
    if args.format == 'coco':
        files = generate_shapes_coco(args.out_dir, args.num_train,
                                     args.num_val, args.image_size,
                                     args.max_objects, args.seed)
    else:
        files = generate_shapes_imagenet(args.out_dir, args.num_classes,
                                         args.num_train, args.num_val,
                                         args.image_size, args.seed)
    for split, path in files.items():
        print(f'{split}: {path}')


if __name__ == '__main__':
    main()
