"""``mmattn.models.compiled``: every attention module compiled computes
what it computes eagerly (outputs, input and parameter gradients, BN
running statistics), compilation keeps the model as it is (keys, hooks,
copies), and a module whose compilation fails runs eagerly with a warning.

Compiling takes seconds per module on the CPU: the maps are tiny."""
import copy
import warnings

import pytest
import torch
import torch.nn as nn
from helpers import assert_rel_close, randomize_
from mmdet.models import ResNet

from mmattn.models.backbones import PSAConv, SKConv
from mmattn.models.compiled import (CompiledCall, compile_attention,
                                    is_compiled)
from models.attention.test_contract import TYPE_NAMES, build

pytestmark = pytest.mark.slow

#: fp32 sums in another order
TOL = 1e-4
#: SGE at 64 channels normalises groups of one channel (G = 64): the
#: division by each group's std amplifies the reordering to ~2e-4
TOLS = {'SGE': 1e-3}


def _builders():
    for name in TYPE_NAMES:
        if name != 'ResidualAttention':  # EAGER_ONLY
            yield name, lambda name=name: build(name, channels=64)
    yield 'SKConv', lambda: SKConv(64, 64)
    yield 'PSAConv', lambda: PSAConv(64, 64)


BUILDERS = dict(_builders())


def _run(module, x):
    x = x.clone().requires_grad_(True)
    out = module(x)
    out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
    return out.detach(), x.grad


@pytest.mark.parametrize('name', list(BUILDERS))
def test_compiled_module_computes_what_eager_computes(name):
    eager = randomize_(BUILDERS[name]()).train()
    compiled = copy.deepcopy(eager)
    assert compile_attention(compiled) == ['']
    # a fixed input: with a random one, a ReLU input or a 3-sample batch
    # norm near its kink now and then turns fp32 reordering into 1e-2
    x = torch.randn(3, 64, 12, 10, generator=torch.Generator().manual_seed(0))
    tol = TOLS.get(name, TOL)
    for shape in (x, x[:, :, :9, :7]):  # a second size: dynamic shapes
        out, grad_x = _run(eager, shape)
        out_c, grad_x_c = _run(compiled, shape)
        assert_rel_close(out_c, out, tol)
        assert_rel_close(grad_x_c, grad_x, tol)
    assert is_compiled(compiled), 'fell back to eager'
    # a bias before a norm or a softmax has a gradient of rounding noise:
    # errors are measured against the largest parameter gradient
    grads = [p.grad for p in eager.parameters()]
    scale = max((g.abs().max() for g in grads), default=0)
    for grad, p_c in zip(grads, compiled.parameters()):
        torch.testing.assert_close(p_c.grad, grad, rtol=tol,
                                   atol=tol * scale)
    for (key, b), b_c in zip(eager.named_buffers(), compiled.buffers()):
        if b.is_floating_point():
            assert_rel_close(b_c, b, tol)
        else:  # num_batches_tracked
            assert torch.equal(b_c, b), key


def test_compile_attention_finds_plugins_and_keeps_the_model():
    model = ResNet(depth=50, plugins=[
        dict(cfg=dict(type='SE'), position='after_conv3')])
    keys = list(model.state_dict())
    names = compile_attention(model)
    assert names == [f'layer{i}.{j}.se' for i, blocks in
                     enumerate((3, 4, 6, 3), 1) for j in range(blocks)]
    assert list(model.state_dict()) == keys
    assert all(is_compiled(model.get_submodule(n)) for n in names)
    # a copy (EMA, checkpoint) runs eagerly, the original stays compiled
    clone = copy.deepcopy(model)
    assert not any(is_compiled(m) for m in clone.modules())
    assert is_compiled(model.layer1[0].se)


def test_residual_attention_stays_eager():
    assert compile_attention(build('ResidualAttention', channels=64)) == []


def test_an_attention_module_inside_another_compiles_with_it():
    outer = nn.Sequential()
    outer.add_module('bam', build('BAM', channels=32))
    outer.bam.add_module('inner', build('SE', channels=32))
    assert compile_attention(outer) == ['bam']
    assert compile_attention(outer.bam) == ['']
    assert not is_compiled(outer.bam.inner)


def test_options_over_the_defaults():
    module = build('SE', channels=64)
    compile_attention(module, mode='max-autotune-no-cudagraphs')
    assert 'options' not in module._compiled_call_impl.options
    compile_attention(module, dynamic=False, options=dict(debug=False))
    assert module._compiled_call_impl.options == dict(
        dynamic=False, options=dict(layout_optimization=False, debug=False))


def _failing_backend(graph, example_inputs):
    raise RuntimeError('no compiler here')


def test_failed_compilation_falls_back_to_eager_with_a_warning():
    module = randomize_(build('SimAM', channels=8))
    compile_attention(module, backend=_failing_backend)
    x = torch.randn(2, 8, 5, 5)
    with pytest.warns(UserWarning, match='torch.compile failed on SimAM'):
        out = module(x)
    assert torch.equal(out, module.__class__.forward(module, x))
    assert not is_compiled(module)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # warned once, not at every call
        module(x)


def test_the_module_s_own_error_is_raised_and_compilation_kept():
    module = build('BAM', channels=32).train()
    compile_attention(module)
    with pytest.raises(ValueError, match='batch of 1'):
        module(torch.randn(1, 32, 6, 6))
    assert isinstance(module._compiled_call_impl, CompiledCall)
    assert not module._compiled_call_impl.failed
