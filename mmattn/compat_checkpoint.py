"""Crash-safe checkpoint saving, and ``weights_only`` loading on every
path. Imported by ``import mmattn`` (after :mod:`mmattn.compat`).

Saving
------
mmengine 0.10.7 writes a checkpoint straight to its final name
(``open(path, 'wb')``), so a SIGKILL or a power cut in the middle leaves a
truncated file; it writes ``last_checkpoint`` the same way (an empty file if
killed in between); and with ``max_keep_ckpts`` it deletes the oldest
checkpoint *before* writing the new one, which with ``max_keep_ckpts=1`` is
the very file ``last_checkpoint`` names. Here:

* :func:`save_checkpoint` (mmengine's, for local paths) serialises, writes
  ``<file>.tmp``, flushes and fsyncs it, then renames it onto ``<file>``
  (``os.replace`` is atomic) and fsyncs the directory: ``<file>`` is either
  the previous complete checkpoint or the new complete one, never a part.
* ``CheckpointHook`` saves the new checkpoint, then replaces
  ``last_checkpoint`` the same way, and only then deletes outdated
  checkpoints.

So at every moment ``last_checkpoint`` is absent (nothing saved yet) or
names a complete checkpoint, and ``--resume`` continues from it. A kill
can leave a ``*.tmp`` file behind; the next save of that name replaces it.

mmengine also formats the whole config with yapf for every checkpoint's
``meta`` (and three times when a run starts): seconds of CPU each time for
a detector config. The formatting of a given text is cached.

Loading
-------
:mod:`mmattn.compat` makes local files load with ``weights_only=True``.
mmengine's remote loaders do not: ``http(s)://`` goes through
``torch.hub.load_state_dict_from_url``, whose ``weights_only`` defaults to
**False**, and ``torchvision://`` (the ImageNet init of every mmdet
config), ``open-mmlab://`` and ``mmcls://`` go through it too; ``pavi://``
and ``s3://`` call ``torch.load`` without the allow-list. Every scheme is
re-registered here: the file is fetched (into torch hub's cache, as
before) and loaded by :func:`mmattn.compat.safe_load_checkpoint`, which
refuses a checkpoint carrying code with
:class:`~mmattn.compat.UnsafeCheckpointError`.
"""
from __future__ import annotations

import functools
import io
import logging
import os
import os.path as osp
import sys
import tempfile
import zipfile
from typing import Optional
from urllib.parse import urlparse

import mmengine.config.config as mmengine_config
import mmengine.runner
import mmengine.runner.checkpoint as mmengine_checkpoint
import mmengine.runner.runner as mmengine_runner
import torch
from mmengine.dist import get_dist_info, is_main_process
from mmengine.fileio import get_file_backend
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.runner.checkpoint import (CheckpointLoader,
                                        _process_mmcls_checkpoint,
                                        get_deprecated_model_names,
                                        get_external_models,
                                        get_mmcls_models,
                                        get_torchvision_models)
from yapf.yapflib.yapf_api import FormatCode as _yapf_format_code

from .compat import UnsafeCheckpointError, safe_load_checkpoint

# --------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------


