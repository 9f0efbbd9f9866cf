# SE (Squeeze-and-Excitation, arXiv 1709.01507): one SE gate in every
# residual block, after conv3 + BN and before the residual add, reduction
# r = 16, FCs with bias: the official SE-ResNet. mmdet ResNet plugins: fits
# any mmdet ResNet / ResNeXt config.
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(
    type='AttentionResNet',
    plugins=[dict(cfg=dict(type='SE'), position='after_conv3')])
