"""Deployment (issue 8, acceptance 4): every attention module and an
attention ResNet-50 export to ONNX (opset 17) in eval mode, and ONNX
Runtime reproduces the PyTorch output (max abs difference < 1e-4).

Exporter: torch's TorchScript-based exporter (``dynamo=False``), which
needs only ``onnx`` (the dynamo exporter of torch 2.13 also needs
``onnxscript``). Weights are random (zero-initialised gates and gammas
made non-zero, so that every branch is in the graph) at the scale of
trained weights, so that outputs are O(1) and the tolerance is
meaningful."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from mmcv.cnn import build_conv_layer, build_plugin_layer
from mmdet.registry import MODELS as MMDET_MODELS

from mmattn.models import common
from reliability_toy import contract_module

TYPE_NAMES = contract_module().TYPE_NAMES
plugin_cfg = contract_module().plugin_cfg

OPSET = 17
TOL = 1e-4


@pytest.fixture(autouse=True, scope='module')
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomize(module: torch.nn.Module, std: float = 0.1, seed: int = 0):
    """Random parameters N(0, std^2) and BN statistics, in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
        for name, b in module.named_buffers():
            if name.endswith('running_var'):
                b.copy_(torch.rand(b.shape, generator=gen) + .5)
            elif name.endswith('running_mean'):
                b.copy_(torch.randn(b.shape, generator=gen) * std)
    return module


def onnx_outputs(module, x, path):
    torch.onnx.export(module, (x, ), str(path), opset_version=OPSET,
                      dynamo=False, input_names=['x'])
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == OPSET
    session = ort.InferenceSession(str(path),
                                   providers=['CPUExecutionProvider'])
    return session.run(None, {'x': x.numpy()})


def assert_parity(module, x, path):
    module.eval()
    with torch.no_grad():
        expected = module(x)
    expected = expected if isinstance(expected, tuple) else (expected, )
    outputs = onnx_outputs(module, x, path)
    assert len(outputs) == len(expected)
    for out, ref in zip(outputs, expected):
        assert out.shape == tuple(ref.shape)
        assert np.isfinite(out).all()
        diff = np.abs(out - ref.numpy()).max()
        assert diff < TOL, f'max abs diff {diff:.2e} (output scale ' \
            f'{ref.abs().max():.2e})'


@pytest.mark.parametrize('name', TYPE_NAMES)
def test_attention_module_onnx_parity(name, tmp_path):
    _, module = build_plugin_layer(plugin_cfg(name), in_channels=64)
    x = torch.randn(2, 64, 13, 21, generator=torch.Generator().manual_seed(1))
    assert_parity(randomize(module), x, tmp_path / f'{name}.onnx')


@pytest.mark.parametrize('conv', ['SKConv', 'PSAConv'])
def test_attention_conv_onnx_parity(conv, tmp_path):
    module = build_conv_layer(dict(type=conv), 64, 64, kernel_size=3,
                              stride=2, padding=1, bias=False)
    x = torch.randn(2, 64, 13, 21, generator=torch.Generator().manual_seed(1))
    assert_parity(randomize(module), x, tmp_path / f'{conv}.onnx')


@pytest.mark.slow
def test_attention_resnet50_onnx_parity(tmp_path):
    """ResNet-50 with attention in every placement: ECA in each block
    (per-stage kernels of the released model), a Non-local block after
    blocks of c4, BAM between stages."""
    backbone = MMDET_MODELS.build(dict(
        type='ECAResNet', depth=50, plugins=[
            dict(cfg=dict(type='NonLocal'), position='after_block',
                 stages=(False, False, True, False), block_indices=(-2, )),
            dict(cfg=dict(type='BAM'), position='after_stage',
                 stages=(True, True, True, False))]))
    backbone.init_weights()
    x = torch.randn(1, 3, 96, 64, generator=torch.Generator().manual_seed(1))
    assert_parity(randomize(backbone, std=0.05), x, tmp_path / 'r50.onnx')


@pytest.mark.parametrize('in_size,out_size', [
    ((13, 21), (56, 56)), ((21, 13), (7, 7)), ((7, 7), (7, 7)),
    ((1, 1), (7, 7)), ((30, 29), (7, 14))])
def test_exportable_adaptive_pool_matches_torch(in_size, out_size,
                                                monkeypatch):
    """The pooling-matrix form used while exporting (FcaNet) equals
    ``F.adaptive_avg_pool2d`` for divisible and non-divisible sizes."""
    x = torch.randn(2, 3, *in_size, dtype=torch.float64)
    expected = torch.nn.functional.adaptive_avg_pool2d(x, out_size)
    monkeypatch.setattr(torch.onnx, 'is_in_onnx_export', lambda: True)
    out = common.adaptive_avg_pool2d(x, out_size)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
