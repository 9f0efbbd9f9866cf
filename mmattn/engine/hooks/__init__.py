"""mmengine hooks."""
from .nam_sparsity import NAMSparsityHook

__all__ = ['NAMSparsityHook']
