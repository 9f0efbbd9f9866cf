# SimAM (ICML 2021): parameter-free energy-based 3-D attention after conv3 +
# BN of every residual block, before the residual add (official ResNetAM),
# with lambda = 0.1: the value of the official mmdetection configs and
# released ImageNet checkpoints (the module's default 1e-4 is the paper's
# CIFAR setting).
# AttentionResNet: mmdet's ResNet whose blocks hand the module the shortcut,
# added in the pass of its product (mmattn issue 7); the plugins alone also
# fit any mmdet ResNet / ResNeXt (type='ResNeXt').
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(
    type='AttentionResNet',
    plugins=[
        dict(cfg=dict(type='SimAM', e_lambda=0.1), position='after_conv3')
    ])