def _fsync_dir(path: str) -> None:
    """Make a rename in directory ``path`` durable (POSIX; a no-op where
    directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(data: bytes | str, path: str) -> None:
    """Write ``data`` to ``path`` so that ``path`` never holds a partial
    file: write ``<path>.tmp``, fsync it, ``os.replace`` it onto ``path``,
    fsync the directory."""
    path = osp.abspath(path)
    os.makedirs(osp.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp'
    if isinstance(data, str):
        data = data.encode('utf-8')
    with open(tmp, 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(osp.dirname(path))


#: mmengine's originals (kept for comparison in the tests)
_mmengine_save_checkpoint = mmengine_checkpoint.save_checkpoint
_mmengine_save_checkpoint_with_step = \
    CheckpointHook._save_checkpoint_with_step


def save_checkpoint(checkpoint: dict,
                    filename: str,
                    file_client_args: Optional[dict] = None,
                    backend_args: Optional[dict] = None) -> None:
    """mmengine's ``save_checkpoint``; a local file is written atomically
    (:func:`atomic_write`). Other backends (``pavi://``, ``s3://``) are
    left to mmengine."""
    if (file_client_args is None and not str(filename).startswith('pavi://')
            and isinstance(get_file_backend(filename,
                                            backend_args=backend_args),
                           LocalBackend)):
        with io.BytesIO() as buffer:
            torch.save(checkpoint, buffer)
            atomic_write(buffer.getvalue(), str(filename))
        return
    _mmengine_save_checkpoint(checkpoint, filename, file_client_args,
                              backend_args)


def _save_checkpoint_with_step(self, runner, step, meta) -> None:
    """``CheckpointHook._save_checkpoint_with_step`` of mmengine 0.10.7 in
    a crash-safe order: save the new checkpoint, point ``last_checkpoint``
    at it (atomically), then delete outdated checkpoints."""
    outdated = []
    if self.max_keep_ckpts > 0 and not (len(self.keep_ckpt_ids) > 0 and
                                        self.keep_ckpt_ids[-1] == step):
        # _save_checkpoint and _save_best_checkpoint may both save a step
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            outdated.append(self.keep_ckpt_ids.popleft())
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids',
                                       list(self.keep_ckpt_ids))

    ckpt_filename = self.filename_tmpl.format(step)
    self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
    runner.message_hub.update_info('last_ckpt', self.last_ckpt)

    runner.save_checkpoint(
        self.out_dir,
        ckpt_filename,
        self.file_client_args,
        save_optimizer=self.save_optimizer,
        save_param_scheduler=self.save_param_scheduler,
        meta=meta,
        by_epoch=self.by_epoch,
        backend_args=self.backend_args,
        **self.args)

    # Model parallel-like training should involve pulling sharded states
    # from all ranks, but skip the following procedure.
    if not is_main_process():
        return
    atomic_write(self.last_ckpt, osp.join(runner.work_dir, 'last_checkpoint'))
    for old_step in outdated:
        path = self.file_backend.join_path(self.out_dir,
                                           self.filename_tmpl.format(old_step))
        if path == self.last_ckpt:
            continue
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):
            # checkpoints saved by deepspeed are directories
            self.file_backend.rmtree(path)


@functools.lru_cache(maxsize=16)
def _format_code(text: str, style_items: tuple):
    return _yapf_format_code(text, style_config=dict(style_items))


def _cached_format_code(text: str, style_config=None, **kwargs):
    """yapf's ``FormatCode`` as mmengine's ``Config.pretty_text`` calls it
    (a dict style), cached on (text, style)."""
    if kwargs or not isinstance(style_config, dict):
        return _yapf_format_code(text, style_config=style_config, **kwargs)
    try:
        return _format_code(text, tuple(sorted(style_config.items())))
    except TypeError:  # an unhashable style value
        return _yapf_format_code(text, style_config=style_config)


# --------------------------------------------------------------------------
# weights_only loading for every scheme
# --------------------------------------------------------------------------


def _safe_load(source, name: str, map_location=None):
    """:func:`safe_load_checkpoint` of ``source`` (a path or a buffer);
    a refusal names ``name`` (the URL) rather than a cache path."""
    try:
        return safe_load_checkpoint(source, map_location)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(
            str(err).replace(repr(source), repr(name), 1)) from None


def _fetch_url(url: str, model_dir: Optional[str] = None,
               progress: bool = True) -> str:
    """The local copy of ``url`` in torch hub's checkpoint cache (as
    ``torch.hub.load_state_dict_from_url``), downloaded if absent; a legacy
    zip archive (torch < 1.6) is extracted next to it."""
    if model_dir is None:
        model_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached_file = osp.join(model_dir, osp.basename(urlparse(url).path))
    if not osp.exists(cached_file):
        sys.stderr.write(f'Downloading: "{url}" to {cached_file}\n')
        torch.hub.download_url_to_file(url, cached_file, None,
                                       progress=progress)
    if zipfile.is_zipfile(cached_file):
        with zipfile.ZipFile(cached_file) as archive:
            members = archive.infolist()
            if len(members) == 1 and not members[0].is_dir():
                archive.extractall(model_dir)
                return osp.join(model_dir, members[0].filename)
    return cached_file


def load_from_http(filename: str, map_location=None,
                   model_dir: Optional[str] = None,
                   progress: bool = os.isatty(0)):
    """``http(s)://``: fetch into torch hub's cache, load weights-only. In
    distributed runs local rank 0 downloads first (as mmengine)."""
    rank, world_size = get_dist_info()
    if rank == 0:
        path = _fetch_url(filename, model_dir, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            path = _fetch_url(filename, model_dir, progress)
    return _safe_load(path, filename, map_location)


def load_from_torchvision(filename: str, map_location=None):
    """``torchvision://<name>`` (and the deprecated ``modelzoo://``)."""
    if filename.startswith('modelzoo://'):
        print_log('The URL scheme of "modelzoo://" is deprecated, please '
                  'use "torchvision://" instead', logger='current',
                  level=logging.WARNING)
        model_name = filename[len('modelzoo://'):]
    else:
        model_name = filename[len('torchvision://'):]
    return load_from_http(get_torchvision_models()[model_name],
                          map_location=map_location)


