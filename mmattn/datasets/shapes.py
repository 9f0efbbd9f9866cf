"""Small, deterministic datasets of shapes: the embedded defaults for demos
and tests (nothing can be downloaded on the machines this project runs on).

* :func:`generate_shapes_coco`: COCO format, boxes and instance masks, for
  detection. Each image is a textured background with 1-5 filled shapes
  (rectangle, ellipse, triangle) of random colour, size and position; shapes
  may overlap, later ones occluding earlier ones, and the instance masks are
  the visible parts (so a box is the visible extent). Segmentations are
  stored as COCO RLE.
* :func:`generate_shapes_imagenet`: ImageNet format (mmpretrain's layout),
  one label per image, for classification pretraining. Class ``k`` is one
  shape (``k % 3``) in one dominant colour (red, green, blue: ``k // 3``).
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Dict, List, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils

CLASSES = ('rectangle', 'ellipse', 'triangle')
COLOURS = ('red', 'green', 'blue')  # RGB channel order


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random colour field plus mild noise, (size, size, 3) uint8."""
    coarse = rng.integers(40, 200, size=(4, 4, 3)).astype(np.float32)
    img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 8, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_shape(rng: np.random.Generator, size: int,
                label: int) -> np.ndarray:
    """Binary mask (size, size) of one random shape of class ``label``."""
    mask = np.zeros((size, size), np.uint8)
    w, h = rng.integers(size // 8, size // 3, size=2)
    cx, cy = rng.integers(w // 2 + 1, size - w // 2 - 1), rng.integers(
        h // 2 + 1, size - h // 2 - 1)
    if CLASSES[label] == 'rectangle':
        cv2.rectangle(mask, (int(cx - w // 2), int(cy - h // 2)),
                      (int(cx + w // 2), int(cy + h // 2)), 1, -1)
    elif CLASSES[label] == 'ellipse':
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(mask, (int(cx), int(cy)), (int(w // 2), int(h // 2)),
                    angle, 0, 360, 1, -1)
    else:
        pts = np.array([[cx, cy - h // 2], [cx - w // 2, cy + h // 2],
                        [cx + w // 2, cy + h // 2]], np.int32)
        cv2.fillPoly(mask, [pts], 1)
    return mask


def _make_image(rng: np.random.Generator, size: int,
                max_objects: int) -> Tuple[np.ndarray, List[Dict]]:
    img = _background(rng, size)
    shapes = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.integers(len(CLASSES)))
        mask = _draw_shape(rng, size, label)
        colour = rng.integers(0, 256, size=3)
        # keep shapes visible against the background
        colour[int(rng.integers(3))] = int(rng.choice([20, 235]))
        img[mask.astype(bool)] = colour
        for prev in shapes:  # occlusion: earlier masks lose covered pixels
            prev['mask'][mask.astype(bool)] = 0
        shapes.append(dict(label=label, mask=mask))
    return img, [s for s in shapes if s['mask'].sum() >= 16]


def _annotation(shape: Dict, ann_id: int, image_id: int) -> Dict:
    rle = mask_utils.encode(np.asfortranarray(shape['mask']))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    rle['counts'] = rle['counts'].decode('ascii')
    return dict(id=ann_id, image_id=image_id, category_id=shape['label'] + 1,
                bbox=[x, y, w, h], area=float(mask_utils.area(rle)),
                segmentation=rle, iscrowd=0)


def generate_shapes_coco(out_dir: str,
                         num_train: int = 300,
                         num_val: int = 100,
                         image_size: int = 256,
                         max_objects: int = 5,
                         seed: int = 0) -> Dict[str, str]:
    """Write ``train``/``val`` image folders and COCO annotation files.

    Layout (as mmdet's COCO configs expect)::

        out_dir/annotations/instances_{train,val}.json
        out_dir/{train,val}/000000.jpg ...

    Returns:
        dict: split name -> annotation file path.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train and num_val must be >= 1, got '
                         f'{num_train}, {num_val}')
    if image_size < 32:
        raise ValueError(f'image_size must be >= 32, got {image_size}')
    rng = np.random.default_rng(seed)
    categories = [dict(id=i + 1, name=n) for i, n in enumerate(CLASSES)]
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    ann_files = {}
    ann_id = 1
    for split, count in (('train', num_train), ('val', num_val)):
        os.makedirs(osp.join(out_dir, split), exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, count + 1):
            img, shapes = _make_image(rng, image_size, max_objects)
            file_name = f'{image_id:06d}.jpg'
            cv2.imwrite(osp.join(out_dir, split, file_name), img,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            images.append(dict(id=image_id, file_name=file_name,
                               width=image_size, height=image_size))
            for shape in shapes:
                annotations.append(_annotation(shape, ann_id, image_id))
                ann_id += 1
        ann_file = osp.join(out_dir, 'annotations', f'instances_{split}.json')
        with open(ann_file, 'w') as f:
            json.dump(dict(images=images, annotations=annotations,
                           categories=categories), f)
        ann_files[split] = ann_file
    return ann_files


def generate_shapes_imagenet(out_dir: str,
                             num_classes: int = 6,
                             num_train: int = 8,
                             num_val: int = 4,
                             image_size: int = 64,
                             seed: int = 0) -> Dict[str, str]:
    """Write an ImageNet-format classification folder of shapes.

    Layout (as mmpretrain's ``ImageNet`` dataset reads it, ``split='train'``
    / ``'val'``)::

        out_dir/meta/{train,val}.txt        "<relative path> <label>" lines
        out_dir/train/<class>/<class>_0000.JPEG ...
        out_dir/val/val_00000000.JPEG ...

    Args:
        out_dir (str): Data root.
        num_classes (int): Classes, 1-9 (shape x dominant colour, named
            e.g. ``red_rectangle``).
        num_train (int): Training images per class.
        num_val (int): Validation images per class.
        image_size (int): Side of the square images, >= 32.
        seed (int): Random seed; equal arguments write equal files.

    Returns:
        dict: split name -> annotation file path.
    """
    limit = len(CLASSES) * len(COLOURS)
    if not 1 <= num_classes <= limit:
        raise ValueError(f'num_classes must be in [1, {limit}], got '
                         f'{num_classes}')
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train and num_val must be >= 1, got '
                         f'{num_train}, {num_val}')
    if image_size < 32:
        raise ValueError(f'image_size must be >= 32, got {image_size}')
    rng = np.random.default_rng(seed)
    names = [f'{COLOURS[k // len(CLASSES)]}_{CLASSES[k % len(CLASSES)]}'
             for k in range(num_classes)]
    os.makedirs(osp.join(out_dir, 'meta'), exist_ok=True)
    ann_files = {}
    for split, count in (('train', num_train), ('val', num_val)):
        lines = []
        for index in range(count * num_classes):
            label = index % num_classes
            img = _background(rng, image_size) // 2  # shapes stand out
            mask = _draw_shape(rng, image_size, label % len(CLASSES))
            colour = rng.integers(0, 80, size=3)
            colour[label // len(CLASSES)] = int(rng.integers(180, 256))
            img[mask.astype(bool)] = colour[::-1]  # RGB -> OpenCV's BGR
            if split == 'train':
                rel = f'{names[label]}/{names[label]}_{index:04d}.JPEG'
            else:
                rel = f'val_{index:08d}.JPEG'
            path = osp.join(out_dir, split, rel)
            os.makedirs(osp.dirname(path), exist_ok=True)
            cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            lines.append(f'{rel} {label}\n')
        ann_file = osp.join(out_dir, 'meta', f'{split}.txt')
        with open(ann_file, 'w') as f:
            f.writelines(lines)
        ann_files[split] = ann_file
    return ann_files
