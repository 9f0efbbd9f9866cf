# GC (Global Context block, GCNet, arXiv 1904.11492): GlobalContext, mmcv's
# ContextBlock with a lean training pass (same weights; type='ContextBlock'
# runs mmcv's own), ratio 1/16, after conv3 + BN of the blocks of stages
# c3-c5, before the residual add: mmdet's own gcnet "r16-gcb-c3-c5" setting.
# Its last fusion conv is zero-initialised, so the network starts as the
# plain ResNet.
# AttentionResNet: mmdet's ResNet whose blocks hand the block the BN input
# and the shortcut, so training keeps no extra activation for it and the
# output is written once (mmattn issue 7); the plugins alone also fit any
# mmdet ResNet / ResNeXt (type='ResNeXt').
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(
    type='AttentionResNet',
    plugins=[
        dict(cfg=dict(type='GlobalContext', ratio=1. / 16),
             stages=(False, True, True, True), position='after_conv3')
    ])
