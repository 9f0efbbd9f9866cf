# SK (Selective Kernel, arXiv 1903.06586): SKConv replaces the strided 3x3
# conv of every residual block (for depth >= 50 the "SK-ResNet50*" of
# implus/PytorchInsight: a dense 3x3 and a 32-group 3x3 branch fused by
# softmax attention, d = C/16). A conv replacement, not a plug-in: the
# backbone becomes the SKResNet preset, which keeps every other key of the
# inherited ResNet (depth, frozen_stages, init_cfg, ...). From torchvision
# weights, the SKConv branches start fresh.
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(type='SKResNet')
