"""Compiled attention: each attention module's forward, and through
AOTAutograd its backward, as fused kernels from ``torch.compile``, behind a
flag, with the eager path as the fallback.

An attention module is a short chain of reductions and element-wise ops
over a full-size feature map. Eager PyTorch runs each op as its own pass
over memory; the hand-written passes of :mod:`mmattn.models.common` keep a
block of channels in cache between ops, but still run one kernel per op.
``torch.compile`` (Inductor: C++/OpenMP on the CPU, Triton on the GPU)
fuses the chain into a few loops and derives a backward that saves only
what it cannot cheaply recompute. While dynamo traces a module,
:func:`~mmattn.models.common.capturing_graph` is true, so the module hands
the compiler its plain ops, not its hand-written autograd Functions; the
results equal the eager module's up to floating-point reordering (the
tests hold every module to that).

Compilation happens on a module's first call (tens of seconds on the CPU),
with ``dynamic=True`` by default so that the varying image sizes of
detection training do not compile again for each new shape. A module
whose compilation fails (no C++ compiler, an op the compiler cannot
handle) warns once and runs eagerly from then on; an error of the module
itself (bad input) is raised by the eager call, as without compilation.

Use :func:`compile_attention` on any model, or
:class:`~mmattn.engine.CompileAttentionHook` (``--compile-attention`` in
``tools/train.py`` and ``tools/test.py``) from a config.
"""
import warnings
from typing import Any, Callable, List

import torch
import torch.nn as nn
from mmcv.cnn.bricks.context_block import ContextBlock

from mmattn.models.attention import AttentionModule, ResidualAttention
from mmattn.models.backbones.psa import PSAConv
from mmattn.models.backbones.sk import SKConv

#: What counts as an attention module: mmattn's, mmcv's GC block, and the
#: attention convolutions that replace a block's 3x3 conv.
ATTENTION_TYPES = (AttentionModule, ContextBlock, SKConv, PSAConv)

#: Attention modules left eager. Residual attention: Inductor's CPU code
#: for the backward of its max-pooling fails to generate under dynamic
#: shapes (torch 2.13), and that failure would surface in the backward
#: pass, past the forward's fallback.
EAGER_ONLY = (ResidualAttention, )

#: ``torch.compile`` options unless the caller gives others. Inductor's
#: layout optimisation stays off: with dynamic shapes it fixes the strides
#: of the input saved for the backward at those of the first call (channels
#: last, torch 2.13), and the backward of the next size then fails its
#: stride check.
DEFAULT_OPTIONS = dict(dynamic=True, options=dict(layout_optimization=False))


class CompiledCall:
    """A module's compiled ``__call__``, and the eager one to fall back
    to.

    Installed as the module's ``_compiled_call_impl``, the attribute through
    which ``nn.Module.compile`` routes ``__call__``; like it, it is not
    pickled or deep-copied (a copy runs eagerly).
    """

    def __init__(self, module: nn.Module, **options: Any) -> None:
        self.name = type(module).__name__
        self.options = options
        self.compiled = torch.compile(module._call_impl, **options)
        self.eager: Callable = module._call_impl
        self.failed = False

    def __call__(self, *args, **kwargs):
        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as error:  # noqa: BLE001  (decided below)
                out = self.eager(*args, **kwargs)  # the module's own error
                self.failed = True
                warnings.warn(f'torch.compile failed on {self.name}; it runs '
                              f'eagerly from now on '
                              f'({type(error).__name__}: {error})')
                return out
        return self.eager(*args, **kwargs)


def _with_defaults(options: dict) -> dict:
    """``options`` over :data:`DEFAULT_OPTIONS`, Inductor ``options``
    merged key by key; none of them beside a ``mode`` (``torch.compile``
    takes one or the other)."""
    merged = {**DEFAULT_OPTIONS, **options}
    if 'mode' not in options:
        merged['options'] = {**DEFAULT_OPTIONS['options'],
                             **(options.get('options') or {})}
    elif 'options' not in options:
        del merged['options']
    return merged


def compile_attention(model: nn.Module, **options: Any) -> List[str]:
    """Compile every attention module of ``model`` in place.

    State-dict keys, parameters and hooks stay as they are; only each
    attention module's call goes through ``torch.compile`` (see the module
    docstring). An attention module inside another one is compiled as part
    of the outer one; those of :data:`EAGER_ONLY` stay eager.

    Args:
        model (nn.Module): Any model (a backbone, a detector).
        **options: ``torch.compile`` options (``mode``, ``backend``,
            ``dynamic``, ``fullgraph``, Inductor ``options``, ...), over
            :data:`DEFAULT_OPTIONS` (whose Inductor ``options`` give way
            to a ``mode``).

    Returns:
        list[str]: Qualified names of the modules compiled.
    """
    options = _with_defaults(options)
    names: List[str] = []
    for name, module in model.named_modules():
        inside = any(outer == '' or name.startswith(f'{outer}.')
                     for outer in names)
        if isinstance(module, ATTENTION_TYPES) and not inside and \
                not isinstance(module, EAGER_ONLY):
            module._compiled_call_impl = CompiledCall(module, **options)
            names.append(name)
    return names


def is_compiled(module: nn.Module) -> bool:
    """Whether :func:`compile_attention` compiled ``module`` and its
    compilation has not fallen back to eager."""
    call = module._compiled_call_impl
    return isinstance(call, CompiledCall) and not call.failed


__all__ = ['ATTENTION_TYPES', 'EAGER_ONLY', 'CompiledCall',
           'compile_attention', 'is_compiled']
