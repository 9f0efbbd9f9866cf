"""Mixed-precision (``--amp``) training on CPU with the pinned stack.
Imported by ``import mmattn``.

mmengine 0.10.7 and mmcv 2.1.0 support automatic mixed precision on GPUs
only:

* mmengine's ``AmpOptimWrapper`` (what ``tools/train.py --amp`` selects)
  asserts a GPU/NPU/MLU/MUSA at construction. It is re-registered under
  the same name with CPU support: autocast in **bfloat16** (the only CPU
  autocast type mmengine's ``autocast`` allows; float16 is refused with a
  ValueError naming ``dtype``) and loss scaling by
  ``torch.amp.GradScaler('cpu')`` configured by ``loss_scale`` as on GPU
  (bf16 has fp32's exponent range, so a dynamic scale rarely moves; the
  scaler still skips a step whose gradients are inf/NaN). On an
  accelerator nothing changes.
* mmcv's compiled CPU kernels of ``nms`` and ``RoIAlign`` take fp32 only
  ("expected scalar type Float but found BFloat16" as soon as an RPN runs
  under autocast). Their half-precision CPU inputs are computed in fp32;
  RoIAlign's output goes back to its input's dtype (mmdet writes it into a
  buffer of that dtype), NMS returns indices. Every bf16/fp16 value is
  exactly representable in fp32, so the kernels see the same inputs and
  compute at least as accurately as a half-precision kernel would.
"""
from __future__ import annotations

from typing import Union

import torch
from mmcv.ops.nms import NMSop
from mmcv.ops.roi_align import RoIAlign
from mmengine.device import get_device
from mmengine.optim import AmpOptimWrapper as MMEngineAmpOptimWrapper
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

_HALF = (torch.float16, torch.bfloat16)


@OPTIM_WRAPPERS.register_module(name='AmpOptimWrapper', force=True)
class AmpOptimWrapper(MMEngineAmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper``, also on CPU (bfloat16 autocast).

    Args:
        loss_scale (float | str | dict): As mmengine: ``'dynamic'``, a
            static scale, or ``torch.amp.GradScaler`` arguments.
            Default: 'dynamic'.
        dtype (str | torch.dtype, optional): Autocast dtype. On CPU None
            means ``bfloat16``, the only one CPU autocast supports.
        use_fsdp (bool): As mmengine (accelerators only).
        **kwargs: ``OptimWrapper`` arguments.
    """

    def __init__(self,
                 loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Union[str, torch.dtype, None] = None,
                 use_fsdp: bool = False,
                 **kwargs) -> None:
        if get_device() != 'cpu':
            super().__init__(loss_scale=loss_scale, dtype=dtype,
                             use_fsdp=use_fsdp, **kwargs)
            return
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype, dtype)
        if dtype is None:
            dtype = torch.bfloat16
        if dtype != torch.bfloat16:
            raise ValueError(f'dtype={dtype!r}: mixed precision on CPU '
                             f'autocasts to bfloat16 only; leave dtype unset '
                             f'or set it to "bfloat16"')
        if use_fsdp:
            raise ValueError('use_fsdp=True needs GPUs; this machine has '
                             'none')
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        if loss_scale == 'dynamic':
            self.loss_scaler = torch.amp.GradScaler('cpu')
        elif isinstance(loss_scale, float):
            self._scale_update_param = loss_scale
            self.loss_scaler = torch.amp.GradScaler('cpu',
                                                    init_scale=loss_scale)
        elif isinstance(loss_scale, dict):
            self.loss_scaler = torch.amp.GradScaler('cpu', **loss_scale)
        else:
            raise TypeError('loss_scale must be of type float, dict, or '
                            f'"dynamic", but got {loss_scale}')
        self.cast_dtype = dtype


_nms_forward = NMSop.forward
_roi_align_forward = RoIAlign.forward


def _nms_forward_fp32(ctx, bboxes, scores, *args):
    """``NMSop.forward`` with half-precision CPU boxes/scores in fp32."""
    if bboxes.device.type == 'cpu' and (bboxes.dtype in _HALF
                                        or scores.dtype in _HALF):
        bboxes, scores = bboxes.float(), scores.float()
    return _nms_forward(ctx, bboxes, scores, *args)


def _roi_align_forward_fp32(self, input: torch.Tensor,
                            rois: torch.Tensor) -> torch.Tensor:
    """``RoIAlign.forward``; a half-precision CPU input is pooled in fp32
    and the result returned in the input's dtype (differentiable)."""
    if input.device.type == 'cpu' and input.dtype in _HALF:
        with torch.autocast('cpu', enabled=False):
            out = _roi_align_forward(self, input.float(), rois.float())
        return out.to(input.dtype)
    return _roi_align_forward(self, input, rois)


NMSop.forward = staticmethod(_nms_forward_fp32)
RoIAlign.forward = _roi_align_forward_fp32

__all__ = ['AmpOptimWrapper']
