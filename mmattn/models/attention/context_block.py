"""Global Context (GC) block: mmcv's ``ContextBlock``, with an init that
survives a parent backbone's init.

`GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond
<https://arxiv.org/abs/1904.11492>`_ (Cao et al., 2019), eqs. 3-4:

.. math::

    c = \\sum_j \\operatorname{softmax}_j(W_k x_j)\\, x_j, \\qquad
    z_i = x_i + W_{v2}\\, \\mathrm{ReLU}(\\mathrm{LN}(W_{v1} c))

**Where GC lives.** mmattn does not re-implement GC: mmcv's
``mmcv.cnn.bricks.context_block.ContextBlock`` is the reference
implementation (ported from the official xvjiarui/GCNet) and is already
registered as ``'ContextBlock'`` in mmengine's root ``MODELS``, so mmdet
configs and ``build_plugin_layer`` find it as they are
(``plugins=[dict(cfg=dict(type='ContextBlock', ratio=1. / 16),
stages=(False, True, True, True), position='after_conv3')]`` is the paper's
r16, c3-c5 setting, the conv3 + BN slot of a bottleneck).

**What this file fixes.** The block is meant to start as the identity:
mmcv's ``reset_parameters()`` zero-initialises the last conv of each fusion
branch (and Kaiming-initialises ``conv_mask``). But it is a plain
``nn.Module`` without ``init_weights()``, the only hook mmengine's
``BaseModule.init_weights`` calls on children. An mmdet ``ResNet`` built
without a checkpoint applies ``Kaiming(layer='Conv2d')`` to *every* conv it
contains, plugins included, so ``ResNet(...).init_weights()`` leaves random
weights in those last convs and every GC block starts by adding noise. The
fix gives mmcv's class the hook, pointing at its own ``reset_parameters``;
mmengine then restores GC's init right after the backbone's (the same order
that protects mmcv's ``NonLocal2d``, which has an ``init_weights``). It is
applied once, on import of :mod:`mmattn.models.attention` (hence on ``import
mmattn``), and only if mmcv does not define the hook itself.
"""
from mmcv.cnn.bricks.context_block import ContextBlock

if not hasattr(ContextBlock, 'init_weights'):
    ContextBlock.init_weights = ContextBlock.reset_parameters

__all__ = ['ContextBlock']
