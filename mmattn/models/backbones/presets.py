"""Named attention backbones with their papers' defaults.

Each preset is an :class:`AttentionResNet` (so every mmdet ResNet option
works and ``depth`` picks 18-152) with its attention module placed where its
paper puts it. Options shared by all presets:

* ``attn_cfg`` (dict): overrides of the module's config, e.g.
  ``SEResNet(depth=50, attn_cfg=dict(rd_ratio=1/8))``. For a per-stage
  argument (ECA's ``kernel_size``, ...) a sequence gives one value per
  stage and a scalar the same value on every stage.
* ``attn_stages`` (tuple[bool]): the stages carrying the module.
* ``plugins``: extra plugins, appended after the preset's.
"""
from typing import ClassVar, Dict, List, Optional, Sequence

from mmdet.registry import MODELS as MMDET_MODELS

from mmattn.models.common import check_choice
from .attention_resnet import AttentionResNet

_ALL = (True, True, True, True)


class AttentionPreset(AttentionResNet):
    """Base of the presets: one attention type, its defaults, stages and
    position (None: the module's ``default_position``).

    Subclasses set the class attributes; ``per_stage`` names arguments
    that take one value per stage (one plugin per stage is then emitted).
    """

    attn_type: ClassVar[Optional[str]] = None
    attn_defaults: ClassVar[dict] = {}
    per_stage: ClassVar[Dict[str, tuple]] = {}
    default_stages: ClassVar[tuple] = _ALL
    position: ClassVar[Optional[str]] = None
    base_options: ClassVar[dict] = {}
    preset_options = ('attn_cfg', 'attn_stages')

    def __init__(self,
                 depth: int,
                 attn_cfg: Optional[dict] = None,
                 attn_stages: Optional[Sequence[bool]] = None,
                 plugins: Optional[List[dict]] = None,
                 **kwargs) -> None:
        if attn_cfg is not None and not isinstance(attn_cfg, dict):
            raise ValueError(f'attn_cfg must be a dict of module arguments, '
                             f'got {attn_cfg!r}')
        cfg = {**self.per_stage, **self.attn_defaults, **(attn_cfg or {})}
        stages = self.default_stages if attn_stages is None else attn_stages
        options = {**self.base_options, **kwargs}
        preset = self.preset_plugins(depth, cfg, tuple(stages))
        super().__init__(depth, plugins=preset + list(plugins or []),
                         **options)

    def _plugin(self, cfg: dict, stages: tuple) -> dict:
        plugin = dict(cfg=dict(type=self.attn_type, **cfg), stages=stages)
        if self.position is not None:
            plugin['position'] = self.position
        return plugin

    def preset_plugins(self, depth: int, cfg: dict,
                       stages: tuple) -> List[dict]:
        """The preset's plugin list: one entry, or one per stage when an
        argument varies by stage."""
        varying = {k: v for k, v in cfg.items()
                   if k in self.per_stage and isinstance(v, (tuple, list))}
        if not varying:
            return [self._plugin(cfg, stages)]
        plugins = []
        for i, on in enumerate(stages):
            stage_cfg = dict(cfg)
            for key, values in varying.items():
                if len(values) != len(stages):
                    raise ValueError(
                        f'attn_cfg {key} must have one value per stage '
                        f'({len(stages)}), got {values!r}')
                stage_cfg[key] = values[i]
            one_hot = tuple(j == i and on for j in range(len(stages)))
            plugins.append(self._plugin(stage_cfg, one_hot))
        return plugins


@MMDET_MODELS.register_module()
class SEResNet(AttentionPreset):
    """SE-ResNet (`arXiv 1709.01507 <https://arxiv.org/abs/1709.01507>`_):
    SE, r = 16, FCs with bias, after conv3 + BN (BasicBlock: after
    conv2 + BN) of every block. ResNet-50: 28.09M with a 1000-class head."""

    attn_type = 'SE'


@MMDET_MODELS.register_module()
class SEResNeXt(SEResNet):
    """SE-ResNeXt: :class:`SEResNet` on ResNeXt 32x4d (``groups=32,
    base_width=4``, as timm ``seresnext50_32x4d``)."""

    base_options = dict(groups=32, base_width=4)


