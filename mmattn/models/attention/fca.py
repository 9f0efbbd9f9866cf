"""Multi-spectral channel attention (FcaNet)."""
import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from mmattn.models.common import (ActLayer, accumulate_dtype,
                                  adaptive_avg_pool2d, adaptive_pool_matrix,
                                  capturing_graph, check_choice,
                                  check_divisible, check_positive_int,
                                  create_act, fp32_region, reduced_channels)
from mmattn.registry import MODELS
from .base import ChannelGate

#: The official frequency rankings on a 7x7 DCT grid (FcaNet's
#: ``get_freq_indices``), as "uv" digit pairs with u along H and v along W:
#: 'top' = best single-frequency ImageNet accuracy first, 'low' = zig-zag
#: from the lowest frequency, 'bot' = worst first.
_FREQ_RANKINGS = {
    'top': '00 01 60 05 02 10 12 40 50 16 30 04 06 03 35 22 '
           '46 63 33 53 55 21 61 52 54 32 31 41 23 20 65 13',
    'low': '00 01 10 11 02 20 21 12 22 03 30 40 04 13 31 05 '
           '14 23 32 41 50 06 15 24 33 42 51 60 16 25 34 43',
    'bot': '66 14 34 36 26 43 11 24 44 45 56 15 42 62 25 51 '
           '64 13 65 20 23 41 31 32 54 52 61 21 55 53 33 63',
}

#: Valid ``freq_sel`` values: a ranking and how many of its frequencies.
FREQ_SELECTIONS = tuple(f'{kind}{n}' for kind in ('top', 'low', 'bot')
                        for n in (1, 2, 4, 8, 16, 32))

#: Default DCT size per channel count: the official ``c2wh`` table
#: {64: 56, 128: 28, 256: 14, 512: 7} is keyed by a block's ``planes``,
#: i.e. by stage. mmdet plugins only see ``in_channels``; at
#: ``after_conv3`` of ResNet-50/101 (C = 4 * planes) the same stages give
#: this table, whose 64/128 entries also cover ``after_conv1/2`` of the
#: first two stages.
DEFAULT_DCT_SIZES = {64: 56, 128: 28, 256: 56, 512: 28, 1024: 14, 2048: 7}


def frequency_indices(freq_sel: str) -> Tuple[Tuple[int, int], ...]:
    """The (u, v) frequencies of ``freq_sel`` (e.g. ``'top16'``) on the
    7x7 grid, in the official order."""
    check_choice(freq_sel, FREQ_SELECTIONS, 'freq_sel')
    pairs = _FREQ_RANKINGS[freq_sel[:3]].split()[:int(freq_sel[3:])]
    return tuple((int(p[0]), int(p[1])) for p in pairs)


def dct_basis_1d(freq: int, size: int) -> torch.Tensor:
    """Orthonormal DCT-II basis vector (float64, shape ``(size,)``):
    cos(pi * freq * (pos + 1/2) / size) / sqrt(size), times sqrt(2) when
    freq > 0 (FcaNet's ``build_filter``)."""
    pos = torch.arange(size, dtype=torch.float64)
    basis = torch.cos(math.pi * freq * (pos + 0.5) / size) / math.sqrt(size)
    return basis * math.sqrt(2) if freq > 0 else basis


def dct_filters(in_channels: int, size: Tuple[int, int],
                freqs: Sequence[Tuple[int, int]]) -> torch.Tensor:
    """One 2D DCT basis per channel, shape ``(C, H, W)``: consecutive
    groups of C / len(freqs) channels share the basis B_{u,v}(h, w) =
    b_u(h) * b_v(w) of one frequency."""
    h, w = size
    per_freq = torch.stack([
        torch.outer(dct_basis_1d(u, h), dct_basis_1d(v, w))
        for u, v in freqs
    ])  # (F, H, W)
    return per_freq.repeat_interleave(in_channels // len(freqs), dim=0)


def _dct_size(value: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2 or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 7
            for s in value)):
        raise ValueError(
            'dct_size must be an int >= 7 or a pair (H, W) of them (the '
            f'frequency tables live on a 7x7 grid), got {value!r}')
    return tuple(value)


