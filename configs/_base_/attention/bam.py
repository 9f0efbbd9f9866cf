# BAM (arXiv 1807.06514): one Bottleneck Attention Module between stages,
# after each of stages 1-3 (official bam1..bam3), so the pyramid features
# c2-c4 are BAM outputs. BAM sits outside the residual blocks: the backbone
# becomes the BAMResNet preset, which keeps every other key of the inherited
# ResNet (depth, frozen_stages, init_cfg, ...).
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(type='BAMResNet')
