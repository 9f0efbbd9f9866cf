# ECA (ECA-Net, arXiv 1910.03151): a k-tap 1-D conv across the channels of
# the pooled descriptor, after conv3 + BN of every residual block, before the
# residual add, with the released ECA-ResNet-50's per-stage kernel sizes
# k = (3, 5, 5, 7) (eca_resnet50_k3557): 80 parameters on ResNet-50
# (kernel_size=None computes k from C by the paper's formula instead).
# AttentionResNet: mmdet's ResNet whose blocks hand a channel gate the BN
# input, so training keeps no extra activation for the gate (mmattn issue 7);
# the plugins alone also fit any mmdet ResNet / ResNeXt (type='ResNeXt').
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(type='AttentionResNet', plugins=[
    dict(cfg=dict(type='ECA', kernel_size=3), position='after_conv3',
         stages=(True, False, False, False)),
    dict(cfg=dict(type='ECA', kernel_size=5), position='after_conv3',
         stages=(False, True, True, False)),
    dict(cfg=dict(type='ECA', kernel_size=7), position='after_conv3',
         stages=(False, False, False, True)),
])
