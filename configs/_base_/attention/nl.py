# Non-local (arXiv 1711.07971): one embedded-Gaussian non-local block in c4
# (stage 3), after its second-to-last residual block: the paper's Mask R-CNN
# setting ("+1 NL"). Its output conv is zero-initialised, so it starts as the
# identity. It follows whole residual blocks: the backbone becomes the
# NLResNet preset, which keeps every other key of the inherited ResNet
# (depth, frozen_stages, init_cfg, ...).
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(type='NLResNet')
