"""Small helpers shared by the tests (importable as ``helpers``)."""
import importlib.util
import os.path as osp
from types import ModuleType

import torch

from conftest import REPO


def load_tool(path: str) -> ModuleType:
    """A command-line tool of the repository, e.g. ``tools/train.py``, as a
    module (``tools/`` is not a package; its ``main`` takes ``argv``)."""
    name = 'tool_' + osp.splitext(path)[0].replace('/', '_')
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def max_rel_error(actual: torch.Tensor, expected: torch.Tensor,
                  floor: float = 1e-300) -> float:
    """max |actual - expected| / max(max |expected|, ``floor``) (0/0
    counts as 0)."""
    actual, expected = actual.double(), expected.double()
    scale = expected.abs().max().clamp_min(floor)
    return float((actual - expected).abs().max() / scale)


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor,
                     tol: float = 1e-6, floor: float = 1e-300) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = max_rel_error(actual, expected, floor)
    assert err < tol, f'relative error {err:.3e} >= {tol:.0e}'


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and BN buffer of ``module`` random non-trivial
    values (so zero-initialised gates are exercised), in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
        for name, b in module.named_buffers():
            if name.endswith('running_var'):
                b.copy_(torch.rand(b.shape, generator=gen, dtype=b.dtype) + .5)
            elif name.endswith('running_mean'):
                b.copy_(torch.randn(b.shape, generator=gen, dtype=b.dtype))
    return module


def assert_training_pass_matches(module: torch.nn.Module, reference,
                                 x: torch.Tensor, tol: float = 1e-10) -> None:
    """``module(x, residual=r)`` in train mode against autograd through
    ``reference(module, x) + r``: the output and the gradients of x, r and
    every parameter, for a random upstream gradient (fp64 inputs expected:
    the hand-written backward passes are checked to rounding). Errors are
    relative to max(|expected|, 1): a gradient that vanishes exactly (a
    bias before a train-mode BN) compares as rounding noise."""
    module.train()
    gen = torch.Generator().manual_seed(1)
    residual = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    upstream = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    results = []
    for run in (lambda t, r: module(t, residual=r),
                lambda t, r: reference(module, t) + r):
        module.zero_grad()
        inputs = [x.detach().clone().requires_grad_(),
                  residual.clone().requires_grad_()]
        out = run(*inputs)
        out.backward(upstream)
        results.append([out.detach(), *(t.grad for t in inputs),
                        *(p.grad.clone() for p in module.parameters())])
    for actual, expected in zip(*results):
        assert_rel_close(actual, expected, tol, floor=1.0)
