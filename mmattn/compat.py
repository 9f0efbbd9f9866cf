"""Fixes for what the pinned stack (mmengine 0.10.7, mmcv 2.1.0, mmdet 3.3.0)
gets wrong on current torch and numpy. Imported by ``import mmattn``.

Safe checkpoint loading
-----------------------
torch >= 2.6 unpickles with ``weights_only=True``: only tensors, containers
and allow-listed types may be created, so a checkpoint cannot run code. An
mmengine 0.10.7 checkpoint also carries the message hub's ``HistoryBuffer``
and numpy arrays and scalars, so ``resume`` and ``load_from`` fail. The fix
keeps ``weights_only=True`` and allow-lists exactly the types mmengine
writes (:data:`MMENGINE_CHECKPOINT_GLOBALS`), for mmengine's loads only
(mmengine's local-file loader is replaced). Anything else in a checkpoint is
refused with :class:`UnsafeCheckpointError` before it is created.
"""
from __future__ import annotations

import os.path as osp
import pickle

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a pickled object outside the allow-list."""


def _numpy_globals() -> list:
    """The numpy callables and classes an ndarray or a scalar pickles
    with: the reconstructors, and the dtype classes their state is built
    into (numpy 2 moved them from ``numpy.core`` to ``numpy._core``)."""
    multiarray = np._core.multiarray if hasattr(np, '_core') \
        else np.core.multiarray
    numeric = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
               np.uint16, np.uint32, np.uint64, np.float16, np.float32,
               np.float64)
    dtype_classes = [type(np.dtype(t)) for t in numeric]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype,
            *dtype_classes]


def _history_buffer_statistics() -> set:
    """Names of HistoryBuffer's statistics methods: the built-in ones (the
    registry fills only when a first buffer is created) and any registered
    with ``HistoryBuffer.statistics_register``."""
    return {'min', 'max', 'current', 'mean',
            *HistoryBuffer._statistics_methods}


def _history_buffer_statistic(owner, name: str):
    """Stands in for ``builtins.getattr`` while unpickling.

    A pickled ``HistoryBuffer`` refers to its statistics methods as
    ``getattr(HistoryBuffer, 'mean')`` etc. A general ``getattr`` would let
    a crafted file reach any attribute of any allow-listed object (module
    globals among them), so only those look-ups are honoured.
    """
    if owner is HistoryBuffer and name in _history_buffer_statistics():
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'getattr({owner!r}, {name!r}) is not allowed in a checkpoint')


#: What mmengine 0.10.7's ``Runner.save_checkpoint`` writes besides tensors
#: and builtin containers: the message hub's ``HistoryBuffer`` (with
#: references to its statistics methods) and the numpy arrays and scalars
#: inside it and in ``meta``. Found with
#: ``torch.serialization.get_unsafe_globals_in_checkpoint`` on a real
#: checkpoint; nothing else is allowed.
MMENGINE_CHECKPOINT_GLOBALS = [
    HistoryBuffer, *_numpy_globals(),
    (_history_buffer_statistic, 'builtins.getattr'),
]


def safe_load_checkpoint(filename, map_location=None):
    """``torch.load`` with ``weights_only=True`` and mmengine's types
    allow-listed; raises :class:`UnsafeCheckpointError` for anything else."""
    try:
        with torch.serialization.safe_globals(MMENGINE_CHECKPOINT_GLOBALS):
            return torch.load(filename, map_location=map_location,
                              weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f'Refused to load checkpoint {filename!r}: it contains a pickled '
            f'object that is not a tensor, a builtin container or one of the '
            f'types mmengine writes, so unpickling it could run code. Nothing '
            f'was executed. Only load such a file if you trust its source, '
            f'e.g. convert it in a separate process with '
            f'torch.load(..., weights_only=False). Details: {err}') from None


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_from_local(filename, map_location=None):
    """mmengine's loader for local paths, with :func:`safe_load_checkpoint`.

    Used by ``Runner.resume``, ``load_from`` and ``init_cfg=dict(type=
    'Pretrained')`` alike.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_load_checkpoint(filename, map_location)
