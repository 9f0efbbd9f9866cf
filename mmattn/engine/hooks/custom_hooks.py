"""Adding mmattn's hooks to a config."""
from mmengine.config import Config


def add_custom_hook(cfg: Config, hook: type) -> None:
    """Append ``dict(type=<hook's name>)`` to ``cfg.custom_hooks`` unless
    the config already has a hook of that type (by name or class)."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') in (hook.__name__, hook) for h in hooks):
        hooks.append(dict(type=hook.__name__))
    cfg.custom_hooks = hooks


__all__ = ['add_custom_hook']
