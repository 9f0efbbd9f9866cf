# CCNet (Criss-Cross Attention, arXiv 1811.11721): criss-cross attention
# (gamma = 0 at start) on the last stage's output c5, where CCNet's RCCA head
# reads its backbone. It sits between stages: the backbone becomes the
# CCNetResNet preset, which keeps every other key of the inherited ResNet
# (depth, frozen_stages, init_cfg, ...).
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(type='CCNetResNet')
