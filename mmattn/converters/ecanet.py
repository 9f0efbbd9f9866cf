"""BangguWu/ECANet checkpoints (``eca_resnet{18,34,50,101,152}``) -> mmattn.

``models/eca_resnet.py`` keeps torchvision's ResNet names and adds
``eca.conv`` (Conv1d(1, 1, k), no bias) to every block, after bn3 (bn2 in a
BasicBlock). The per-stage kernel sizes (``k_size``, e.g. 3, 5, 5, 7 for
the released ``eca_resnet50_k3557``) are read from the weights.
"""
from .common import StateDict, convert, infer_depth, unwrap_state_dict


def ecanet_backbone(state_dict: StateDict) -> dict:
    """``ECAResNet`` config with the depth and per-stage k of the
    checkpoint."""
    kernel_sizes = tuple(
        int(state_dict[f'layer{i}.0.eca.conv.weight'].shape[-1])
        for i in range(1, 5))
    return dict(type='ECAResNet', depth=infer_depth(state_dict),
                attn_cfg=dict(kernel_size=kernel_sizes))


def convert_ecanet(state_dict: StateDict):
    """Convert an official ECA-ResNet state dict. Returns
    ``(state_dict, backbone_cfg)``.

    Raises:
        ConversionError: if any key is left over or missing.
    """
    state_dict = unwrap_state_dict(state_dict)
    cfg = ecanet_backbone(state_dict)
    return convert(state_dict, [(r'^fc\.', None)], cfg,
                   'BangguWu/ECANet'), cfg
