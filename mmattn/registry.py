"""Where mmattn registers its models.

mmattn registers every module in **mmengine's root** ``MODELS`` registry, the
same place mmcv puts its bricks (``ContextBlock``, ``NonLocal2d``). Each
OpenMMLab scope's registry (``mmdet``, ``mmpretrain``) has the root as parent,
so a name registered here is found

* from an mmdet config (``default_scope='mmdet'``),
* from an mmpretrain config (``default_scope='mmpretrain'``), and
* from plain Python with no default scope at all, e.g.
  ``mmdet.models.ResNet(plugins=[dict(cfg=dict(type='ECA'), ...)])``,
  where ``mmcv.cnn.build_plugin_layer`` falls back to the root registry.

A child registry with an ``mmattn`` scope would miss the last case.
"""
from mmengine.registry import MODELS

__all__ = ['MODELS']
