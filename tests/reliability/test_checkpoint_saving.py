"""Crash-safe checkpoints (issue 8, kill and resume): a process dying at
any point of a checkpoint save leaves ``last_checkpoint`` naming a complete
checkpoint; the random state saved with it restores the generators.

A "crash" is an exception raised right before one of the file-system
operations of a save (open for writing, fsync, rename, delete), i.e. the
process dies there; a crash before an fsync also truncates the file being
synced to half (a machine losing power before its data reached the disk).
Every crash point of a save is tried."""
import builtins
import os
import os.path as osp
import random
import stat

import mmengine.runner.checkpoint as mmengine_checkpoint
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import CheckpointHook
from mmengine.logging import MessageHub, MMLogger
from mmengine.runner.checkpoint import CheckpointLoader

from mmattn import compat_checkpoint
from mmattn.compat import safe_load_checkpoint
from mmattn.compat_checkpoint import atomic_write
from mmattn.engine.hooks.random_state import (CHECKPOINT_KEY,
                                              RandomStateHook,
                                              add_random_state_hook,
                                              get_random_state,
                                              set_random_state)


class Crash(Exception):
    """The process dies here."""


def instrument(monkeypatch, crash_at=None):
    """Count file-system mutations; raise :class:`Crash` before number
    ``crash_at``. Returns the list of events seen."""
    events = []

    def event(name, fd=None):
        if crash_at is not None and len(events) == crash_at:
            if fd is not None and stat.S_ISREG(os.fstat(fd).st_mode):
                # power cut: not all data reached the disk
                os.ftruncate(fd, os.fstat(fd).st_size // 2)
            raise Crash(name)
        events.append(name)

    real_open, real_fsync = builtins.open, os.fsync
    real_replace, real_remove = os.replace, os.remove

    def open_(file, mode='r', *args, **kwargs):
        if any(c in mode for c in 'wax+'):
            event(f'open {osp.basename(str(file))}')
        return real_open(file, mode, *args, **kwargs)

    def fsync(fd):
        event('fsync', fd)
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        event(f'replace {osp.basename(str(dst))}')
        return real_replace(src, dst, *args, **kwargs)

    def remove(path, *args, **kwargs):
        event(f'remove {osp.basename(str(path))}')
        return real_remove(path, *args, **kwargs)

    monkeypatch.setattr(builtins, 'open', open_)
    monkeypatch.setattr(os, 'fsync', fsync)
    monkeypatch.setattr(os, 'replace', replace)
    monkeypatch.setattr(os, 'remove', remove)
    return events


class FakeRunner:
    """What ``CheckpointHook`` uses of a Runner; ``save_checkpoint``
    writes through mmengine's (patched) ``save_checkpoint``."""

    def __init__(self, work_dir):
        self.work_dir = str(work_dir)
        self.logger = MMLogger.get_current_instance()
        self.message_hub = MessageHub.get_instance(f'ckpt-{work_dir}')

    def save_checkpoint(self, out_dir, filename, file_client_args=None,
                        meta=None, **kwargs):
        step = meta['iter']
        checkpoint = dict(meta=dict(meta),
                          state_dict={'w': torch.full((4096, ), step * 1.)})
        mmengine_checkpoint.save_checkpoint(checkpoint,
                                            osp.join(out_dir, filename))


def save(hook, runner, step):
    hook._save_checkpoint_with_step(runner, step, dict(iter=step))


def assert_last_checkpoint_complete(work_dir, steps):
    pointer = osp.join(work_dir, 'last_checkpoint')
    assert osp.isfile(pointer)
    path = open(pointer).read().strip()
    assert osp.isfile(path), f'last_checkpoint names a missing {path}'
    ckpt = safe_load_checkpoint(path)  # raises on a truncated file
    assert ckpt['meta']['iter'] in steps
    assert torch.equal(ckpt['state_dict']['w'],
                       torch.full((4096, ), ckpt['meta']['iter'] * 1.))


def crash_points(tmp_path, monkeypatch, max_keep_ckpts):
    """Number of file-system events of one save after the first."""
    runner = FakeRunner(tmp_path / 'count')
    hook = CheckpointHook(interval=1, by_epoch=False,
                          max_keep_ckpts=max_keep_ckpts)
    hook.before_train(runner)
    save(hook, runner, 1)
    with monkeypatch.context() as patch:
        events = instrument(patch)
        save(hook, runner, 2)
    return events


@pytest.mark.parametrize('max_keep_ckpts', [1, 2, -1])
def test_crash_at_any_point_of_a_save_leaves_a_complete_checkpoint(
        tmp_path, monkeypatch, max_keep_ckpts):
    events = crash_points(tmp_path, monkeypatch, max_keep_ckpts)
    # checkpoint: open, fsync, rename, fsync dir; last_checkpoint likewise
    assert events[:8] == ['open iter_2.pth.tmp', 'fsync',
                          'replace iter_2.pth', 'fsync',
                          'open last_checkpoint.tmp', 'fsync',
                          'replace last_checkpoint', 'fsync']
    if max_keep_ckpts == 1:
        assert events[8:] == ['remove iter_1.pth']  # only then
    for crash_at in range(len(events)):
        work_dir = tmp_path / f'crash{crash_at}'
        runner = FakeRunner(work_dir)
        hook = CheckpointHook(interval=1, by_epoch=False,
                              max_keep_ckpts=max_keep_ckpts)
        hook.before_train(runner)
        save(hook, runner, 1)
        with monkeypatch.context() as patch:
            instrument(patch, crash_at)
            with pytest.raises(Crash):
                save(hook, runner, 2)
        assert_last_checkpoint_complete(work_dir, {1, 2})
        # the resumed run saves over the leftovers
        resumed = CheckpointHook(interval=1, by_epoch=False,
                                 max_keep_ckpts=max_keep_ckpts)
        resumed.before_train(runner)
        save(resumed, runner, 2)
        save(resumed, runner, 3)
        assert_last_checkpoint_complete(work_dir, {3})


def test_mmengine_order_loses_the_checkpoint(tmp_path, monkeypatch):
    """Why the save is patched: mmengine 0.10.7 with max_keep_ckpts=1
    deletes the checkpoint last_checkpoint names before writing the next,
    and writes files in place."""
    monkeypatch.setattr(mmengine_checkpoint, 'save_checkpoint',
                        compat_checkpoint._mmengine_save_checkpoint)
    monkeypatch.setattr(CheckpointHook, '_save_checkpoint_with_step',
                        compat_checkpoint._mmengine_save_checkpoint_with_step)
    events = crash_points(tmp_path, monkeypatch, 1)
    assert events == ['remove iter_1.pth', 'open iter_2.pth',
                      'open last_checkpoint']
    runner = FakeRunner(tmp_path / 'crash')
    hook = CheckpointHook(interval=1, by_epoch=False, max_keep_ckpts=1)
    hook.before_train(runner)
    save(hook, runner, 1)
    with monkeypatch.context() as patch:
        instrument(patch, crash_at=1)  # after the delete
        with pytest.raises(Crash):
            save(hook, runner, 2)
    with pytest.raises(AssertionError, match='missing'):
        assert_last_checkpoint_complete(tmp_path / 'crash', {1, 2})


def test_atomic_write_keeps_the_old_file_until_the_rename(tmp_path,
                                                          monkeypatch):
    path = tmp_path / 'file.bin'
    atomic_write(b'old', str(path))
    for crash_at in range(2):  # before the fsync, before the rename
        with monkeypatch.context() as patch:
            instrument(patch, crash_at + 1)
            with pytest.raises(Crash):
                atomic_write(b'new' * 1000, str(path))
        assert path.read_bytes() == b'old'
    atomic_write('new', str(path))
    assert path.read_bytes() == b'new'


def test_local_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    events = instrument(monkeypatch)
    mmengine_checkpoint.save_checkpoint({'w': torch.ones(3)},
                                        str(tmp_path / 'a.pth'))
    assert events == ['open a.pth.tmp', 'fsync', 'replace a.pth', 'fsync']
    monkeypatch.undo()
    assert torch.equal(CheckpointLoader.load_checkpoint(
        str(tmp_path / 'a.pth'))['w'], torch.ones(3))


def test_config_formatting_is_cached():
    """mmengine formats the config (yapf, seconds) for every checkpoint."""
    cfg = Config(dict(model=dict(type='X', depth=50), a=[1, 2, 3]))
    info = compat_checkpoint._format_code.cache_info
    text = cfg.pretty_text
    hits = info().hits
    assert cfg.pretty_text == text
    assert info().hits == hits + 1
    cfg.model.depth = 101  # a changed config is formatted anew
    assert 'depth=101' in cfg.pretty_text


# --------------------------------------------------------------------------
# random state
# --------------------------------------------------------------------------
def draw():
    return (random.random(), float(np.random.rand()),
            float(torch.rand(1)))


def test_random_state_round_trips_through_a_safe_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    draw()
    path = str(tmp_path / 'rng.pth')
    torch.save({CHECKPOINT_KEY: get_random_state()}, path)
    expected = [draw() for _ in range(3)]
    draw()
    state = safe_load_checkpoint(path)[CHECKPOINT_KEY]  # weights_only
    set_random_state(state)
    assert [draw() for _ in range(3)] == expected


def test_random_state_hook_is_added_once():
    cfg = Config(dict(custom_hooks=[dict(type='NAMSparsityHook')]))
    add_random_state_hook(cfg)
    add_random_state_hook(cfg)
    assert [h['type'] for h in cfg.custom_hooks] == [
        'NAMSparsityHook', 'RandomStateHook']
    assert RandomStateHook.priority == 'VERY_HIGH'
