# SGE (Spatial Group-wise Enhance, arXiv 1905.09646): G = 64 groups, after
# conv3 + BN of every residual block, before the residual add, as the
# official ImageNet and detection ResNetSGE.
# AttentionResNet: mmdet's ResNet whose blocks hand the module the shortcut,
# added in the pass of its product (mmattn issue 7); the plugins alone also
# fit any mmdet ResNet / ResNeXt (type='ResNeXt').
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(
    type='AttentionResNet',
    plugins=[dict(cfg=dict(type='SGE', groups=64), position='after_conv3')])
