"""Training-loop pieces (mmengine hooks), registered in mmengine's root
``HOOKS`` registry so any scope's config finds them."""
from .hooks import NAMSparsityHook, RandomStateHook

__all__ = ['NAMSparsityHook', 'RandomStateHook']
