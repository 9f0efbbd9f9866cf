"""What ``tools/train.py`` and ``tools/test.py`` add to MMDetection's own.

* :class:`ConfigOptionsAction`: mmengine's ``--cfg-options`` parser
  (``DictAction``) reads ``key=value`` pairs whose values are numbers,
  strings and (nested) lists/tuples only; a value holding ``dict(...)``
  becomes a string. This action also reads those values, with a safe
  evaluator (literals and ``dict(...)`` calls, nothing else), so a plugin
  list fits on the command line::

      --cfg-options model.backbone.plugins=\
"[dict(cfg=dict(type='ECA'),position='after_conv3')]"

* :func:`resolve_config_path`: a config named ``mmdet::<dir>/<file>.py``
  (the ``_base_`` syntax) is read from the installed package, so an
  unmodified mmdet config can be trained directly.
* :func:`merge_cfg_options`: merges them and imports a ``custom_imports``
  given there (mmengine imports ``custom_imports`` only while reading the
  config file).
* :func:`resolve_pretrained_backbone`: the backbone's ``Pretrained``
  checkpoint, when it is a local file, is checked before anything is
  built: the ImageNet checkpoint a pretraining config has not written yet
  gives way to torchvision's weights, with a warning; any other missing
  file is an error naming the field.
* :func:`setup_cpu_distributed`: ``torch.distributed`` on CPU (gloo).
  mmengine's launcher always calls ``torch.cuda.set_device`` and wraps the
  model with ``device_ids=[LOCAL_RANK]``, both of which fail without a GPU.
"""
from __future__ import annotations

import ast
import importlib
import logging
import os.path as osp
import re
from datetime import timedelta
from typing import Any, Dict, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.utils import import_modules_from_strings