@MMDET_MODELS.register_module()
class ECAResNet(AttentionPreset):
    """ECA-ResNet (`arXiv 1910.03151 <https://arxiv.org/abs/1910.03151>`_):
    ECA after conv3 + BN of every block, kernel size per stage
    ``kernel_size=(3, 5, 5, 7)``: the released ``eca_resnet50_k3557``
    (adds exactly 80 parameters to ResNet-50). ``attn_cfg=dict(
    kernel_size=None)`` computes k from C with the paper's formula (as
    timm's ``ecaresnet*``)."""

    attn_type = 'ECA'
    per_stage = dict(kernel_size=(3, 5, 5, 7))


@MMDET_MODELS.register_module()
class CBAMResNet(AttentionPreset):
    """CBAM-ResNet (`arXiv 1807.06521 <https://arxiv.org/abs/1807.06521>`_):
    CBAM (channel then 7x7 spatial gate, r = 16) after conv3 + BN of every
    block, before the residual add (official). 28.09M for ResNet-50."""

    attn_type = 'CBAM'


@MMDET_MODELS.register_module()
class BAMResNet(AttentionPreset):
    """BAM-ResNet (`arXiv 1807.06514 <https://arxiv.org/abs/1807.06514>`_):
    one BAM after each of stages 1-3 (official ``bam1``..``bam3``); the
    stage outputs fed to the neck are the BAM outputs. 25.92M for
    ResNet-50. The module's default ``combine`` is the paper's; official
    checkpoints were trained with the code's ``combine='product'``."""

    attn_type = 'BAM'
    default_stages = (True, True, True, False)


@MMDET_MODELS.register_module()
class NAMResNet(AttentionPreset):
    """NAM-ResNet (`arXiv 2111.12419 <https://arxiv.org/abs/2111.12419>`_):
    NAM channel attention after conv3 + BN of every block (official)."""

    attn_type = 'NAM'


@MMDET_MODELS.register_module()
class SGEResNet(AttentionPreset):
    """SGE-ResNet (`arXiv 1905.09646 <https://arxiv.org/abs/1905.09646>`_):
    SGE with G = 64 after conv3 + BN of every block (official ImageNet and
    detection ``ResNetSGE``). 25.56M for ResNet-50."""

    attn_type = 'SGE'


@MMDET_MODELS.register_module()
class GCResNet(AttentionPreset):
    """GC-ResNet (`arXiv 1904.11492 <https://arxiv.org/abs/1904.11492>`_):
    :class:`~mmattn.models.attention.GlobalContext` (mmcv's
    ``ContextBlock`` with a lean training pass) with ratio 1/16 after
    conv3 + BN of the blocks of stages c3-c5, as mmdet's ``gcb-r16-c3-c5``
    configs. The last conv of each fusion branch is zero-initialised, so
    the network starts as the plain ResNet."""

    attn_type = 'GlobalContext'
    attn_defaults = dict(ratio=1 / 16)
    default_stages = (False, True, True, True)
    position = 'after_conv3'


@MMDET_MODELS.register_module()
class CoordResNet(AttentionPreset):
    """Coordinate-attention ResNet (`arXiv 2103.02907
    <https://arxiv.org/abs/2103.02907>`_): CoordAttention (reduction 32,
    at least 8 channels) after conv3 + BN of every block. The paper's code
    is for MobileNetV2; the bottleneck position is the one shared by the
    in-block gates."""

    attn_type = 'CoordAttention'


@MMDET_MODELS.register_module()
class TripletResNet(AttentionPreset):
    """Triplet-attention ResNet (`arXiv 2010.03045
    <https://arxiv.org/abs/2010.03045>`_): TripletAttention (k = 7) after
    conv3 + BN of every block, before the residual add (official)."""

    attn_type = 'TripletAttention'


@MMDET_MODELS.register_module()
class SimAMResNet(AttentionPreset):
    """SimAM-ResNet (ICML 2021): parameter-free SimAM after conv3 + BN of
    every block (official ``bn3 = Sequential(bn3, simam)``), with
    lambda = 0.1 (``e_lambda``): the value of the released ImageNet
    checkpoints and the official mmdetection configs (the module's own
    default, 1e-4, is the paper's CIFAR setting)."""

    attn_type = 'SimAM'
    attn_defaults = dict(e_lambda=0.1)


@MMDET_MODELS.register_module()
class GEResNet(AttentionPreset):
    """Gather-Excite ResNet (`arXiv 1810.12348
    <https://arxiv.org/abs/1810.12348>`_): GatherExcite with its default
    (GE-theta-minus, global extent, parameter-free) after conv3 + BN of
    every block, before the residual add (official prototxts)."""

    attn_type = 'GatherExcite'


