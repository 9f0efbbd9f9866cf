"""Pieces shared by the self-attention modules (Non-local, DANet, CCNet).

* :func:`softmax_attention`: ``softmax(s * Q K^T) V`` without materialising
  the (L x L) attention matrix, through
  :func:`torch.nn.functional.scaled_dot_product_attention` (SDPA) or, with
  ``chunk_size``, blocks of queries whose scores and softmax are computed in
  fp32;
* :class:`GatedResidual`: the zero-initialised residual scale
  :math:`\\gamma` of DANet's two branches and CCNet;
* :class:`QKVSelfAttention`: the SAGAN-style query / key / value 1x1 convs
  shared by DANet's position attention and CCNet's criss-cross attention.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mmattn.models.common import (accumulate_dtype, check_positive_int,
                                  fp32_region, reduced_channels)
from mmattn.models.convs import pointwise_convs


def check_chunk_size(chunk_size: Optional[int]) -> Optional[int]:
    """``None`` (use SDPA) or a positive int, else ``ValueError`` naming
    ``chunk_size``."""
    if chunk_size is not None:
        check_positive_int(chunk_size, 'chunk_size')
    return chunk_size


def _pad_last(t: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad the last dim of ``t`` to ``size``."""
    return F.pad(t, (0, size - t.shape[-1])) if t.shape[-1] < size else t


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
          scale: float) -> torch.Tensor:
    """SDPA on (B, L, E) tensors, shaped for the fused kernels.

    PyTorch's CPU flash kernel needs 4-D inputs whose q, k and v share the
    last dimension and have unit stride along it; otherwise SDPA falls back
    to its math kernel, which builds the (Lq x Lk) matrix. So the narrower
    side is zero-padded: zero channels appended to q and k leave every q.k
    unchanged, and zero channels appended to v only add output channels
    that are cut off again. (Splitting v into heads of q's width instead
    computes the softmax once per head, which is slower on CPU.)
    """
    e, ev = q.shape[-1], v.shape[-1]
    width = max(e, ev)
    q, k, v = (_pad_last(t, width).contiguous().unsqueeze(1)
               for t in (q, k, v))  # (B, 1, L, width)
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return out.squeeze(1)[..., :ev]  # (B, Lq, Ev)


def _attend_chunk(q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor,
                  scale: float) -> torch.Tensor:
    """``softmax(scale * q k^T) v`` for one block of queries; inputs are
    already in the accumulation dtype and autocast is off."""
    return torch.bmm(torch.bmm(q * scale, k_t).softmax(dim=-1), v)


def softmax_attention(q: torch.Tensor,
                      k: torch.Tensor,
                      v: torch.Tensor,
                      scale: float,
                      chunk_size: Optional[int] = None) -> torch.Tensor:
    """``softmax(scale * Q K^T, dim=-1) V`` without an (Lq x Lk) tensor.

    Args:
        q (Tensor): Queries, (B, Lq, E).
        k (Tensor): Keys, (B, Lk, E).
        v (Tensor): Values, (B, Lk, Ev); Ev may differ from E.
        scale (float): Multiplies the scores before the softmax (1.0 for
            DANet and the Gaussian Non-local, ``E ** -0.5`` for the scaled
            embedded Gaussian).
        chunk_size (int, optional): None (default) calls PyTorch's SDPA,
            whose fused kernels (flash on CPU for fp32/fp64/bf16/fp16, flash
            or memory-efficient on CUDA) never materialise the attention
            matrix and accumulate scores and softmax in fp32. An int
            processes that many queries at a time with an explicit fp32
            softmax: memory O(chunk_size x Lk), for devices or dtypes where
            SDPA would fall back to its math kernel. In training each block
            is recomputed in the backward pass (activation checkpointing),
            so the blocks' attention maps are never all held at once.

    Returns:
        Tensor: (B, Lq, Ev), in ``v``'s dtype (autocast's under autocast).
    """
    if chunk_size is None:
        return _sdpa(q, k, v, scale)
    out_dtype = v.dtype
    with fp32_region(q):
        acc = accumulate_dtype(q)
        k_t = k.to(acc).transpose(1, 2)  # (B, E, Lk)
        v = v.to(acc)  # (B, Lk, Ev)
        grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in (q, k_t, v))
        outs = []
        for q_blk in q.to(acc).split(chunk_size, dim=1):  # (B, n, E)
            if grad:
                outs.append(checkpoint(_attend_chunk, q_blk, k_t, v, scale,
                                       use_reentrant=False))
            else:
                outs.append(_attend_chunk(q_blk, k_t, v, scale))
        return torch.cat(outs, dim=1).to(out_dtype)  # (B, Lq, Ev)