def load_from_openmmlab(filename: str, map_location=None):
    """``open-mmlab://<name>`` / ``openmmlab://<name>``: a URL or a file
    under mmengine's home."""
    prefix = 'open-mmlab://' if filename.startswith('open-mmlab://') \
        else 'openmmlab://'
    model_name = filename[len(prefix):]
    deprecated = get_deprecated_model_names()
    if model_name in deprecated:
        print_log(f'{prefix}{model_name} is deprecated in favor of '
                  f'{prefix}{deprecated[model_name]}', logger='current',
                  level=logging.WARNING)
        model_name = deprecated[model_name]
    model_url = get_external_models()[model_name]
    if model_url.startswith(('http://', 'https://')):
        return load_from_http(model_url, map_location=map_location)
    path = osp.join(mmengine_checkpoint._get_mmengine_home(), model_url)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} can not be found.')
    return _safe_load(path, filename, map_location)


def load_from_mmcls(filename: str, map_location=None):
    """``mmcls://<name>``."""
    model_name = filename[len('mmcls://'):]
    checkpoint = load_from_http(get_mmcls_models()[model_name],
                                map_location=map_location)
    return _process_mmcls_checkpoint(checkpoint)


def load_from_pavi(filename: str, map_location=None):
    """``pavi://<model path>``: downloaded to a temporary file."""
    try:
        from pavi import modelcloud
    except ImportError:
        raise ImportError(
            'Please install pavi to load checkpoint from modelcloud.')
    model = modelcloud.get(filename[len('pavi://'):])
    with tempfile.TemporaryDirectory() as tmp_dir:
        path = osp.join(tmp_dir, model.name)
        model.download(path)
        return _safe_load(path, filename, map_location)


def load_from_ceph(filename: str, map_location=None, backend='petrel'):
    """``s3://`` / ``petrel://`` through mmengine's file backend."""
    file_backend = get_file_backend(filename,
                                    backend_args={'backend': backend})
    with io.BytesIO(file_backend.get(filename)) as buffer:
        return _safe_load(buffer, filename, map_location)


#: Every checkpoint scheme mmengine 0.10.7 registers besides local files
#: (:mod:`mmattn.compat`), with its weights-only loader.
REMOTE_LOADERS = {
    ('http://', 'https://'): load_from_http,
    ('modelzoo://', 'torchvision://'): load_from_torchvision,
    ('open-mmlab://', 'openmmlab://'): load_from_openmmlab,
    ('mmcls://', ): load_from_mmcls,
    ('pavi://', ): load_from_pavi,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'): load_from_ceph,
}


def _install() -> None:
    for prefixes, loader in REMOTE_LOADERS.items():
        CheckpointLoader.register_scheme(prefixes=list(prefixes),
                                         loader=loader, force=True)
    # torchvision:// etc. call ``load_from_http`` by its module-level name
    mmengine_checkpoint.load_from_http = load_from_http
    # every module that imported mmengine's save_checkpoint by name
    for module in (mmengine_checkpoint, mmengine_runner, mmengine.runner):
        module.save_checkpoint = save_checkpoint
    CheckpointHook._save_checkpoint_with_step = _save_checkpoint_with_step
    mmengine_config.FormatCode = _cached_format_code


_install()

__all__ = ['atomic_write', 'save_checkpoint', 'REMOTE_LOADERS',
           'load_from_http', 'load_from_torchvision', 'load_from_openmmlab',
           'load_from_mmcls', 'load_from_pavi', 'load_from_ceph']
