"""Attention backbones: the ResNet family and its named presets.

Where they register: backbones go in **mmdet's** ``MODELS`` registry
(``mmdet.registry.MODELS``), unlike the attention modules, which live in
mmengine's root registry so that every scope finds them as plugins.
mmpretrain already registers ``SEResNet`` / ``SEResNeXt`` in its own scope;
registering ours in mmdet's keeps both usable: an mmdet config names them
plainly (``type='SEResNet'``), an mmpretrain config names ours
``type='mmdet.SEResNet'``.

* :mod:`.blocks`: BasicBlock / Bottleneck / ResNeXt Bottleneck accepting
  attention anywhere (in-block, after the block, a conv replacement);
* :mod:`.sk`, :mod:`.psa`: the conv replacements :class:`SKConv` and
  :class:`PSAConv` (registered in the root registry, as conv layers);
* :mod:`.attention_resnet`: :class:`AttentionResNet` (+ ``V1d``, ``NeXt``);
* :mod:`.presets`: ``SEResNet``, ``ECAResNet``, ... with paper defaults.
"""
from .attention_resnet import (AttentionResNet, AttentionResNetV1d,
                               AttentionResNeXt)
from .blocks import (AttentionBasicBlock, AttentionBottleneck,
                     AttentionResNeXtBottleneck)
from .presets import (PRESETS, BAMResNet, CBAMResNet, CCNetResNet,
                      CoordResNet, DANetResNet, ECAResNet, EPSANet, FcaNet,
                      GCResNet, GEResNet, NAMResNet, NLResNet,
                      ResidualAttentionNet, SEResNet, SEResNeXt, SGEResNet,
                      SimAMResNet, SKResNet, SKResNeXt, TripletResNet)
from .psa import PSAConv
from .sk import SKConv

__all__ = [
    'AttentionResNet', 'AttentionResNetV1d', 'AttentionResNeXt',
    'AttentionBasicBlock', 'AttentionBottleneck',
    'AttentionResNeXtBottleneck', 'SKConv', 'PSAConv', 'PRESETS',
    'SEResNet', 'SEResNeXt', 'ECAResNet', 'CBAMResNet', 'BAMResNet',
    'NAMResNet', 'SGEResNet', 'SKResNet', 'SKResNeXt', 'EPSANet', 'GCResNet',
    'NLResNet', 'DANetResNet', 'CCNetResNet', 'CoordResNet', 'TripletResNet',
    'SimAMResNet', 'GEResNet', 'FcaNet', 'ResidualAttentionNet'
]
