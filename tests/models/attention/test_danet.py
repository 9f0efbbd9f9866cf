"""DualAttention (DANet): PAM and CAM against the paper's equations in
float64, code vs paper CAM energy, identity at init, fp32 statistics under
autocast, no (HW x HW) tensor, parameter count."""
import pytest
import torch
from helpers import assert_rel_close, randomize_
from mmdet.models import ResNet
from self_attention_checks import LargestTensor, plugin_io_in_resnet50

from mmattn.models.attention import DualAttention
from mmattn.models.attention.danet import ChannelAttention, PositionAttention


def softmax_ref(s):
    p = torch.exp(s - s.amax(dim=-1, keepdim=True))
    return p / p.sum(dim=-1, keepdim=True)


def conv1x1_ref(x, conv):
    return torch.einsum('oc,bcn->bon', conv.weight[:, :, 0, 0], x) + \
        conv.bias.view(1, -1, 1)


def pam_term_ref(pam, x):
    """Eq. 2: s_ji = softmax_i(Q_j . K_i), y_j = sum_i s_ji V_i."""
    xf = x.flatten(2)  # (B, C, N)
    q, k, v = (conv1x1_ref(xf, conv) for conv in (
        pam.query_conv, pam.key_conv, pam.value_conv))
    s = softmax_ref(torch.einsum('bcj,bci->bji', q, k))
    return torch.einsum('bji,bci->bcj', s, v).view_as(x)


def cam_term_ref(x, energy):
    """E = X X^T; code: A = softmax(rowmax(E) - E), paper eq. 3:
    A = softmax(E); y = A X."""
    xf = x.flatten(2)
    e = torch.einsum('bcn,bdn->bcd', xf, xf)
    if energy == 'code':
        e = e.amax(dim=-1, keepdim=True) - e
    return torch.einsum('bcd,bdn->bcn', softmax_ref(e), xf).view_as(x)


def danet_ref(module, x):
    out = x.clone()
    if module.pam is not None:
        out = out + module.pam.gamma * pam_term_ref(module.pam, x)
    if module.cam is not None:
        out = out + module.cam.gamma * cam_term_ref(x, module.cam.energy)
    return out


@pytest.mark.parametrize('mode', ['both', 'position', 'channel'])
@pytest.mark.parametrize('cam_energy', ['code', 'paper'])
@pytest.mark.parametrize('chunk_size', [None, 6], ids=['sdpa', 'chunk6'])
def test_matches_equations_float64(mode, cam_energy, chunk_size):
    module = DualAttention(16, mode=mode, cam_energy=cam_energy,
                           chunk_size=chunk_size)
    module = randomize_(module).double()
    # Small activations keep CAM's softmax away from one-hot.
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64) * 0.3
    with torch.no_grad():
        assert_rel_close(module(x), danet_ref(module, x))


def test_branches_are_the_official_modules_summed_once():
    module = randomize_(DualAttention(16)).double()
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64) * 0.3
    with torch.no_grad():
        # PAM(x) + CAM(x) - x: parallel branches, x counted once.
        assert_rel_close(module(x),
                         module.pam(x) + module.cam(x) - x)


def test_code_energy_is_softmax_of_negated_energy():
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64) * 0.3
    xf = x.flatten(2)
    neg = softmax_ref(-torch.einsum('bcn,bdn->bcd', xf, xf))
    expected = torch.einsum('bcd,bdn->bcn', neg, xf).view_as(x)
    assert_rel_close(ChannelAttention('code').double().attention(x),
                     expected)


def test_official_defaults_and_identity_at_init():
    module = DualAttention(64)
    assert module.mode == 'both' and module.cam.energy == 'code'
    assert module.pam.query_conv.out_channels == 8  # C / 8
    assert module.pam.value_conv.out_channels == 64
    assert module.pam.gamma.item() == 0 and module.cam.gamma.item() == 0
    assert isinstance(module.pam, PositionAttention)
    x = torch.randn(2, 64, 7, 9)
    assert torch.equal(module(x), x)


def test_identity_in_resnet50_after_init_weights():
    io = plugin_io_in_resnet50(dict(type='DualAttention'),
                               stages=(True, True, False, False))
    assert len(io) == 3 + 4
    assert all(torch.equal(inp, out) for inp, out in io)


def test_no_hw_squared_tensor():
    module = randomize_(DualAttention(16))
    x = torch.randn(1, 16, 24, 24, requires_grad=True)
    with LargestTensor() as rec:
        module(x).sum().backward()
    hw = 24 * 24
    # at most the fused projections (B, C + 2C', HW), C' = C/8
    assert rec.numel <= (16 + 2 * 2) * hw < hw * hw // 8


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('mode', ['channel', 'position'])
def test_autocast_statistics_in_fp32(dtype, mode):
    torch.manual_seed(0)
    module = randomize_(DualAttention(16, mode=mode))
    # CAM energies ~ 300^2 * HW and PAM scores ~ 1e5 overflow fp16.
    x = torch.randn(2, 16, 12, 10) * 300
    with torch.autocast('cpu', dtype=dtype):
        out = module(x)
    assert out.dtype == x.dtype and torch.isfinite(out).all()
    x = torch.randn(2, 16, 12, 10) * 0.3
    ref = module(x)
    with torch.autocast('cpu', dtype=dtype):
        out = module(x)
    rel = (out.float() - ref).abs().mean() / ref.abs().mean()
    assert rel < 0.02


def test_parameter_count_in_resnet50():
    plain = sum(p.numel() for p in ResNet(depth=50).parameters())
    with_da = sum(p.numel() for p in ResNet(depth=50, plugins=[
        dict(cfg=dict(type='DualAttention'),
             position='after_conv3')]).parameters())
    # PAM 2 (C C/8 + C/8) + C^2 + C + gamma, CAM gamma, per bottleneck.
    expected = sum(n * (2 * (c * (c // 8) + c // 8) + c * c + c + 2)
                   for n, c in [(3, 256), (4, 512), (6, 1024), (3, 2048)])
    assert with_da - plain == expected == 25_168_352
    assert sum(p.numel() for p in DualAttention(64, 'channel').parameters()) \
        == 1


def test_invalid_arguments():
    with pytest.raises(ValueError, match='mode'):
        DualAttention(16, mode='spatial')
    with pytest.raises(ValueError, match='cam_energy'):
        DualAttention(16, cam_energy='dot')
    with pytest.raises(ValueError, match='rd_ratio'):
        DualAttention(4, rd_ratio=1 / 8)
    with pytest.raises(ValueError, match='rd_channels'):
        DualAttention(16, rd_channels=0)
    with pytest.raises(ValueError, match='chunk_size'):
        DualAttention(16, chunk_size=0)
