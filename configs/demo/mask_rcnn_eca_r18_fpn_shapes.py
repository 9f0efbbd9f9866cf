# The embedded demo (make demo): ECA Mask R-CNN trained from scratch on the
# generated shapes dataset (configs/_base_/datasets/shapes_coco.py), on CPU
# in a few minutes. The network is mmdet's Mask R-CNN R-50-FPN slimmed for
# that budget, keeping ECA in every residual block (the snippet of
# configs/_base_/attention/eca.py, k = 3, 5, 5, 7 per stage):
# a ResNet-18 body (BasicBlocks; ECA after conv2 + BN, before the residual
# add), 64-channel FPN and heads, fewer proposals, BN trained (no ImageNet
# weights to start from: nothing is downloaded).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/datasets/shapes_coco.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/attention/eca.py',
]
width = 64  # FPN and head channels
# torchvision's RoIAlign with 2 x 2 samples per bin (torchvision's Mask R-CNN
# setting) costs 30% less CPU per iteration than mmcv's adaptive sampling.
roi_layer = dict(
    type='RoIAlign', sampling_ratio=2, aligned=True, use_torchvision=True)

model = dict(
    backbone=dict(
        _base_.attention_backbone,
        # mmdet's ResNet takes no plugins in BasicBlocks; AttentionResNet
        # does, with every other ResNet option unchanged.
        type='AttentionResNet',
        depth=18,
        base_channels=32,
        stem_channels=32,
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(
            roi_layer=dict(roi_layer, output_size=7), out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(
            roi_layer=dict(roi_layer, output_size=14), out_channels=width),
        mask_head=dict(
            in_channels=width, conv_out_channels=width, num_classes=3)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=20)))

max_iters = 500
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[375, 450], gamma=0.1)
]
auto_scale_lr = dict(enable=False, base_batch_size=4)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False,
                    interval=max_iters, max_keep_ckpts=1))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
