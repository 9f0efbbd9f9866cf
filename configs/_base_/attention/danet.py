# DANet (Dual Attention, arXiv 1809.02983): position + channel attention
# (gamma = 0 at start) on the last stage's output c5, where DANet's head
# reads its backbone; c5 and the pyramid levels built from it see the
# attended feature. It sits between stages: the backbone becomes the
# DANetResNet preset, which keeps every other key of the inherited ResNet
# (depth, frozen_stages, init_cfg, ...).
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(type='DANetResNet')