class GatedResidual(nn.Module):
    """A scalar residual scale :math:`\\gamma`, initialised to 0: the
    block returns :math:`x + \\gamma\\, y` and starts as the identity
    (DANet's ``PAM_Module`` / ``CAM_Module``, CCNet's
    ``CrissCrossAttention``). ``gamma`` has the official shape (1,)."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def init_weights(self) -> None:
        """:math:`\\gamma = 0`."""
        nn.init.zeros_(self.gamma)

    def gated(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """:math:`\\gamma\\, y` in ``dtype`` (the residual branch)."""
        return (self.gamma * y).to(dtype)


class QKVSelfAttention(GatedResidual):
    """Query, key and value projections with a zero-initialised gate.

    The SAGAN-style self-attention layout used by DANet's position
    attention (junfu1115/DANet ``PAM_Module``) and CCNet's criss-cross
    attention (speedinghzl/CCNet ``CrissCrossAttention``): Q and K are 1x1
    convs C -> C' (C' = C/8 in both papers), V is a 1x1 conv C -> C, all
    with bias, and the block returns :math:`x + \\gamma\\, y`
    (:class:`GatedResidual`). Attribute names (``query_conv``,
    ``key_conv``, ``value_conv``, ``gamma``) are the official ones, so
    official weights load by name.

    Args:
        in_channels (int): Channels C of the input.
        rd_ratio (float): C'/C of the query/key projections. Default: 1/8.
        rd_channels (int, optional): Explicit C'; overrides ``rd_ratio``.
        rd_divisor (int): Round C' to a multiple of this. Default: 1.
    """

    def __init__(self,
                 in_channels: int,
                 rd_ratio: float = 1 / 8,
                 rd_channels: Optional[int] = None,
                 rd_divisor: int = 1) -> None:
        super().__init__()
        check_positive_int(in_channels, 'in_channels')
        self.rd_channels = reduced_channels(in_channels, rd_ratio,
                                            rd_channels, rd_divisor)
        self.query_conv = nn.Conv2d(in_channels, self.rd_channels, 1)
        self.key_conv = nn.Conv2d(in_channels, self.rd_channels, 1)
        self.value_conv = nn.Conv2d(in_channels, in_channels, 1)

    def init_weights(self) -> None:
        """Official init: PyTorch's default for the three convs (neither
        paper's code re-initialises them) and :math:`\\gamma = 0`.
        Resetting the convs here also undoes a parent backbone's generic
        Kaiming init."""
        for conv in (self.query_conv, self.key_conv, self.value_conv):
            conv.reset_parameters()
        super().init_weights()

    def project(self, x: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, C, H, W) -> q, k: (B, C', H, W), v: (B, C, H, W)``: the
        three convs as one 1x1 conv C -> 2C' + C
        (:func:`~mmattn.models.convs.pointwise_convs`: x read once, its
        gradient written once)."""
        convs = (self.query_conv, self.key_conv, self.value_conv)
        qkv = pointwise_convs(x, convs)  # (B, 2C' + C, H, W)
        return qkv.split([c.out_channels for c in convs], dim=1)
