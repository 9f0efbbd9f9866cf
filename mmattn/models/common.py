"""The few pieces every attention module shares.

* argument checks that raise ``ValueError`` naming the argument,
* reduction arithmetic (``rd_ratio`` / ``rd_channels`` / ``rd_divisor``),
* activations and gates chosen by name,
* global pooling whose statistics are accumulated in fp32 (safe under
  fp16/bf16 autocast),
* :func:`needs_grad`, which picks a module's custom-backward path.
"""
from __future__ import annotations

from typing import Iterable, Optional, Type, Union

import torch
import torch.nn as nn

ActLayer = Union[str, Type[nn.Module], None]

_ACTIVATIONS: dict[str, Type[nn.Module]] = {
    'relu': nn.ReLU,
    'relu6': nn.ReLU6,
    'leaky_relu': nn.LeakyReLU,
    'gelu': nn.GELU,
    'silu': nn.SiLU,
    'swish': nn.SiLU,
    'hard_swish': nn.Hardswish,
    'h_swish': nn.Hardswish,
    'sigmoid': nn.Sigmoid,
    'hard_sigmoid': nn.Hardsigmoid,
    'h_sigmoid': nn.Hardsigmoid,
    'tanh': nn.Tanh,
    'identity': nn.Identity,
}


# --------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------
def check_positive_int(value: int, name: str) -> int:
    """Return ``value`` if it is an int >= 1, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive int, got {value!r}')
    return value


def check_choice(value, choices: Iterable, name: str):
    """Return ``value`` if it is one of ``choices``, else raise naming
    ``name`` and the allowed values."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f'{name} must be one of {choices}, got {value!r}')
    return value


def check_divisible(value: int, divisor: int, name: str,
                    divisor_name: str) -> None:
    """Raise unless ``divisor`` divides ``value``."""
    if value % divisor != 0:
        raise ValueError(f'{divisor_name}={divisor} must divide {name}='
                         f'{value}')


def check_odd_kernel(kernel_size: int, name: str = 'kernel_size') -> int:
    """Return ``kernel_size`` if it is a positive odd int (so that 'same'
    padding exists), else raise naming ``name``."""
    check_positive_int(kernel_size, name)
    if kernel_size % 2 == 0:
        raise ValueError(f'{name} must be odd so that the output keeps the '
                         f'input size, got {kernel_size}')
    return kernel_size


