# ImageNet-1k pretraining recipe of the attention papers (SE, ECA, CBAM, SGE,
# SK, ... all train ResNet this way), which is mmpretrain's ResNet recipe:
# SGD lr 0.1 for batch 256 (8 GPUs x 32), momentum 0.9, weight decay 1e-4,
# 100 epochs, lr x 0.1 at epochs 30, 60 and 90; RandomResizedCrop 224 + flip;
# val: short side 256 + center crop 224; top-1 / top-5 accuracy.
# ImageNet-1k in mmpretrain's layout under data/imagenet/.
# Used by configs/pretrain/*.py with a model base and an attention snippet.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py',
]
# every epoch is saved; keep the last three (~0.3 GB each)
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
