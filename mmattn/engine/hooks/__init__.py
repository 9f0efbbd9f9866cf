"""mmengine hooks."""
from .compile_attention import CompileAttentionHook, add_compile_attention_hook
from .nam_sparsity import NAMSparsityHook
from .random_state import RandomStateHook, add_random_state_hook

__all__ = ['CompileAttentionHook', 'NAMSparsityHook', 'RandomStateHook',
           'add_compile_attention_hook', 'add_random_state_hook']