@MODELS.register_module()
class MultiSpectralAttention(ChannelGate):
    """Multi-spectral channel attention (the FcaNet layer).

    `FcaNet: Frequency Channel Attention Networks
    <https://arxiv.org/abs/2012.11879>`_ (Qin et al., ICCV 2021) and
    the official ``MultiSpectralAttentionLayer``
    (cfzd/FcaNet, ``model/layer.py``). SE's global average pooling is the
    lowest frequency of a 2D DCT; FcaNet splits the C channels into n
    equal parts and pools part i with its own fixed DCT basis:

    .. math::

        B_{u,v}(h, w) = b_u^H(h)\\, b_v^W(w), \\quad
        b_f^N(p) = \\frac{\\alpha_f}{\\sqrt{N}}
            \\cos\\Big(\\frac{\\pi f (p + \\tfrac{1}{2})}{N}\\Big), \\quad
        \\alpha_0 = 1, \\ \\alpha_{f>0} = \\sqrt{2}

    .. math::

        \\mathrm{Freq}_c = \\sum_{h,w} x_c(h, w)\\, B_{u_i,v_i}(h, w)
            \\ (c \\in \\text{part } i), \\quad
        s = \\sigma(W_2\\, \\delta(W_1 \\mathrm{Freq})), \\quad
        \\tilde{x}_c = s_c \\cdot x_c

    The basis is orthonormal (the official normalisation), so frequency
    (0, 0) gives :math:`\\sqrt{HW}\\,\\mathrm{GAP}(x)`. The bases are a
    non-learned buffer, rebuilt from the arguments and kept out of state
    dicts (official checkpoints store it as ``dct_layer.weight``; drop that
    key when converting). The FCs are SE's with r = 16 and **no biases**
    (official).

    **Frequencies.** ``freq_sel`` picks the first n of an official ranking
    of the 7x7 DCT grid ('top16' default, the paper's best); (u, v) on a
    larger ``dct_size`` are scaled by ``dct_size // 7`` so that they mean
    the same frequency, as official ((2, 2) at 14x14 = (1, 1) at 7x7;
    a size that is not a multiple of 7 uses the floor, as official).

    **Any input size.** The DCT runs at a fixed ``dct_size``; an input of
    another H x W is first adaptive-average-pooled to it, as in the
    official detection code (ImageNet inputs already match); both steps
    being linear, they run as one filter per frequency at the input's
    resolution (:meth:`pooling_filter`). The default
    ``dct_size`` comes from the official per-stage table: for in_channels
    256/512/1024/2048 (``after_conv3`` of a ResNet-50 bottleneck, stages
    1-4) it is 56/28/14/7, for 64/128 (``after_conv1/2`` of stages 1-2)
    56/28, otherwise 7. Pass it explicitly elsewhere (e.g. 14/7 for
    ``after_conv1/2`` of stages 3-4, where C = 256/512).

    Position: after conv3 + BN of a bottleneck, before the residual add
    (``after_conv3``). Parameters: 2C^2/16 per block (2,514,944 in
    ResNet-50).

    Args:
        in_channels (int): Channels C of the input; a multiple of the
            number of frequencies n.
        dct_size (int | tuple[int, int], optional): DCT grid H x W (an int
            means square), each >= 7. Default: None, from the table above.
        freq_sel (str): 'top', 'low' or 'bot' followed by n in 1, 2, 4, 8,
            16, 32. Default: 'top16'.
        rd_ratio (float): Reduction 1/r of the first FC. Default: 1/16.
        rd_channels (int, optional): Explicit reduced width; overrides
            ``rd_ratio``. Default: None.
        rd_divisor (int): Round the reduced width to a multiple of this.
            Default: 1 (official ``C // r``).
        bias (bool): Biases on the FCs. Default: False (official).
        act_layer (str | type): :math:`\\delta`. Default: 'relu'.
        gate_layer (str | type): :math:`\\sigma`. Default: 'sigmoid'.
    """

    _abbr_ = 'fca'

    def __init__(self,
                 in_channels: int,
                 dct_size: Optional[Union[int, Tuple[int, int]]] = None,
                 freq_sel: str = 'top16',
                 rd_ratio: float = 1 / 16,
                 rd_channels: Optional[int] = None,
                 rd_divisor: int = 1,
                 bias: bool = False,
                 act_layer: ActLayer = 'relu',
                 gate_layer: ActLayer = 'sigmoid') -> None:
        super().__init__()
        check_positive_int(in_channels, 'in_channels')
        freqs = frequency_indices(freq_sel)
        check_divisible(in_channels, len(freqs), 'in_channels', 'num_freq')
        if dct_size is None:
            dct_size = DEFAULT_DCT_SIZES.get(in_channels, 7)
        self.dct_size = _dct_size(dct_size)
        self.freq_sel = freq_sel
        h, w = self.dct_size
        self.freqs = tuple((u * (h // 7), v * (w // 7)) for u, v in freqs)
        self.register_buffer(
            'dct_filter',
            dct_filters(in_channels, self.dct_size,
                        self.freqs).to(torch.get_default_dtype()),
            persistent=False)  # (C, dct_h, dct_w)
        self._filter: Optional[torch.Tensor] = None
        self._filter_key: Optional[tuple] = None

        rd_channels = reduced_channels(in_channels, rd_ratio, rd_channels,
                                       rd_divisor)
        self.fc1 = nn.Linear(in_channels, rd_channels, bias=bias)
        self.act = create_act(act_layer, 'act_layer')
        self.fc2 = nn.Linear(rd_channels, in_channels, bias=bias)
        self.gate = create_act(gate_layer, 'gate_layer')

    def pooling_filter(self, x: torch.Tensor) -> torch.Tensor:
        """The spectral pooling of an H x W input as one filter per
        frequency, (n, H*W, 1) in x's accumulation dtype: pooling to
        ``dct_size`` is linear, ``P_H x P_W^T`` with P the (out, in) matrices
        of adaptive average pooling, so weighting the pooled map by a basis B
        is weighting x by ``P_H^T B P_W``. Cached for the last input size,
        dtype and device (and the bases' dtype).
        """
        (h, w), dtype = x.shape[2:], accumulate_dtype(x)
        key = (h, w, dtype, x.device, self.dct_filter.dtype)
        if self._filter_key != key:
            basis = self.dct_filter[::self.dct_filter.shape[0] //
                                    len(self.freqs)]  # (n, dh, dw)
            basis = basis.to(dtype=dtype, device=x.device)
            rows = adaptive_pool_matrix(h, self.dct_size[0], basis)  # (dh, H)
            cols = adaptive_pool_matrix(w, self.dct_size[1], basis)  # (dw, W)
            with fp32_region(x):
                filt = torch.einsum('ph,npq,qw->nhw', rows, basis, cols)
            self._filter = filt.reshape(len(self.freqs), h * w, 1)
            self._filter_key = key
        return self._filter

    def spectral_pool(self, x: torch.Tensor) -> torch.Tensor:
        """Freq: each channel's DCT coefficient at its part's frequency,
        shape (B, C), in at least fp32.

        One matrix-vector product per sample and frequency with
        :meth:`pooling_filter`: x is read once, and its gradient written
        once. A captured graph (ONNX export, FLOP counts, ``torch.compile``:
        :func:`~mmattn.models.common.capturing_graph`) pools to
        ``dct_size`` and weights by the bases instead, as the paper writes
        it, so that it holds the pooling matrices of
        :func:`~mmattn.models.common.adaptive_avg_pool2d` as constants (or
        the compiler's pooling) rather than a filter built within the
        graph.
        """
        if capturing_graph():
            pooled = x
            if x.shape[2:] != self.dct_size:
                pooled = adaptive_avg_pool2d(x, self.dct_size)
            return torch.sum(pooled * self.dct_filter, dim=(2, 3),
                             dtype=accumulate_dtype(pooled))  # (B, C)
        b, c, h, w = x.shape
        filt = self.pooling_filter(x)  # (n, H*W, 1)
        parts = x.reshape(b, len(self.freqs), -1, h * w)  # (B, n, C/n, H*W)
        with fp32_region(x):
            freq = torch.matmul(parts.to(filt.dtype), filt)  # (B, n, C/n, 1)
        return freq.reshape(b, c)

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        freq = self.spectral_pool(x).to(self.fc1.weight.dtype)  # (B, C)
        s = self.gate(self.fc2(self.act(self.fc1(freq))))  # (B, C)
        return s.view(b, c, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f'dct_size={self.dct_size}, freq_sel={self.freq_sel!r}'
