# FcaNet (multi-spectral channel attention, arXiv 2012.11879): 16 DCT
# frequencies ('top16'), r = 16, FCs without bias, after conv3 + BN of every
# residual block, before the residual add, with the official per-stage DCT
# sizes 56 / 28 / 14 / 7 (other map sizes are adaptively pooled to them, as
# in the official detection code). mmdet ResNet plugins: fits any mmdet
# ResNet / ResNeXt config.
# Use: _base_ = [<mmdet ResNet config>, '<this file>'] and
# model = dict(backbone=_base_.attention_backbone): a variable, not `model`,
# because mmengine forbids two bases defining the same key.
custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
attention_backbone = dict(plugins=[
    dict(cfg=dict(type='MultiSpectralAttention', dct_size=56),
         position='after_conv3', stages=(True, False, False, False)),
    dict(cfg=dict(type='MultiSpectralAttention', dct_size=28),
         position='after_conv3', stages=(False, True, False, False)),
    dict(cfg=dict(type='MultiSpectralAttention', dct_size=14),
         position='after_conv3', stages=(False, False, True, False)),
    dict(cfg=dict(type='MultiSpectralAttention', dct_size=7),
         position='after_conv3', stages=(False, False, False, True)),
])
