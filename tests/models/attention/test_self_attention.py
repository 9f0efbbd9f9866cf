"""softmax_attention: SDPA and chunked paths against explicit softmax maths,
without an (Lq x Lk) tensor, finite in half precision."""
import pytest
import torch
from helpers import assert_rel_close
from self_attention_checks import LargestTensor

from mmattn.models.attention.self_attention import (check_chunk_size,
                                                    softmax_attention)


def attention_ref(q, k, v, scale):
    """out_i = sum_j exp(s q_i.k_j) v_j / sum_j exp(s q_i.k_j)."""
    s = torch.einsum('bie,bje->bij', q, k) * scale
    p = torch.exp(s - s.amax(dim=-1, keepdim=True))
    p = p / p.sum(dim=-1, keepdim=True)
    return torch.einsum('bij,bjd->bid', p, v)


def qkv(lq=37, lk=29, e=8, ev=8, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(2, lq, e, generator=gen, dtype=dtype),
            torch.randn(2, lk, e, generator=gen, dtype=dtype),
            torch.randn(2, lk, ev, generator=gen, dtype=dtype))


@pytest.mark.parametrize('dims', [(8, 8), (4, 24), (24, 5)],
                         ids=['same', 'wider_v', 'wider_qk'])
@pytest.mark.parametrize('chunk_size', [None, 7], ids=['sdpa', 'chunk7'])
def test_matches_explicit_softmax_float64(dims, chunk_size):
    q, k, v = qkv(e=dims[0], ev=dims[1])
    out = softmax_attention(q, k, v, scale=0.3, chunk_size=chunk_size)
    assert out.dtype == torch.float64
    assert_rel_close(out, attention_ref(q, k, v, 0.3))


@pytest.mark.parametrize('chunk_size', [None, 5], ids=['sdpa', 'chunk5'])
def test_strided_inputs(chunk_size):
    # (B, C, L) conv outputs seen as (B, L, C): unit stride along L, not C.
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2)
               for t in qkv(e=6, ev=12))
    assert not q.is_contiguous()
    out = softmax_attention(q, k, v, scale=1.0, chunk_size=chunk_size)
    assert_rel_close(out, attention_ref(q, k, v, 1.0))


@pytest.mark.parametrize('chunk_size', [None, 3], ids=['sdpa', 'chunk3'])
def test_gradients(chunk_size):
    q, k, v = (t[:1, :5].clone().requires_grad_() for t in qkv(e=3, ev=4))
    assert torch.autograd.gradcheck(
        lambda a, b, c: softmax_attention(a, b, c, 0.5, chunk_size),
        (q, k, v))


@pytest.mark.parametrize('chunk_size', [None, 16], ids=['sdpa', 'chunk16'])
def test_never_builds_the_attention_matrix(chunk_size):
    length = 256
    q, k, v = (t.float().requires_grad_()
               for t in qkv(lq=length, lk=length, e=8, ev=32))
    with LargestTensor() as rec:
        softmax_attention(q, k, v, 1.0, chunk_size).sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    # (B, L, Ev) tensors are 2 * 256 * 32 = L^2 / 4; the matrix is 2 L^2.
    assert rec.numel <= length * length // 4


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('chunk_size', [None, 8], ids=['sdpa', 'chunk8'])
def test_half_precision_scores_do_not_overflow(dtype, chunk_size):
    # Scores ~ 300^2 * 16 are far beyond fp16's 65504.
    q, k, v = (t.float() * 300 for t in qkv(e=16, ev=16))
    with torch.autocast('cpu', dtype=dtype):
        out = softmax_attention(q.to(dtype), k.to(dtype), v.to(dtype), 1.0,
                                chunk_size)
    assert out.dtype == dtype and torch.isfinite(out).all()
    # Moderate scores: half precision stays close to fp32.
    q, k, v = (t.float() * 0.5 for t in qkv(e=16, ev=16))
    ref = softmax_attention(q, k, v, 1.0, chunk_size)
    with torch.autocast('cpu', dtype=dtype):
        out = softmax_attention(q.to(dtype), k.to(dtype), v.to(dtype), 1.0,
                                chunk_size)
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_chunk_size_is_checked():
    assert check_chunk_size(None) is None and check_chunk_size(4) == 4
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match='chunk_size'):
            check_chunk_size(bad)
