"""Turn any mmattn/mmdet detection config into one that runs in seconds on
CPU on the generated shapes dataset, without editing the config file:
small images, few proposals, no pretrained download, an iteration-based
loop. Used by the demo and the tests."""
from __future__ import annotations

from typing import Any

from mmengine.config import Config, ConfigDict

from mmattn.datasets import SHAPES_CLASSES


def _set_num_classes(node: Any, num_classes: int) -> None:
    """Set every ``num_classes`` key below ``node`` (heads of any
    detector)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'num_classes':
                node[key] = num_classes
            else:
                _set_num_classes(value, num_classes)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _set_num_classes(item, num_classes)


def _shrink_proposals(node: Any, max_per_img: int) -> None:
    """Cap proposal and sampler counts anywhere in train/test cfgs."""
    if isinstance(node, dict):
        for key in ('nms_pre', 'max_per_img', 'num'):
            if isinstance(node.get(key), int):
                node[key] = min(node[key], max_per_img)
        for value in node.values():
            _shrink_proposals(value, max_per_img)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _shrink_proposals(item, max_per_img)


def _pipelines(image_size: int, with_mask: bool):
    scale = (image_size, image_size)
    train = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask),
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs'),
    ]
    test = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                        'scale_factor')),
    ]
    return train, test


def _dataloader(data_root, split, pipeline, batch_size, shuffle):
    return dict(
        batch_size=batch_size,
        num_workers=0,
        persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=shuffle),
        dataset=dict(
            type='CocoDataset',
            data_root=data_root,
            ann_file=f'annotations/instances_{split}.json',
            data_prefix=dict(img=f'{split}/'),
            metainfo=dict(classes=SHAPES_CLASSES),
            filter_cfg=dict(filter_empty_gt=split == 'train', min_size=0),
            pipeline=pipeline,
            test_mode=split != 'train'))


def tiny_detection_cfg(cfg: Config,
                       data_root: str,
                       work_dir: str,
                       max_iters: int = 2,
                       image_size: int = 128,
                       batch_size: int = 2,
                       max_proposals: int = 64) -> Config:
    """Return a copy of ``cfg`` that trains ``max_iters`` iterations on the
    shapes dataset in ``data_root`` (see
    :func:`mmattn.datasets.generate_shapes_coco`).

    The model keeps its architecture (backbone, attention, necks, heads);
    only the data, the class count, proposal counts, the schedule and the
    pretrained download change.
    """
    cfg = cfg.copy()
    with_mask = 'mask_head' in str(cfg.model.get('roi_head', ''))
    train_pipeline, test_pipeline = _pipelines(image_size, with_mask)
    cfg.model.backbone.init_cfg = None
    _set_num_classes(cfg.model, len(SHAPES_CLASSES))
    for key in ('train_cfg', 'test_cfg'):
        _shrink_proposals(cfg.model.get(key), max_proposals)
    cfg.train_dataloader = _dataloader(data_root, 'train', train_pipeline,
                                       batch_size, True)
    cfg.val_dataloader = _dataloader(data_root, 'val', test_pipeline, 1,
                                     False)
    cfg.test_dataloader = cfg.val_dataloader
    metrics = ['bbox', 'segm'] if with_mask else ['bbox']
    cfg.val_evaluator = dict(type='CocoMetric',
                             ann_file=f'{data_root}/annotations/'
                             'instances_val.json',
                             metric=metrics, format_only=False)
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                         val_interval=max_iters)
    cfg.param_scheduler = []
    cfg.optim_wrapper.optimizer.lr = 0.01
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook',
                                        interval=max_iters, by_epoch=False)
    cfg.log_processor = dict(type='LogProcessor', window_size=1,
                             by_epoch=False)
    cfg.env_cfg = ConfigDict(cudnn_benchmark=False,
                             mp_cfg=dict(mp_start_method='fork'),
                             dist_cfg=dict(backend='gloo'))
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=16)
    cfg.load_from = None
    cfg.resume = False
    cfg.work_dir = work_dir
    return cfg
