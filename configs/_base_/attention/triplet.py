# Triplet attention (arXiv 2010.03045): three Z-pool + 7x7 conv gates over
# the (C, W), (H, C) and (H, W) planes, after conv3 + BN of every residual
# block, before the residual add (official). mmdet ResNet plugins: fits any
# mmdet ResNet / ResNeXt config.
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(plugins=[
    dict(cfg=dict(type='TripletAttention'), position='after_conv3')
])