def _literal(node: ast.AST) -> Any:
    """Evaluate a parsed value made of literals, containers and
    ``dict(key=value, ...)`` calls; raise ValueError on anything else."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(item) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys,
                                                         node.values)}
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == 'dict' and not node.args
            and all(kw.arg is not None for kw in node.keywords)):
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op,
                                                    (ast.UAdd, ast.USub)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)):
            return value if isinstance(node.op, ast.UAdd) else -value
    if isinstance(node, ast.BinOp) and isinstance(node.op,
                                                  (ast.Div, ast.Mult)):
        left, right = _literal(node.left), _literal(node.right)
        if all(isinstance(v, (int, float)) for v in (left, right)):
            return left / right if isinstance(node.op, ast.Div) \
                else left * right
    raise ValueError(f'unsupported expression {ast.dump(node)}: only '
                     f'literals, lists, tuples and dict(...) are allowed')


def parse_option_value(text: str) -> Any:
    """One ``--cfg-options`` value: as mmengine's ``DictAction``, except
    that a value containing ``dict(`` is evaluated as a Python literal
    with ``dict(...)`` calls (``1./16`` style numbers allowed)."""
    if 'dict(' not in text:
        return DictAction._parse_iterable(text)
    try:
        return _literal(ast.parse(text.strip(), mode='eval').body)
    except (SyntaxError, ValueError) as err:
        raise ValueError(f'cannot read --cfg-options value {text!r}: '
                         f'{err}') from None


class ConfigOptionsAction(DictAction):
    """``--cfg-options`` action: mmengine's ``DictAction`` plus values
    holding ``dict(...)`` (see :func:`parse_option_value`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        options = dict(getattr(namespace, self.dest, None) or {})
        for pair in values or []:
            key, sep, value = pair.partition('=')
            if not sep:
                parser.error(f'--cfg-options expects key=value, got '
                             f'{pair!r}')
            try:
                options[key] = parse_option_value(value)
            except ValueError as err:
                parser.error(str(err))
        setattr(namespace, self.dest, options)


def resolve_config_path(path: str) -> str:
    """``path``, or for ``<package>::<dir>/<file>.py`` (e.g.
    ``mmdet::retinanet/retinanet_r50_fpn_1x_coco.py``) the file shipped in
    that installed package's ``.mim/configs``."""
    if '::' not in path or osp.isfile(path):
        return path
    package, _, rel = path.partition('::')
    root = osp.dirname(importlib.import_module(package).__file__)
    resolved = osp.join(root, '.mim', 'configs', rel)
    if not osp.isfile(resolved):
        raise FileNotFoundError(f'{path!r}: no {resolved}')
    return resolved


def merge_cfg_options(cfg: Config, options: Optional[Dict[str, Any]]) -> None:
    """Merge ``--cfg-options`` into ``cfg``; import the modules of a
    ``custom_imports`` they set (mmengine did so only for the file)."""
    if not options:
        return
    cfg.merge_from_dict(options)
    if any(key == 'custom_imports' or key.startswith('custom_imports.')
           for key in options):
        import_modules_from_strings(**cfg.custom_imports)


#: The ImageNet recipe of every pretraining config (8 GPUs x 32 images).
PRETRAIN_RECIPE = '8xb32_in1k'


def pretrain_config_name(attention: str, depth: int) -> str:
    """Name of the ``configs/pretrain/`` config (and of its default work
    dir) of the attention ResNet, e.g. ``eca_resnet50_8xb32_in1k``."""
    return f'{attention}_resnet{depth}_{PRETRAIN_RECIPE}'


def pretrained_checkpoint(attention: str, depth: int, epochs: int) -> str:
    """The checkpoint a detection config names for its backbone: the last
    one that ``tools/train.py configs/pretrain/<name>.py`` writes to its
    default work dir (matched by :data:`PRETRAINED_HANDOFF`)."""
    return (f'work_dirs/{pretrain_config_name(attention, depth)}/'
            f'epoch_{epochs}.pth')


#: :func:`pretrained_checkpoint`'s paths, naming the config and the depth.
PRETRAINED_HANDOFF = re.compile(
    r'(^|/)work_dirs/(?P<name>\w+_resnet(?P<depth>\d+)_' +
    re.escape(PRETRAIN_RECIPE) + r')/epoch_\d+\.pth$')


def resolve_pretrained_backbone(cfg: Config) -> None:
    """Check ``model.backbone.init_cfg`` of type ``Pretrained`` before
    anything is built, when its checkpoint is a local file.

    * The file exists, or the checkpoint is remote (``torchvision://``,
      ``open-mmlab://``, ``http(s)://``, ...): nothing to do.
    * It is the ImageNet checkpoint that a pretraining config
      (``configs/pretrain/<name>.py``) has not written yet: the backbone
      starts from torchvision's ResNet weights instead, with the attention
      modules from their own init, and a warning says so and how to get the
      pretrained one.
    * Any other missing file: an error naming the field.

    Raises:
        FileNotFoundError: naming the field, the file, and the ways out.
    """
    backbone = cfg.get('model', {}).get('backbone', {})
    init_cfg = backbone.get('init_cfg') or {}
    if not isinstance(init_cfg, dict) or init_cfg.get('type') != 'Pretrained':
        return
    checkpoint = str(init_cfg.get('checkpoint', ''))
    if '://' in checkpoint or osp.isfile(checkpoint):
        return
    handoff = PRETRAINED_HANDOFF.search(checkpoint)
    if handoff is None:
        depth = backbone.get('depth', 50)
        raise FileNotFoundError(
            f'model.backbone.init_cfg.checkpoint={checkpoint!r} does not '
            f'exist (relative to {osp.abspath(".")}). Point it at your '
            f'checkpoint, or start from torchvision\'s ResNet-{depth}: '
            f'--cfg-options model.backbone.init_cfg.checkpoint='
            f'torchvision://resnet{depth} model.backbone.init_cfg.prefix=None')
    torchvision = f'torchvision://resnet{handoff["depth"]}'
    backbone.init_cfg = dict(type='Pretrained', checkpoint=torchvision)
    print_log(
        f'model.backbone.init_cfg.checkpoint={checkpoint!r} is not there '
        f'yet: the backbone starts from {torchvision} instead, its attention '
        f'modules from their own init (not the papers\' setting). For the '
        f'ImageNet-pretrained attention network, first run python '
        f'tools/train.py configs/pretrain/{handoff["name"]}.py (it writes '
        f'that file), or point the field at a converted checkpoint.',
        logger='current', level=logging.WARNING)


def setup_cpu_distributed(cfg: Config, launcher: str) -> bool:
    """Prepare ``torch.distributed`` on CPU for a run started by
    ``torch.distributed.run`` (``--launcher pytorch``) on a machine without
    CUDA: create the gloo process group (the Runner then skips mmengine's
    CUDA-only ``init_dist``) and wrap the model in DDP without
    ``device_ids``. Returns whether it did anything (not on GPUs, not for
    other launchers, not when already initialised)."""
    if (launcher != 'pytorch' or torch.cuda.is_available()
            or torch_dist.is_initialized()):
        return False
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    timeout = dist_cfg.get('timeout', 1800)
    torch_dist.init_process_group(backend='gloo',
                                  timeout=timedelta(seconds=timeout))
    cfg.setdefault('env_cfg', {})
    cfg.env_cfg.dist_cfg = dict(dist_cfg, backend='gloo')
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters',
                       cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None  # CPU module: DDP refuses device ids
    cfg.model_wrapper_cfg = wrapper
    return True


__all__ = ['ConfigOptionsAction', 'parse_option_value',
           'resolve_config_path', 'merge_cfg_options',
           'resolve_pretrained_backbone', 'setup_cpu_distributed']
