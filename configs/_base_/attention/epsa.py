# EPSA (EPSANet, arXiv 2105.14447): the pyramid split attention conv
# (kernels 3/5/7/9, groups 1/4/8/16, SE weights, softmax across scales)
# replaces conv2 of every bottleneck (official EPSABlock, EPSANet-small).
# A conv replacement, not a plug-in: the backbone becomes the EPSANet preset,
# which keeps every other key of the inherited ResNet (depth, frozen_stages,
# init_cfg, ...). From torchvision weights, the PSA convs start fresh.
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(type='EPSANet')
