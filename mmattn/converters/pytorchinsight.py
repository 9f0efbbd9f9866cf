"""implus/PytorchInsight ImageNet checkpoints -> mmattn.

``classification/models/imagenet/resnet_{se,sge,sk,cbam,bam}.py`` keep
torchvision's ResNet names and add

* SE: ``se.fc.{0,2}`` (Linear, with bias) -> our 1x1 convs ``se.fc1/fc2``;
* SGE (official): ``sge.weight`` / ``sge.bias`` (1, G, 1, 1), same names;
* SK ("SK-ResNet50*", Bottleneck only; PytorchInsight's ``sk_resnet18/34``
  are plain ResNets): ``conv2/bn2`` (dense branch), ``conv2g/bn2g``
  (32-group branch), ``conv_fc1``, ``bn_fc1``, ``conv_fc2`` ->
  :class:`~mmattn.models.backbones.SKConv` as conv2;
* CBAM / BAM: the Jongchan/attention-module layout
  (:mod:`.attention_module`).
"""
from typing import List

from .attention_module import (attention_module_backbone,
                               attention_module_rules)
from .common import Rule, StateDict, convert, infer_depth, unwrap_state_dict

_BLOCK = r'^(layer\d+\.\d+)\.'

SE_RULES: List[Rule] = [(r'\.se\.fc\.0\.', '.se.fc1.'),
                        (r'\.se\.fc\.2\.', '.se.fc2.')]
SK_RULES: List[Rule] = [
    (_BLOCK + r'conv2\.', r'\1.conv2.branches.0.conv.'),
    (_BLOCK + r'bn2\.', r'\1.conv2.branches.0.bn.'),
    (_BLOCK + r'conv2g\.', r'\1.conv2.branches.1.conv.'),
    (_BLOCK + r'bn2g\.', r'\1.conv2.branches.1.bn.'),
    (_BLOCK + r'conv_fc1\.', r'\1.conv2.fc_reduce.'),
    (_BLOCK + r'bn_fc1\.', r'\1.conv2.bn.'),
    (_BLOCK + r'conv_fc2\.', r'\1.conv2.fc_select.'),
]


def pytorchinsight_backbone(state_dict: StateDict) -> dict:
    """The mmattn backbone config of a PytorchInsight attention ResNet
    (module read from the keys)."""
    depth = infer_depth(state_dict)
    keys = list(state_dict)
    if any('.se.fc.' in k for k in keys):
        return dict(type='SEResNet', depth=depth)
    if any(k.endswith('.sge.weight') for k in keys):
        groups = int(next(v for k, v in state_dict.items()
                          if k.endswith('.sge.weight')).shape[1])
        return dict(type='SGEResNet', depth=depth,
                    attn_cfg=dict(groups=groups))
    if any('.conv2g.' in k for k in keys):
        return dict(type='SKResNet', depth=depth, variant='pytorchinsight')
    return attention_module_backbone(state_dict)


def convert_pytorchinsight(state_dict: StateDict):
    """Convert a PytorchInsight SE/SGE/SK/CBAM/BAM ResNet state dict.
    Returns ``(state_dict, backbone_cfg)``.

    Raises:
        ConversionError: if any key is left over or missing.
    """
    state_dict = unwrap_state_dict(state_dict)
    cfg = pytorchinsight_backbone(state_dict)
    rules = {'SEResNet': [(r'^fc\.', None)] + SE_RULES,
             'SGEResNet': [(r'^fc\.', None)],
             'SKResNet': [(r'^fc\.', None)] + SK_RULES}.get(
                 cfg['type']) or attention_module_rules(state_dict)
    return convert(state_dict, rules, cfg, 'implus/PytorchInsight'), cfg