# --------------------------------------------------------------------------
# reduction arithmetic
# --------------------------------------------------------------------------
def make_divisible(value: float, divisor: int = 8,
                   min_value: Optional[int] = None,
                   round_limit: float = 0.9) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (timm's rule):
    never below ``min_value`` (default ``divisor``) and never more than
    ``1 - round_limit`` below ``value``."""
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:
        new_value += divisor
    return new_value


def reduced_channels(in_channels: int,
                     rd_ratio: float,
                     rd_channels: Optional[int] = None,
                     rd_divisor: int = 1,
                     min_channels: int = 1) -> int:
    """Width of a reduction (squeeze) layer.

    Args:
        in_channels (int): Channels entering the reduction, C.
        rd_ratio (float): Width as a fraction of C (1/r in the SE paper).
        rd_channels (int, optional): Explicit width; overrides ``rd_ratio``.
        rd_divisor (int): Round the width to a multiple of this. 1 (default)
            keeps the papers' plain ``int(C * rd_ratio)``.
        min_channels (int): Lower bound applied after rounding, for designs
            such as Coordinate attention's ``max(8, C / 32)``.

    Raises:
        ValueError: naming ``rd_channels`` / ``rd_ratio`` when the width
            would be 0 or the arguments are not positive.
    """
    if rd_channels is not None:
        return check_positive_int(rd_channels, 'rd_channels')
    if not rd_ratio > 0:
        raise ValueError(f'rd_ratio must be > 0, got {rd_ratio!r}')
    check_positive_int(rd_divisor, 'rd_divisor')
    if rd_divisor > 1:
        width = make_divisible(in_channels * rd_ratio, rd_divisor,
                               round_limit=0.)
    else:
        width = int(in_channels * rd_ratio)
    width = max(width, min_channels if min_channels > 1 else 0)
    if width < 1:
        raise ValueError(
            f'rd_ratio={rd_ratio} leaves 0 channels for in_channels='
            f'{in_channels}; use a larger rd_ratio or set rd_channels')
    return width


# --------------------------------------------------------------------------
# activations and gates
# --------------------------------------------------------------------------
def create_act(act: ActLayer, name: str = 'act_layer') -> nn.Module:
    """Build an activation (or gate) from a name, a class, or ``None``
    (identity). Names: ``'relu'``, ``'sigmoid'``, ``'hard_sigmoid'``,
    ``'hard_swish'``, ... (see ``ACTIVATION_NAMES``)."""
    if act is None:
        return nn.Identity()
    if isinstance(act, str):
        check_choice(act, _ACTIVATIONS, name)
        layer = _ACTIVATIONS[act]
        return layer(inplace=True) if layer in (nn.ReLU, nn.ReLU6) else layer()
    if isinstance(act, type) and issubclass(act, nn.Module):
        return act()
    raise ValueError(f'{name} must be a name from {tuple(_ACTIVATIONS)}, an '
                     f'nn.Module class or None, got {act!r}')


ACTIVATION_NAMES = tuple(_ACTIVATIONS)


# --------------------------------------------------------------------------
# pooling with fp32 statistics
# --------------------------------------------------------------------------
def accumulate_dtype(x: torch.Tensor) -> torch.dtype:
    """fp32 for half-precision inputs, the input's dtype otherwise (fp64
    stays fp64)."""
    return torch.promote_types(x.dtype, torch.float32)


def spatial_mean(x: torch.Tensor, dims=(2, 3)) -> torch.Tensor:
    """Mean over ``dims`` (keepdim) accumulated and returned in at least
    fp32.

    Under autocast a half-precision sum over a large map overflows or loses
    precision; ``dtype=`` accumulates in fp32 without copying the input.
    """
    return torch.mean(x, dim=dims, keepdim=True, dtype=accumulate_dtype(x))


def spatial_max(x: torch.Tensor, dims=(2, 3)) -> torch.Tensor:
    """Max over ``dims`` (keepdim), returned in at least fp32 (the max
    itself is exact in any precision)."""
    return torch.amax(x, dim=dims, keepdim=True).to(accumulate_dtype(x))


def spatial_mean_var(x: torch.Tensor, dims=(2, 3), correction: int = 0):
    """Mean and variance over ``dims`` (keepdim) in at least fp32."""
    var, mean = torch.var_mean(x.to(accumulate_dtype(x)), dim=dims,
                               keepdim=True, correction=correction)
    return mean, var


# --------------------------------------------------------------------------
# ONNX-exportable adaptive pooling
# --------------------------------------------------------------------------
def _adaptive_pool_matrix(in_size: int, out_size: int,
                          like: torch.Tensor) -> torch.Tensor:
    """(out_size, in_size) matrix averaging the bins of adaptive pooling:
    row i covers ``[floor(i * in / out), ceil((i + 1) * in / out))``. Built
    from Python numbers, so that a traced graph holds it as a constant."""
    rows = []
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -(-(i + 1) * in_size // out_size)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0
                     for j in range(in_size)])
    return torch.tensor(rows, dtype=like.dtype, device=like.device)


def adaptive_avg_pool2d(x: torch.Tensor, output_size) -> torch.Tensor:
    """``F.adaptive_avg_pool2d``, also exportable to ONNX for any sizes.

    ONNX has no adaptive pooling and torch's exporter handles only output
    sizes that divide the input size. While exporting, the pooling is
    written as one averaging matrix per axis, built for the traced input
    size: the same bins, so the same result (an exported graph then
    expects that input size). Otherwise ``F.adaptive_avg_pool2d`` runs.
    """
    if not torch.onnx.is_in_onnx_export():
        return torch.nn.functional.adaptive_avg_pool2d(x, output_size)
    out_h, out_w = (output_size, output_size) if isinstance(
        output_size, int) else output_size
    rows = _adaptive_pool_matrix(x.shape[-2], out_h, x)  # (oh, H)
    cols = _adaptive_pool_matrix(x.shape[-1], out_w, x)  # (ow, W)
    return torch.einsum('ph,bchw,qw->bcpq', rows, x, cols)  # (B, C, oh, ow)


# --------------------------------------------------------------------------
# custom autograd paths
# --------------------------------------------------------------------------
def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd will record an op on ``tensors`` (grad mode on and
    one of them requires grad) outside tracing and ONNX export.

    Modules with a hand-written backward (``SimAMFunction``,
    ``SGEFunction``) take it only then; otherwise (inference, and tracing
    or export, which cannot record a Python autograd Function) they run
    plain ops.
    """
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
