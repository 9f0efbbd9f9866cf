# Gather-Excite (arXiv 1810.12348): GE-theta-minus (global average gather,
# sigmoid excite, parameter-free) after conv3 + BN of every residual block,
# before the residual add (official RN50-GEPF prototxt).
# AttentionResNet: mmdet's ResNet whose blocks hand a channel gate (GE's
# global one) the BN input, so training keeps no extra activation for the
# gate (mmattn issue 7); the plugins alone also fit any mmdet ResNet /
# ResNeXt (type='ResNeXt').
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(
    type='AttentionResNet',
    plugins=[dict(cfg=dict(type='GatherExcite'), position='after_conv3')])
