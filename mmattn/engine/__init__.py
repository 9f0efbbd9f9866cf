"""Training-loop pieces (mmengine hooks), registered in mmengine's root
``HOOKS`` registry so any scope's config finds them."""
from .hooks import CompileAttentionHook, NAMSparsityHook, RandomStateHook

__all__ = ['CompileAttentionHook', 'NAMSparsityHook', 'RandomStateHook']
