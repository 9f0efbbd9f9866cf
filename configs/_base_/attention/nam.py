# NAM (arXiv 2111.12419): normalization-based channel attention (the BN
# scale factors weigh the channels) after conv3 + BN of every residual
# block, before the residual add (official). mmdet ResNet plugins: fits any
# mmdet ResNet / ResNeXt config. The official optional L1 sparsity on the
# NAM scale factors is off, as by default in its training script; turn it on
# with custom_hooks = [dict(type='NAMSparsityHook', s=1e-4)] (and
# 'mmattn.engine' in custom_imports).
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(
    plugins=[dict(cfg=dict(type='NAM'), position='after_conv3')])
