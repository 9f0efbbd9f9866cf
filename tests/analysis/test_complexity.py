"""``tools/analysis/get_flops.py`` and ``mmattn.analysis.complexity``:
published ResNet-50 totals, and the attention modules' own cost counted
(pooling, gates, SDPA, bmm, einsum), exactly where it can be derived by
hand."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from analysis_tools import config, load_tool
from mmengine.config import Config

from mmattn.analysis.complexity import (backbone_complexity,
                                        classifier_complexity, measure)
from mmattn.models.attention.self_attention import softmax_attention

GET_FLOPS = load_tool('get_flops')

#: ResNet-50 block outputs at 224 x 224: (channels, side, blocks).
R50_AFTER_CONV3 = ((256, 56, 3), (512, 28, 4), (1024, 14, 6), (2048, 7, 3))
AFTER_CONV3_ELEMENTS = sum(c * s * s * n for c, s, n in R50_AFTER_CONV3)


@pytest.mark.parametrize('name, gflops, mparams', [
    ('faster_rcnn_r50_fpn', 4.12, 25.56),
    ('faster_rcnn_se_r50_fpn', 4.13, 28.09),
    ('faster_rcnn_cbam_r50_fpn', 4.14, 28.09),
    ('faster_rcnn_sge_r50_fpn', 4.13, 25.56),
])
def test_resnet50_classifier_matches_published_totals(name, gflops, mparams,
                                                      capsys):
    """Published multiply-adds at 224 x 224 (PytorchInsight, mmpretrain):
    within 1%; parameters (1000-class head) within 0.05%."""
    result = GET_FLOPS.main([config(name), '--classifier'])['classifier']
    assert abs(result.flops / 1e9 - gflops) / gflops < 0.01, result.flops
    assert abs(result.params / 1e6 - mparams) / mparams < 5e-4
    assert not result.attention_uncounted
    out = capsys.readouterr().out
    assert f'{result.flops / 1e9:.3f} G' in out
    assert 'NOT counted' not in out


def test_gates_and_pooling_are_counted():
    """SE at every block output: the global mean reads every element
    once, the x * s product writes every element once, the two FCs
    (1x1 convs run as matrix products, PointwiseConv) are their MACs (with
    biases not counted)."""
    cfg = Config.fromfile(config('faster_rcnn_se_r50_fpn')).model.backbone
    ops = classifier_complexity(cfg).attention_by_operator
    assert ops['mean'] == AFTER_CONV3_ELEMENTS
    assert ops['mul'] == AFTER_CONV3_ELEMENTS
    fc_macs = sum(2 * n * c * (c // 16) for c, _, n in R50_AFTER_CONV3)
    assert ops['linear'] == fc_macs and 'conv' not in ops
    gates = sum(c * n for c, _, n in R50_AFTER_CONV3)
    assert ops['sigmoid'] == gates


def _backbone(name: str) -> dict:
    return Config.fromfile(config(name)).model.backbone


def test_non_local_attention_matmuls_are_counted():
    """One NonLocal block on c4 (C = 1024, C' = 512) of a 96 x 128 image:
    N = 6 x 8 positions; SDPA = N*N*(C' + 1 + C') (scores, softmax,
    weighted sum); the four 1x1 convs N*C*C' each."""
    result = backbone_complexity(_backbone('faster_rcnn_nl_r50_fpn'),
                                 (96, 128))
    n, c, inter = 6 * 8, 1024, 512
    ops = result.attention_by_operator
    assert ops['scaled_dot_product_attention'] == n * n * (inter + 1 + inter)
    assert ops['conv'] == 4 * n * c * inter
    assert ops['add'] == n * c  # the residual
    assert result.attention_flops == sum(ops.values())
    assert not result.attention_uncounted


def test_danet_attention_matmuls_are_counted():
    """DualAttention on c5 (C = 2048, C' = 256) of a 96 x 128 image, N = 3
    x 4. PAM: SDPA N*N*(C' + 1 + C) (its q/k zero-padded to C for the
    fused kernel do not count); CAM: two bmm C*C*N, softmax C*C."""
    result = backbone_complexity(_backbone('faster_rcnn_danet_r50_fpn'),
                                 (96, 128))
    n, c, rd = 3 * 4, 2048, 256
    ops = result.attention_by_operator
    assert ops['scaled_dot_product_attention'] == n * n * (rd + 1 + c)
    assert ops['bmm'] == 2 * c * c * n
    assert ops['softmax'] == c * c
    assert ops['conv'] == n * c * (2 * rd + c)
    assert not result.attention_uncounted


def test_ccnet_attention_einsums_are_counted():
    """CrissCrossAttention on c5 (C = 2048, C' = 256), H x W = 3 x 4,
    recurrence 2: per pass the column and row energies (C'*H*W*(H + W))
    and the weighted sums (C*H*W*(H + W)), one softmax over H + W per
    position."""
    result = backbone_complexity(_backbone('faster_rcnn_ccnet_r50_fpn'),
                                 (96, 128))
    h, w, c, rd = 3, 4, 2048, 256
    ops = result.attention_by_operator
    assert ops['einsum'] == 2 * (rd + c) * h * w * (h + w)
    assert ops['softmax'] == 2 * h * w * (h + w)
    assert ops['conv'] == 2 * h * w * c * (2 * rd + c)
    assert not result.attention_uncounted


def test_sdpa_handle_ignores_only_zero_padding():
    """mmattn's softmax_attention pads q/k to v's width; the count is
    that of the unpadded product, equal to the chunked (bmm) path's."""

    class Attend(nn.Module):

        def __init__(self, chunk_size=None):
            super().__init__()
            self.chunk_size = chunk_size

        def forward(self, q, k, v):
            return softmax_attention(q, k, v, 1.0, self.chunk_size)

    q, k, v = torch.randn(2, 10, 4), torch.randn(2, 7, 4), torch.randn(2, 7,
                                                                      9)
    fused = measure(Attend(), (q, k, v))
    assert fused.flops == 2 * 10 * 7 * (4 + 1 + 9)
    chunked = measure(Attend(chunk_size=4), (q, k, v))
    by_op = chunked.flops  # bmm q.k, bmm a.v, softmax, scale
    assert by_op == 2 * 10 * 7 * (4 + 1 + 9) + 2 * 10 * 4

    class Plain(nn.Module):

        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    assert measure(Plain(), (q, k, v)).flops == 2 * 10 * 7 * (4 + 1 + 9)


def test_get_flops_whole_detector(capsys):
    """Detector mode: whole model, its parts and the attention modules,
    all non-zero, parts adding up."""
    result = GET_FLOPS.main([config('faster_rcnn_nl_r50_fpn'), '--shape',
                             '64', '80'])['detector']
    parts = result.by_module
    assert set(parts) == {'backbone', 'neck', 'rpn_head', 'roi_head'}
    assert sum(p for p, _ in parts.values()) == result.params
    assert sum(f for _, f in parts.values()) <= result.flops
    assert parts['backbone'][1] > result.attention_flops > 0
    assert result.attention_types == {'NonLocal': 1}
    assert not result.attention_uncounted
    out = capsys.readouterr().out
    assert '64 x 80' in out and 'whole detector' in out