@MMDET_MODELS.register_module()
class FcaNet(AttentionPreset):
    """FcaNet (`arXiv 2012.11879 <https://arxiv.org/abs/2012.11879>`_):
    MultiSpectralAttention ('top16', r = 16, no FC bias) after conv3 + BN
    of every block, with the official per-stage DCT sizes
    ``dct_size=(56, 28, 14, 7)`` (the stages' 224-px map sizes; other map
    sizes are adaptively pooled to them, as the official detection
    code)."""

    attn_type = 'MultiSpectralAttention'
    per_stage = dict(dct_size=(56, 28, 14, 7))


@MMDET_MODELS.register_module()
class NLResNet(AttentionPreset):
    """Non-local ResNet (`arXiv 1711.07971
    <https://arxiv.org/abs/1711.07971>`_) for detection: NonLocal blocks
    after whole residual blocks (never inside one).

    Default: **one** non-local block in c4 (stage 3) right before its last
    residual block (``block_indices=(-2,)``), the paper's Mask R-CNN
    setting (Sec. 6, "+1 NL"). The official video networks instead add one
    after every other block of res3 and res4 (``nonlocal_mod = 2``):
    ``NLResNet(depth=50, attn_stages=(False, True, True, False),
    interval=2)``. The block's output conv is zero-initialised, so each
    block starts as the identity.

    Args:
        block_indices (Sequence[int]): Blocks of each chosen stage followed
            by a non-local block (negative: from the end). Default: (-2,).
        interval (int, optional): Instead, follow blocks i with
            i % interval == interval - 1 (official ``nonlocal_mod``).
    """

    attn_type = 'NonLocal'
    default_stages = (False, False, True, False)
    preset_options = ('attn_cfg', 'attn_stages', 'block_indices', 'interval')

    def __init__(self,
                 depth: int,
                 block_indices: Sequence[int] = (-2, ),
                 interval: Optional[int] = None,
                 **kwargs) -> None:
        if interval is not None:
            self._select = dict(interval=interval)
        else:
            self._select = dict(block_indices=tuple(block_indices))
        super().__init__(depth, **kwargs)

    def _plugin(self, cfg: dict, stages: tuple) -> dict:
        return dict(super()._plugin(cfg, stages), position='after_block',
                    **self._select)


@MMDET_MODELS.register_module()
class DANetResNet(AttentionPreset):
    """DANet ResNet (`arXiv 1809.02983 <https://arxiv.org/abs/1809.02983>`_):
    DualAttention (position + channel attention, gamma = 0 init) on the
    last stage's output (``after_stage`` on c5). DANet is a segmentation
    head on the last (dilated) backbone feature; the nearest place in a
    detection backbone is after the last stage, so c5 and the pyramid
    levels built from it see the attended feature."""

    attn_type = 'DualAttention'
    default_stages = (False, False, False, True)
    position = 'after_stage'


@MMDET_MODELS.register_module()
class CCNetResNet(AttentionPreset):
    """CCNet ResNet (`arXiv 1811.11721 <https://arxiv.org/abs/1811.11721>`_):
    CrissCrossAttention (gamma = 0 init) on the last stage's output
    (``after_stage`` on c5), where CCNet's RCCA head reads the backbone;
    as with :class:`DANetResNet`, a segmentation head moved to the
    backbone's end."""

    attn_type = 'CrissCrossAttention'
    default_stages = (False, False, False, True)
    position = 'after_stage'


@MMDET_MODELS.register_module()
class ResidualAttentionNet(AttentionPreset):
    """Residual Attention Network (`arXiv 1704.06904
    <https://arxiv.org/abs/1704.06904>`_) on a ResNet trunk: one
    ResidualAttention mask module after each of stages 1-3 with hourglass
    depth 3/2/1 (``depth`` per stage in ``attn_cfg``), as Attention-56
    pools each stage's map down to 7 x 7 at 224 px."""

    attn_type = 'ResidualAttention'
    per_stage = dict(depth=(3, 2, 1, 1))
    default_stages = (True, True, True, False)


