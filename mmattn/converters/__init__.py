"""Checkpoint converters: timm and official-repository layouts -> mmattn
backbone checkpoints (load them with ``init_cfg=dict(type='Pretrained',
checkpoint=...)``). One module per source family; the command-line
wrappers are in ``tools/model_converters/``."""
from .attention_module import convert_attention_module
from .common import (ConversionError, load_source, match_backbone,
                     save_converted)
from .ecanet import convert_ecanet
from .pytorchinsight import convert_pytorchinsight
from .timm import TIMM_BACKBONES, convert_timm

__all__ = [
    'ConversionError', 'TIMM_BACKBONES', 'convert_timm', 'convert_ecanet',
    'convert_pytorchinsight', 'convert_attention_module', 'load_source',
    'match_backbone', 'save_converted'
]
