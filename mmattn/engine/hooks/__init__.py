"""mmengine hooks."""
from .nam_sparsity import NAMSparsityHook
from .random_state import RandomStateHook, add_random_state_hook

__all__ = ['NAMSparsityHook', 'RandomStateHook', 'add_random_state_hook']
