# NAM (arXiv 2111.12419): normalization-based channel attention (the BN
# scale factors weigh the channels) after conv3 + BN of every residual
# block, before the residual add (official).
# AttentionResNet: mmdet's ResNet whose blocks hand the module the shortcut,
# added in the pass of its product (mmattn issue 7); the plugins alone also
# fit any mmdet ResNet / ResNeXt (type='ResNeXt').
# The official optional L1 sparsity on the NAM scale factors is off, as by
# default in its training script; turn it on with
# custom_hooks = [dict(type='NAMSparsityHook', s=1e-4)] (and 'mmattn.engine'
# in custom_imports).
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(
    type='AttentionResNet',
    plugins=[dict(cfg=dict(type='NAM'), position='after_conv3')])
