# Gather-Excite (arXiv 1810.12348): GE-theta-minus (global average gather,
# sigmoid excite, parameter-free) after conv3 + BN of every residual block,
# before the residual add (official RN50-GEPF prototxt). mmdet ResNet
# plugins: fits any mmdet ResNet / ResNeXt config.
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(
    plugins=[dict(cfg=dict(type='GatherExcite'), position='after_conv3')])
