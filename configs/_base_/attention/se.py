# SE (Squeeze-and-Excitation, arXiv 1709.01507): one SE gate in every
# residual block, after conv3 + BN and before the residual add, reduction
# r = 16, FCs with bias: the official SE-ResNet.
# AttentionResNet: mmdet's ResNet whose blocks hand a channel gate the BN
# input, so training keeps no extra activation for the gate (mmattn issue 7);
# the plugins alone also fit any mmdet ResNet / ResNeXt (type='ResNeXt').
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(
    type='AttentionResNet',
    plugins=[dict(cfg=dict(type='SE'), position='after_conv3')])
