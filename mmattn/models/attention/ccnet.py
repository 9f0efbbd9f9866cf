"""Criss-cross attention (CCNet)."""
from typing import Optional

import mmcv.ops.cc_attention  # noqa: F401  (registers mmcv's version first)
import torch

from mmattn.models.common import (accumulate_dtype, check_positive_int,
                                  fp32_region)
from mmattn.registry import MODELS
from .base import AttentionModule
from .self_attention import QKVSelfAttention


# mmcv.ops registers its own 'CrissCrossAttention' (one pass, gamma as a
# ``Scale`` module) in the same root registry. This one is a superset
# (recurrence, fp32 statistics) and takes the name deliberately; mmcv's
# class stays importable as ``mmcv.ops.CrissCrossAttention``.
@MODELS.register_module(force=True)
class CrissCrossAttention(QKVSelfAttention, AttentionModule):
    """Recurrent criss-cross attention (RCCA), in pure PyTorch.

    `CCNet: Criss-Cross Attention for Semantic Segmentation
    <https://arxiv.org/abs/1811.11721>`_ (Huang et al., ICCV 2019), eqs.
    1-2, and the official speedinghzl/CCNet ``CrissCrossAttention`` (its
    pure-PyTorch version, ``cc_attention/functions.py``). With Q, K 1x1
    convs C -> C/8 and V a 1x1 conv C -> C (all with bias), each position
    u = (i, j) attends to the H + W - 1 positions of its criss-cross path
    :math:`\\Omega_u` (its column and its row, itself counted once):

    .. math::

        A_u = \\operatorname{softmax}_{v \\in \\Omega_u}
              \\big(Q_u^\\top K_v\\big), \\qquad
        x'_u = x_u + \\gamma \\sum_{v \\in \\Omega_u} A_{u,v}\\, V_v

    As in the official code, the energies are split into a column term
    (B, H, W, H) and a row term (B, H, W, W), the self position of the
    column term is masked with -inf, and **one** softmax runs over the
    concatenated (B, H, W, H + W) energies; no (HW x HW) tensor is built.
    Energies and softmax are computed in fp32 under fp16/bf16 autocast.
    No 1/sqrt(d) scaling; :math:`\\gamma` is initialised to 0, so the block
    starts as the identity.

    **Recurrence**: one pass only connects a position to its row and
    column; CCNet's RCCA module applies the *same* criss-cross attention
    (shared weights) ``recurrence`` times, so that every position reaches
    every other one (R = 2, the setting of the paper's results).

    Parameters: :math:`2(C C' + C') + C^2 + C + 1` with C' = C/8. Position:
    CCNet is a segmentation head on the last stage of a dilated ResNet
    (behind a 3x3 conv C -> C/4, ``default_position = 'after_stage'``); as
    an mmdet ResNet plugin it also works at ``after_conv2`` /
    ``after_conv3``.

    Args:
        in_channels (int): Channels C of the input.
        recurrence (int): Number R of passes with shared weights.
            Default: 2 (paper).
        rd_ratio (float): C'/C of the query/key convs. Default: 1/8.
        rd_channels (int, optional): Explicit C'; overrides ``rd_ratio``.
        rd_divisor (int): Round C' to a multiple of this. Default: 1.
    """

    _abbr_ = 'cca'
    default_position = 'after_stage'

    def __init__(self,
                 in_channels: int,
                 recurrence: int = 2,
                 rd_ratio: float = 1 / 8,
                 rd_channels: Optional[int] = None,
                 rd_divisor: int = 1) -> None:
        super().__init__(in_channels, rd_ratio, rd_channels, rd_divisor)
        self.recurrence = check_positive_int(recurrence, 'recurrence')
        self.init_weights()

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\sum_{v} A_{u,v} V_v` of one pass, shape (B, C, H, W)."""
        q, k, v = self.project(x)
        h, w = x.shape[2:]
        with fp32_region(x):
            q, k = q.to(accumulate_dtype(q)), k.to(accumulate_dtype(k))
            # Column term: position (i, j) against (g, j), g = 0..H-1.
            e_col = torch.einsum('bcij,bcgj->bijg', q, k)  # (B, H, W, H)
            # (H, H) diagonal; a comparison rather than torch.eye(bool),
            # which ONNX Runtime cannot run (EyeLike of bool)
            rows = torch.arange(h, device=x.device)
            self_pos = rows.unsqueeze(1) == rows.unsqueeze(0)
            e_col = e_col.masked_fill(self_pos.unsqueeze(1), float('-inf'))
            # Row term: position (i, j) against (i, g), g = 0..W-1.
            e_row = torch.einsum('bcij,bcig->bijg', q, k)  # (B, H, W, W)
            attn = torch.cat([e_col, e_row], dim=-1).softmax(dim=-1)
        a_col, a_row = attn.to(v.dtype).split([h, w], dim=-1)
        return (torch.einsum('bijg,bcgj->bcij', a_col, v) +
                torch.einsum('bijg,bcig->bcij', a_row, v))  # (B, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.recurrence):
            x = x + self.gated(self.attention(x), x.dtype)
        return x

    def extra_repr(self) -> str:
        return f'recurrence={self.recurrence}'
