"""Compile the attention modules of the runner's model
(:func:`~mmattn.models.compiled.compile_attention`) from a config."""
from typing import Any

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from mmattn.models.compiled import compile_attention
from .custom_hooks import add_custom_hook


@HOOKS.register_module()
class CompileAttentionHook(Hook):
    """Run every attention module of the model through ``torch.compile``
    (the rest of the model stays eager), for training, validation and
    testing alike.

    Unlike mmengine's ``compile=True``, which compiles the whole
    ``train_step``, only the attention modules are compiled: their chains
    of reductions and element-wise ops are what fuses well, and the
    detector's data-dependent heads stay out of the compiler. See
    :mod:`mmattn.models.compiled` for what it computes and how it falls
    back. ``tools/train.py --compile-attention`` (and ``tools/test.py``)
    add it.

    Args:
        **options: ``torch.compile`` options. Default: ``dynamic=True``.
    """

    priority = 'VERY_HIGH'

    def __init__(self, **options: Any) -> None:
        self.options = options

    def before_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        names = compile_attention(model, **self.options)
        runner.logger.info(f'CompileAttentionHook: compiling {len(names)} '
                           f'attention modules on their first call')


def add_compile_attention_hook(cfg: Config) -> None:
    """Append :class:`CompileAttentionHook` to ``cfg.custom_hooks`` unless
    the config already has one."""
    add_custom_hook(cfg, CompileAttentionHook)


__all__ = ['CompileAttentionHook', 'add_compile_attention_hook']
