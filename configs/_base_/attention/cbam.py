# CBAM (arXiv 1807.06521): channel gate (r = 16, average- and max-pooled
# MLP) then 7x7 spatial gate, after conv3 + BN of every residual block,
# before the residual add (official Jongchan/attention-module).
# AttentionResNet: mmdet's ResNet whose blocks hand the module the shortcut,
# added in the pass of its product (mmattn issue 7); the plugins alone also
# fit any mmdet ResNet / ResNeXt (type='ResNeXt').
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(
    type='AttentionResNet',
    plugins=[dict(cfg=dict(type='CBAM'), position='after_conv3')])
