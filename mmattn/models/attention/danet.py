"""Dual attention (DANet): position attention and channel attention."""
from typing import Optional

import torch

from mmattn.models.common import (accumulate_dtype, check_choice,
                                  fp32_region)
from mmattn.registry import MODELS
from .base import AttentionModule
from .self_attention import (GatedResidual, QKVSelfAttention,
                             check_chunk_size, softmax_attention)


class PositionAttention(QKVSelfAttention):
    """DANet's position attention module (PAM, paper eq. 2).

    With :math:`Q, K` 1x1 convs C -> C/8 and :math:`V` a 1x1 conv C -> C
    (all with bias) and N = HW positions:

    .. math::

        s_{ji} = \\operatorname{softmax}_i\\big(Q_j^\\top K_i\\big), \\qquad
        y_j = \\sum_i s_{ji}\\, V_i, \\qquad
        \\mathrm{PAM}(x)_j = x_j + \\gamma\\, y_j

    with no 1/sqrt(d) scaling and :math:`\\gamma` initialised to 0
    (official ``PAM_Module``). :math:`y` is computed by
    :func:`~mmattn.models.attention.self_attention.softmax_attention`
    (SDPA, scale 1), never building the (N x N) matrix.

    Args:
        in_channels (int): Channels C of the input.
        rd_ratio (float): C'/C of Q and K. Default: 1/8 (official).
        rd_channels (int, optional): Explicit C'; overrides ``rd_ratio``.
        rd_divisor (int): Round C' to a multiple of this. Default: 1.
        chunk_size (int, optional): See ``softmax_attention``.
            Default: None (SDPA).
    """

    def __init__(self,
                 in_channels: int,
                 rd_ratio: float = 1 / 8,
                 rd_channels: Optional[int] = None,
                 rd_divisor: int = 1,
                 chunk_size: Optional[int] = None) -> None:
        super().__init__(in_channels, rd_ratio, rd_channels, rd_divisor)
        self.chunk_size = check_chunk_size(chunk_size)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`y` for ``x`` of shape (B, C, H, W), same shape."""
        q, k, v = self.project(x)
        b, c, h, w = v.shape
        y = softmax_attention(
            q.flatten(2).transpose(1, 2),  # (B, HW, C')
            k.flatten(2).transpose(1, 2),  # (B, HW, C')
            v.flatten(2).transpose(1, 2),  # (B, HW, C)
            scale=1.0,
            chunk_size=self.chunk_size)  # (B, HW, C)
        return y.transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gated(self.attention(x), x.dtype)


class ChannelAttention(GatedResidual):
    """DANet's channel attention module (CAM, paper eq. 4); no convs.

    With :math:`X \\in \\mathbb{R}^{C \\times N}` the input flattened over
    the N = HW positions and :math:`E = X X^\\top` (C x C):

    .. math::

        A = \\operatorname{softmax}_{\\text{row}}\\big(
            \\operatorname{rowmax}(E) - E\\big), \\qquad
        \\mathrm{CAM}(x) = x + \\gamma\\, A X

    ``energy='code'`` (default) is the official ``CAM_Module``:
    ``max(energy) - energy`` before the softmax. Since a softmax ignores a
    per-row constant this equals :math:`\\operatorname{softmax}(-E)`: a
    channel attends most to the channels it is *least* similar to. The
    paper's eq. 3 writes :math:`\\operatorname{softmax}(E)` instead
    (``energy='paper'``). The default follows the code, which produced every
    released DANet result. :math:`E`, its softmax and :math:`A X` are
    computed in fp32 under fp16/bf16 autocast (:math:`E` grows with
    :math:`N \\lVert x \\rVert^2` and overflows fp16 quickly).

    Args:
        energy (str): 'code' or 'paper', see above. Default: 'code'.
    """

    ENERGIES = ('code', 'paper')

    def __init__(self, energy: str = 'code') -> None:
        super().__init__()
        self.energy = check_choice(energy, self.ENERGIES, 'energy')

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`A X` for ``x`` of shape (B, C, H, W), same shape, in at
        least fp32."""
        with fp32_region(x):
            xf = x.flatten(2).to(accumulate_dtype(x))  # (B, C, HW)
            energy = torch.bmm(xf, xf.transpose(1, 2))  # (B, C, C)
            if self.energy == 'code':
                energy = energy.amax(dim=-1, keepdim=True) - energy
            attn = energy.softmax(dim=-1)  # (B, C, C)
            return torch.bmm(attn, xf).view_as(x)  # (B, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gated(self.attention(x), x.dtype)

    def extra_repr(self) -> str:
        return f'energy={self.energy!r}'


