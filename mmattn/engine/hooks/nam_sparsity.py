"""NAM's L1 sparsity penalty on its BN scale factors."""
from functools import partial
from typing import List

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS

from mmattn.models.attention.nam import NAM


def nam_scale_factors(model: nn.Module) -> List[nn.Parameter]:
    """The BN weights (gamma) of every :class:`NAM` in ``model``: the
    channel BN and, where present, the pixel BN."""
    return [
        bn.weight for m in model.modules() if isinstance(m, NAM)
        for bn in (m.channel_bn, m.spatial_bn) if bn is not None
    ]


def _add_l1_subgradient(params: List[nn.Parameter], s: float, optimizer,
                        args, kwargs) -> None:
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.grad.add_(torch.sign(p), alpha=s)


@HOOKS.register_module()
class NAMSparsityHook(Hook):
    """L1 sparsity regularisation of NAM's scale factors.

    The NAM paper (`arXiv 2111.12419 <https://arxiv.org/abs/2111.12419>`_)
    adds :math:`p \\sum |\\gamma|` over the NAM BN scale factors to
    the loss, to push unimportant channels (and pixels) towards zero. The
    official training script (``--sparsity-regularization``, ``--s``
    default 1e-4, ``updateBN``) implements it by adding
    :math:`s \\cdot \\mathrm{sign}(\\gamma)` to those weights' gradients
    after ``backward`` and before ``optimizer.step()``.

    mmengine's ``OptimWrapper.update_params`` runs backward and step in one
    call, so this hook registers a PyTorch optimizer *step pre-hook* at the
    start of training (removed at its end). It therefore runs

    * right before each parameter update: once per update when gradients
      are accumulated over several iterations;
    * after AMP's unscaling (the loss scaler steps the optimizer only then)
      and after gradient clipping, so the penalty is neither scaled nor
      clipped.

    Only the NAM BN weights owned by each optimizer get the term; the
    pixel gate's BN (``NAM(spatial=True)``) is included, as in the official
    ``updateBN``.

    Example::

        custom_hooks = [dict(type='NAMSparsityHook', s=1e-4)]

    Args:
        s (float): Penalty strength (the official ``--s``), >= 0.
            Default: 1e-4.
    """

    priority = 'NORMAL'

    def __init__(self, s: float = 1e-4) -> None:
        if not s >= 0:
            raise ValueError(f's must be >= 0, got {s!r}')
        self.s = float(s)
        self._handles: list = []

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        params = nam_scale_factors(model)
        if not params:
            runner.logger.warning('NAMSparsityHook: the model has no NAM '
                                  'module; nothing to regularise')
            return
        wrappers = (runner.optim_wrapper.values() if isinstance(
            runner.optim_wrapper, OptimWrapperDict) else
                    [runner.optim_wrapper])
        for wrapper in wrappers:
            optimizer = wrapper.optimizer
            owned = {
                id(p)
                for group in optimizer.param_groups for p in group['params']
            }
            mine = [p for p in params if id(p) in owned]
            if mine:
                self._handles.append(
                    optimizer.register_step_pre_hook(
                        partial(_add_l1_subgradient, mine, self.s)))

    def after_train(self, runner) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
