"""Jongchan/attention-module (official CBAM and BAM) checkpoints -> mmattn.

``MODELS/model_resnet.py::ResidualNet`` (ImageNet) keeps torchvision's
names for the ResNet and adds

* CBAM in every block as ``cbam``: ``ChannelGate.mlp.{1,3}`` (Linear, with
  bias; index 0 is a Flatten) and ``SpatialGate.spatial.{conv,bn}``;
* BAM after stages 1-3 as ``bam1``..``bam3``:
  ``channel_att.gate_c.{gate_c_fc_0, gate_c_bn_1, gate_c_fc_final}`` and
  ``spatial_att.gate_s.{gate_s_conv_reduce0, gate_s_bn_reduce0,
  gate_s_conv_di_<i>, gate_s_bn_di_<i>, gate_s_conv_final}``.

implus/PytorchInsight's ``resnet_cbam.py`` / ``resnet_bam.py`` copy this
layout. The official BAM combines its branches by a product (the paper: a
sum), so BAM checkpoints convert for ``attn_cfg=dict(combine='product')``.
"""
import re
from typing import List

from .common import Rule, StateDict, convert, infer_depth

CBAM_RULES: List[Rule] = [
    (r'\.cbam\.ChannelGate\.mlp\.1\.', '.cbam.fc1.'),
    (r'\.cbam\.ChannelGate\.mlp\.3\.', '.cbam.fc2.'),
    (r'\.cbam\.SpatialGate\.spatial\.', '.cbam.spatial_gate.'),
]


def num_bam_dilated_convs(state_dict: StateDict) -> int:
    """Number of dilated 3x3 convs in the official BAM spatial branch."""
    found = {int(m[1]) for k in state_dict
             if (m := re.search(r'gate_s_conv_di_(\d+)\.', k))}
    return len(found)


def bam_rules(num_dilated: int) -> List[Rule]:
    """Official BAM names -> :class:`~mmattn.models.attention.BAM`'s
    (``spatial`` is a Sequential of conv, BN, act triples)."""
    gate_s = r'^(bam\d+)\.spatial_att\.gate_s\.gate_s_'
    return [
        (r'^(bam\d+)\.channel_att\.gate_c\.gate_c_fc_0\.', r'\1.fc1.'),
        (r'^(bam\d+)\.channel_att\.gate_c\.gate_c_bn_1\.', r'\1.norm.'),
        (r'^(bam\d+)\.channel_att\.gate_c\.gate_c_fc_final\.', r'\1.fc2.'),
        (gate_s + r'conv_reduce0\.', r'\1.spatial.0.'),
        (gate_s + r'bn_reduce0\.', r'\1.spatial.1.'),
        (gate_s + r'conv_di_(\d+)\.',
         lambda m: f'{m[1]}.spatial.{3 + 3 * int(m[2])}.'),
        (gate_s + r'bn_di_(\d+)\.',
         lambda m: f'{m[1]}.spatial.{4 + 3 * int(m[2])}.'),
        (gate_s + r'conv_final\.', rf'\1.spatial.{3 + 3 * num_dilated}.'),
    ]


def attention_module_backbone(state_dict: StateDict) -> dict:
    """The mmattn backbone config of an official CBAM or BAM ResNet."""
    depth = infer_depth(state_dict)
    if any('.cbam.' in k for k in state_dict):
        return dict(type='CBAMResNet', depth=depth)
    if any(k.startswith('bam1.') for k in state_dict):
        return dict(type='BAMResNet', depth=depth, attn_cfg=dict(
            combine='product',
            num_dilated_convs=num_bam_dilated_convs(state_dict)))
    raise ValueError('state_dict has neither CBAM (".cbam.") nor BAM '
                     '("bam1.") keys: not an attention-module ResNet')


def attention_module_rules(state_dict: StateDict) -> List[Rule]:
    rules: List[Rule] = [(r'^fc\.', None)] + CBAM_RULES
    return rules + bam_rules(num_bam_dilated_convs(state_dict))


def convert_attention_module(state_dict: StateDict,
                             source: str = 'Jongchan/attention-module'):
    """Convert an official CBAM/BAM ResNet state dict (type and depth read
    from its keys). Returns ``(state_dict, backbone_cfg)``.

    Raises:
        ConversionError: if any key is left over or missing.
    """
    from .common import unwrap_state_dict
    state_dict = unwrap_state_dict(state_dict)
    cfg = attention_module_backbone(state_dict)
    return convert(state_dict, attention_module_rules(state_dict), cfg,
                   source), cfg