@MODELS.register_module()
class DualAttention(AttentionModule):
    """Dual attention: DANet's position and channel attention, in parallel.

    `Dual Attention Network for Scene Segmentation
    <https://arxiv.org/abs/1809.02983>`_ (Fu et al., CVPR 2019) and the
    official junfu1115/DANet (``encoding/nn/da_att.py``). With
    :math:`y_P` the position attention (:class:`PositionAttention`) and
    :math:`y_C` the channel attention (:class:`ChannelAttention`) of the
    same input:

    .. math::

        \\mathrm{out} = x + \\gamma_P\\, y_P(x) + \\gamma_C\\, y_C(x)
                      = \\mathrm{PAM}(x) + \\mathrm{CAM}(x) - x

    **How the branches combine.** In DANet's segmentation head
    (``DANetHead``) each branch has its own 3x3 conv-BN-ReLU before and
    after the attention module, both branches read the same backbone
    features, and their outputs are summed (``feat_sum = sa_conv +
    sc_conv``). As a plugin without those convs, summing
    :math:`\\mathrm{PAM}(x) + \\mathrm{CAM}(x)` would count x twice (2x at
    init); this module keeps the parallel sum of the two attention terms
    and adds x once, so it has the input's shape and is the identity at
    init (:math:`\\gamma_P = \\gamma_C = 0`, as official). ``mode`` keeps
    one branch only.

    Parameters: :math:`2(C C' + C') + C^2 + C + 2` with C' = C/8 (mode
    'both'). Position: DANet is a head on the last stage of a dilated
    ResNet (``default_position = 'after_stage'``); as an mmdet ResNet
    plugin it also works at ``after_conv2`` / ``after_conv3``, at an
    O(HW) memory cost per position attention (never O(HW^2)).

    Args:
        in_channels (int): Channels C of the input.
        mode (str): 'both' (default), 'position' (PAM only) or 'channel'
            (CAM only).
        rd_ratio (float): C'/C of the PAM query/key convs. Default: 1/8.
        rd_channels (int, optional): Explicit C'; overrides ``rd_ratio``.
        rd_divisor (int): Round C' to a multiple of this. Default: 1.
        cam_energy (str): 'code' (default, official) or 'paper', see
            :class:`ChannelAttention`.
        chunk_size (int, optional): PAM via SDPA (None, default) or in
            blocks of this many queries, see ``softmax_attention``.
    """

    _abbr_ = 'danet'
    default_position = 'after_stage'
    MODES = ('both', 'position', 'channel')

    def __init__(self,
                 in_channels: int,
                 mode: str = 'both',
                 rd_ratio: float = 1 / 8,
                 rd_channels: Optional[int] = None,
                 rd_divisor: int = 1,
                 cam_energy: str = 'code',
                 chunk_size: Optional[int] = None) -> None:
        super().__init__()
        self.mode = check_choice(mode, self.MODES, 'mode')
        check_choice(cam_energy, ChannelAttention.ENERGIES, 'cam_energy')
        self.pam = PositionAttention(
            in_channels, rd_ratio, rd_channels, rd_divisor,
            chunk_size) if mode in ('both', 'position') else None
        self.cam = ChannelAttention(cam_energy) if mode in (
            'both', 'channel') else None
        self.init_weights()

    def init_weights(self) -> None:
        """Official init of each branch: PyTorch's default convs,
        :math:`\\gamma = 0`."""
        for branch in (self.pam, self.cam):
            if branch is not None:
                branch.init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for branch in (self.pam, self.cam):
            if branch is not None:
                out = out + branch.gated(branch.attention(x), x.dtype)
        return out

    def extra_repr(self) -> str:
        return f'mode={self.mode!r}'