# --------------------------------------------------------------------------
# conv2 replacements
# --------------------------------------------------------------------------
class _ConvPreset(AttentionPreset):
    """A preset whose attention replaces the strided 3x3 conv."""

    def __init__(self,
                 depth: int,
                 attn_cfg: Optional[dict] = None,
                 attn_stages: Optional[Sequence[bool]] = None,
                 **kwargs) -> None:
        if attn_cfg is not None and not isinstance(attn_cfg, dict):
            raise ValueError(f'attn_cfg must be a dict of module arguments, '
                             f'got {attn_cfg!r}')
        conv = dict(type=self.attn_type, **self.conv_defaults(depth),
                    **(attn_cfg or {}))
        stages = self.default_stages if attn_stages is None else attn_stages
        kwargs = {**self.base_options, **kwargs}
        AttentionResNet.__init__(self, depth, attn_conv=conv,
                                 stage_with_attn_conv=tuple(stages), **kwargs)

    def conv_defaults(self, depth: int) -> dict:
        return dict(self.attn_defaults)


#: SK configurations of SKResNet, by variant.
SK_VARIANTS = {
    # implus/PytorchInsight "SK-ResNet50*": dense 3x3 + 32-group 3x3.
    'pytorchinsight': dict(dilations=(1, 1), branch_groups=(1, 32),
                           rd_ratio=1 / 16, min_channels=1),
    # timm skresnet18/34 (BasicBlock conv1) and skresnet50.
    'timm': dict(dilations=(1, 2), split_input=True, min_channels=1),
}


@MMDET_MODELS.register_module()
class SKResNet(_ConvPreset):
    """SK-ResNet (`arXiv 1903.06586 <https://arxiv.org/abs/1903.06586>`_):
    :class:`SKConv` in place of each block's strided 3x3 conv.

    Args:
        variant (str): ``'pytorchinsight'`` (default for depth >= 50): the
            "SK-ResNet50*" of implus/PytorchInsight (26.15M), a dense 3x3
            and a 32-group 3x3 branch, d = C/16. ``'timm'`` (default for
            depth 18/34): timm's ``skresnet18/34`` (SK replaces the
            BasicBlock's conv1; input split between a 3x3 and a dilated
            3x3 branch; d = C/8 rounded to 16) and ``skresnet50``
            (d = C/16 rounded to 8).
    """

    attn_type = 'SKConv'
    preset_options = ('attn_cfg', 'attn_stages', 'variant')

    def __init__(self, depth: int, variant: Optional[str] = None,
                 **kwargs) -> None:
        if variant is None:
            variant = 'timm' if depth < 50 else 'pytorchinsight'
        self.variant = check_choice(variant, tuple(SK_VARIANTS), 'variant')
        super().__init__(depth, **kwargs)

    def conv_defaults(self, depth: int) -> dict:
        cfg = dict(SK_VARIANTS[self.variant])
        if self.variant == 'timm':
            cfg.update(dict(rd_ratio=1 / 8, rd_divisor=16) if depth < 50 else
                       dict(rd_ratio=1 / 16, rd_divisor=8))
        return cfg


@MMDET_MODELS.register_module()
class SKResNeXt(_ConvPreset):
    """SKNet (`arXiv 1903.06586 <https://arxiv.org/abs/1903.06586>`_), the
    paper's SKNet-50: ResNeXt 32x4d with :class:`SKConv` (3x3 and dilated
    3x3 branches, both with 32 groups; d = max(C/16, 32)) in place of conv2.
    Same layout as timm's ``skresnext50_32x4d``."""

    attn_type = 'SKConv'
    attn_defaults = dict(dilations=(1, 2), rd_ratio=1 / 16, min_channels=32)
    base_options = dict(groups=32, base_width=4)


@MMDET_MODELS.register_module()
class EPSANet(_ConvPreset):
    """EPSANet (`arXiv 2105.14447 <https://arxiv.org/abs/2105.14447>`_):
    :class:`PSAConv` (kernels 3/5/7/9, groups 1/4/8/16, one shared SE
    weight module, softmax across scales) in place of each Bottleneck's
    conv2, followed by the block's BN + ReLU (official ``EPSABlock``).
    EPSANet-50 (small): 22.56M with a 1000-class head."""

    attn_type = 'PSAConv'


PRESETS = ('SEResNet', 'SEResNeXt', 'ECAResNet', 'CBAMResNet', 'BAMResNet',
           'NAMResNet', 'SGEResNet', 'SKResNet', 'SKResNeXt', 'EPSANet',
           'GCResNet', 'NLResNet', 'DANetResNet', 'CCNetResNet',
           'CoordResNet', 'TripletResNet', 'SimAMResNet', 'GEResNet',
           'FcaNet', 'ResidualAttentionNet')

__all__ = ['AttentionPreset', 'SK_VARIANTS', 'PRESETS'] + list(PRESETS)
