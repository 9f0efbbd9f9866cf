"""mmattn: visual attention plug-ins for MMDetection 3.x.

Importing the package applies the compatibility fixes for the pinned stack
(:mod:`mmattn.compat`: weights-only local loads; :mod:`.compat_checkpoint`:
crash-safe saves, weights-only remote loads; :mod:`.compat_amp`: ``--amp``
on CPU; :mod:`.compat_guards`: clear errors for bad plugin lists and
images) and registers every mmattn module in mmengine's root
``MODELS`` registry (:mod:`mmattn.registry`), and its training hooks in
the root ``HOOKS`` registry.
"""
from . import compat  # noqa: F401  (must run before any checkpoint load)
from . import compat_checkpoint  # noqa: F401  (crash-safe saves, remote loads)
from . import compat_amp  # noqa: F401  (--amp on CPU)
from . import compat_guards  # noqa: F401  (clear errors for bad input)
from . import engine, models  # noqa: F401  (registration side effects)

__version__ = '0.1.0'
