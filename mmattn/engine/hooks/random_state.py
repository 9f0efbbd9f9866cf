"""Random-number state in checkpoints, so that a resumed run draws the
random numbers the uninterrupted run draws."""
from __future__ import annotations

import random
from typing import Any, Dict, Optional

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .custom_hooks import add_custom_hook

#: Key of the state in a checkpoint dict.
CHECKPOINT_KEY = 'random_state'


def get_random_state() -> Dict[str, Any]:
    """The states of Python's, numpy's and torch's global generators (and
    CUDA's, when initialised), in types that load with
    ``weights_only=True`` (tensors, ints, tuples)."""
    key, pos, has_gauss, gauss = np.random.get_state()[1:]
    state = dict(
        python=random.getstate(),
        numpy=(torch.from_numpy(key.astype(np.int64)), int(pos),
               int(has_gauss), float(gauss)),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`get_random_state` returned (its tensors may
    have been mapped to a GPU by the checkpoint loader)."""
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))
    key, pos, has_gauss, gauss = state['numpy']
    np.random.set_state(('MT19937', key.cpu().numpy().astype(np.uint32),
                         pos, has_gauss, gauss))
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])


class _RestoringIterator:
    """Wraps a train loop's ``dataloader_iterator``; restores a random state
    right before batch number ``at`` (0-based count of batches fetched) is
    fetched."""

    def __init__(self, iterator) -> None:
        self.iterator = iterator
        self.fetched = 0
        self.pending: Optional[tuple] = None  # (at, state)

    def restore_before(self, at: int, state: Dict[str, Any]) -> None:
        self.pending = (at, state)

    def __iter__(self):
        return self

    def __next__(self):
        if self.pending is not None and self.pending[0] == self.fetched:
            set_random_state(self.pending[1])
            self.pending = None
        batch = next(self.iterator)
        self.fetched += 1
        return batch

    def __getattr__(self, name: str):
        return getattr(self.iterator, name)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save the random-number generators' states with each checkpoint and
    continue from them, in the uninterrupted run and in a resumed one.

    mmengine's resume restores weights, optimizer, schedulers and the data
    position (an ``IterBasedTrainLoop`` re-fetches the batches already
    trained), but the generators restart from the seed, so data
    augmentation and the detectors' proposal samplers draw different
    numbers than the uninterrupted run from then on. This hook stores
    Python's, numpy's and torch's (and CUDA's) generator states in the
    checkpoint (``checkpoint['random_state']``) and sets them back **right
    before the first batch after the checkpoint is fetched**:

    * ``IterBasedTrainLoop``: before fetching batch ``iter + 1`` (after the
      resumed loop has skipped the batches already trained);
    * ``EpochBasedTrainLoop``: at the start of the next epoch, for
      checkpoints saved at the end of an epoch.

    The uninterrupted run does the same with the state it just saved, so
    whatever runs between a save and the next batch (validation creates
    data-loader iterators, which draw from torch's generator) cannot make
    the two runs diverge. With ``randomness=dict(seed=..., deterministic=
    True)`` and ``num_workers=0`` a resumed run then ends with the weights
    of the uninterrupted one (tested with ``num_workers=0``; data-loader
    workers are seeded by mmengine's ``worker_init_fn`` and advance
    through the skipped fetches).

    A checkpoint loaded with ``load_from`` (a new run from iteration 0)
    leaves the generators alone. In distributed runs the state is saved
    but not restored: rank 0 alone writes the checkpoint, and its state is
    not the other ranks'. ``tools/train.py`` adds this hook to every config
    (:func:`add_random_state_hook`).
    """

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._loaded: Optional[Dict[str, Any]] = None
        self._next_epoch_state: Optional[Dict[str, Any]] = None
        self._at_epoch_end = False

    # -- saving --------------------------------------------------------
    def after_train_epoch(self, runner) -> None:
        # runs before CheckpointHook's after_train_epoch (lower priority)
        self._at_epoch_end = True

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = get_random_state()
        checkpoint[CHECKPOINT_KEY] = state
        # not `runner.train_loop`, which would build a loop outside training
        loop = getattr(runner, '_train_loop', None)
        iterator = getattr(loop, 'dataloader_iterator', None)
        if isinstance(iterator, _RestoringIterator):
            iterator.restore_before(iterator.fetched, state)
        elif self._at_epoch_end and get_world_size() == 1:
            self._next_epoch_state = state

    # -- resuming ------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = checkpoint.get(CHECKPOINT_KEY)

    def before_train(self, runner) -> None:
        loop = runner.train_loop
        loaded, self._loaded = self._loaded, None
        if get_world_size() > 1:
            return
        resumed = loaded is not None and (loop.iter > 0 or loop.epoch > 0)
        if hasattr(loop, 'dataloader_iterator'):
            loop.dataloader_iterator = _RestoringIterator(
                loop.dataloader_iterator)
            if resumed:  # the loop first skips `iter` batches
                loop.dataloader_iterator.restore_before(loop.iter, loaded)
        elif resumed:
            self._next_epoch_state = loaded

    def before_train_epoch(self, runner) -> None:
        self._at_epoch_end = False
        state, self._next_epoch_state = self._next_epoch_state, None
        if state is not None:
            set_random_state(state)

    def after_train(self, runner) -> None:
        iterator = getattr(runner.train_loop, 'dataloader_iterator', None)
        if isinstance(iterator, _RestoringIterator):
            runner.train_loop.dataloader_iterator = iterator.iterator


def add_random_state_hook(cfg: Config) -> None:
    """Append :class:`RandomStateHook` to ``cfg.custom_hooks`` unless the
    config already has one."""
    add_custom_hook(cfg, RandomStateHook)


__all__ = ['RandomStateHook', 'add_random_state_hook', 'get_random_state',
           'set_random_state', 'CHECKPOINT_KEY']
