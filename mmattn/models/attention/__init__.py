"""Attention modules: one file per module, each registered in ``MODELS``."""
from .base import POSITIONS, AttentionModule, ChannelGate
from .bam import BAM
from .cbam import CBAM
from .ccnet import CrissCrossAttention
from .context_block import ContextBlock, GlobalContext
from .coord import CoordAttention
from .danet import DualAttention
from .eca import ECA
from .fca import MultiSpectralAttention
from .gather_excite import GatherExcite
from .nam import NAM
from .non_local import NonLocal
from .residual_attention import ResidualAttention
from .se import SE
from .sge import SGE
from .simam import SimAM
from .triplet import TripletAttention

__all__ = ['POSITIONS', 'AttentionModule', 'ChannelGate', 'SE', 'ECA', 'CBAM',
           'TripletAttention', 'BAM', 'NAM', 'SGE', 'SimAM',
           'MultiSpectralAttention', 'CoordAttention', 'GatherExcite',
           'ResidualAttention', 'DualAttention', 'CrissCrossAttention',
           'NonLocal', 'ContextBlock', 'GlobalContext']
