# Residual Attention Network (arXiv 1704.06904): one attention (mask) module
# after each of stages 1-3, with hourglass depths 3 / 2 / 1 (Attention-56
# pools each stage's map down to 7 x 7 at 224 px), on the inherited ResNet
# trunk. It sits between stages: the backbone becomes the
# ResidualAttentionNet preset, which keeps every other key of the inherited
# ResNet (depth, frozen_stages, init_cfg, ...).
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(type='ResidualAttentionNet')
