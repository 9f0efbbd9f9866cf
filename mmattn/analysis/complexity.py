"""Parameters and FLOPs of backbones, classifiers and detectors, with the
attention modules' own cost counted.

Counting goes through mmengine's :class:`~mmengine.analysis.FlopAnalyzer`
(fvcore's jit-trace counter), which only knows convolutions, linear layers,
matmuls, norms and a few resizes: it gives **zero** to what most attention
modules are made of (global pooling, sigmoid gates, the ``x * gate``
product, softmax, PyTorch's fused ``scaled_dot_product_attention``) and
also to the backbone's ReLUs, max-pool and residual adds.
:class:`AttentionFlopAnalyzer` adds handles for those ops.

**Convention** (the one behind the published "4.12 GFLOPs" of ResNet-50 at
224 x 224 in PytorchInsight and mmpretrain, which were counted by hooks in
the style of ``ptflops``/mmcv's old ``get_model_complexity_info``):

* one multiply-add = one FLOP: a convolution or linear layer counts its
  MACs, a matmul / ``bmm`` its MACs (mmengine's handles), an ``einsum``
  its exact MACs (:func:`einsum_flops`);
* ``scaled_dot_product_attention``: the MACs of :math:`QK^\\top` and of
  :math:`AV`, plus one per attention score for the softmax;
* element-wise ops (add, mul, div, sigmoid, ReLU, h-swish, softmax, ...):
  one per output element, broadcasting included (``x * s`` with a
  (B, C, 1, 1) gate costs B*C*H*W);
* reductions and pooling (mean, sum, amax, var, max/avg pooling): one per
  input element;
* batch norm in eval mode: two per element; layer/group norm: five
  (mmengine's handles);
* shape and memory ops (view, permute, cat, pad, ...): zero.

With this convention ResNet-50 at 224 x 224 is 4.127 GFLOPs (conv 4.087,
BN 0.022, ReLU / residual add / pooling 0.016, FC 0.002) against the
published 4.12; attention modules add what they compute, usually a little
more than the published deltas, whose hook-based counters missed the
functional ops (``x * gate``, ``torch.mean``).
"""
from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass, field
from math import prod
from typing import Any, Dict, List, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import einsum_flop_jit, get_shape

Size = Tuple[int, int]


# --------------------------------------------------------------------------
# op handles
# --------------------------------------------------------------------------
_FLOATING = ('Float', 'Double', 'Half', 'BFloat16')


def _numel(value: Any) -> int:
    """Floating-point elements of a traced value: 0 for Python scalars,
    unknown shapes and integer tensors (the trace records size arithmetic
    as ``aten::sub`` / ``aten::mul`` on 0-dim Long tensors)."""
    if not value.isCompleteTensor() or \
            value.type().scalarType() not in _FLOATING:
        return 0
    return prod(get_shape(value))


def output_elements(inputs: List[Any], outputs: List[Any]) -> int:
    """One FLOP per output element (element-wise ops)."""
    return _numel(outputs[0])


def input_elements(inputs: List[Any], outputs: List[Any]) -> int:
    """One FLOP per element of the first input (reductions, pooling)."""
    return _numel(inputs[0])


#: Ops that keep the values of their input (up to layout), through which
#: :func:`_unpadded_width` looks for a zero-padding.
_LAYOUT_OPS = ('aten::contiguous', 'aten::unsqueeze', 'aten::squeeze',
               'aten::to', 'aten::view', 'aten::reshape', 'aten::transpose',
               'aten::permute', 'aten::expand')


def _unpadded_width(value: Any) -> int:
    """Last dimension of ``value`` before a zero-padding of that
    dimension, if it was padded (``aten::pad`` / ``constant_pad_nd``)
    through layout-only ops; else its own last dimension.

    mmattn's :func:`~mmattn.models.attention.self_attention.softmax_attention`
    pads q, k and v to one width so that PyTorch's fused kernels apply
    (DANet: q, k have C/8 channels, v has C); the padded channels are
    zeros and count for nothing in the attention's arithmetic.
    """
    width = get_shape(value)[-1]
    node = value.node()
    while node.kind() in _LAYOUT_OPS:
        node = next(node.inputs()).node()
    if node.kind() in ('aten::pad', 'aten::constant_pad_nd'):
        source = get_shape(next(node.inputs()))
        if source is not None:
            return source[-1]
    return width


def sdpa_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """``scaled_dot_product_attention(q, k, v)`` with q (..., Lq, E),
    k (..., Lk, E), v (..., Lk, Ev): Lq*Lk*E MACs for the scores, one per
    score for the softmax and Lq*Lk*Ev MACs for the weighted sum, per
    batch/head. Zero channels appended to reach a fused kernel are not
    counted (:func:`_unpadded_width`)."""
    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    batch = prod(q[:-2])
    lq, lk = q[-2], k[-2]
    e = min(_unpadded_width(inputs[0]), _unpadded_width(inputs[1]))
    ev = _unpadded_width(inputs[2])
    return batch * lq * lk * (e + 1 + ev)


def einsum_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """Exact MACs of a one- or two-operand ``einsum``: the product of the
    sizes of all its indices (every output element sums over the
    contracted ones). mmengine's handle reads numpy's ``einsum_path``
    report, which rounds to four significant digits (and allocates every
    operand); it remains the fallback for three or more operands or an
    ellipsis."""
    equation = inputs[0].toIValue().replace(' ', '')
    shapes = [get_shape(v) for v in inputs[1].node().inputs()]
    lhs = equation.split('->')[0].split(',')
    if len(lhs) > 2 or '.' in equation or None in shapes:
        return einsum_flop_jit(inputs, outputs)
    sizes: Dict[str, int] = {}
    for letters, shape in zip(lhs, shapes):
        sizes.update(zip(letters, shape))
    return prod(sizes.values())


#: Element-wise ops: one FLOP per output element.
ELEMENTWISE_OPS = (
    'aten::add', 'aten::add_', 'aten::sub', 'aten::sub_', 'aten::rsub',
    'aten::mul', 'aten::mul_', 'aten::div', 'aten::div_', 'aten::addcmul',
    'aten::addcmul_', 'aten::neg', 'aten::abs', 'aten::reciprocal',
    'aten::sqrt', 'aten::rsqrt', 'aten::square', 'aten::square_',
    'aten::pow', 'aten::exp', 'aten::log', 'aten::clamp_min',
    'aten::clamp_min_', 'aten::sigmoid', 'aten::sigmoid_',
    'aten::hardsigmoid', 'aten::hardsigmoid_', 'aten::hardswish',
    'aten::hardswish_', 'aten::relu', 'aten::relu_', 'aten::relu6',
    'aten::hardtanh', 'aten::hardtanh_', 'aten::leaky_relu',
    'aten::leaky_relu_', 'aten::gelu', 'aten::silu', 'aten::silu_',
    'aten::tanh', 'aten::tanh_', 'aten::softmax', 'aten::log_softmax',
    'aten::maximum', 'aten::minimum')

#: Reductions and pooling: one FLOP per input element.
REDUCTION_OPS = (
    'aten::mean', 'aten::sum', 'aten::amax', 'aten::amin', 'aten::max',
    'aten::min', 'aten::var', 'aten::var_mean', 'aten::std',
    'aten::std_mean', 'aten::max_pool1d', 'aten::max_pool2d',
    'aten::avg_pool1d', 'aten::avg_pool2d', 'aten::adaptive_max_pool2d',
    'aten::adaptive_avg_pool1d', 'aten::adaptive_avg_pool2d')

#: Shape and memory ops mmengine does not already ignore: zero FLOPs.
FREE_OPS = ('aten::view_as', 'aten::flip', 'aten::eye', 'aten::pad',
            'aten::clone', 'aten::expand_as', 'aten::unflatten',
            'aten::masked_fill_', 'aten::repeat', 'aten::lift_fresh',
            'aten::alias', 'aten::empty_like', 'aten::ones_like',
            'aten::new_ones', 'aten::tensor_split', 'aten::movedim')

#: Every handle added to mmengine's defaults.
EXTRA_HANDLES: Dict[str, Any] = {
    **{op: output_elements for op in ELEMENTWISE_OPS},
    **{op: input_elements for op in REDUCTION_OPS},
    'aten::scaled_dot_product_attention': sdpa_flops,
    'aten::einsum': einsum_flops,
    # dot products along the last dim: one MAC per element of an operand
    'aten::linalg_vecdot': input_elements,
}


class AttentionFlopAnalyzer(FlopAnalyzer):
    """mmengine's :class:`~mmengine.analysis.FlopAnalyzer` with handles for
    what attention modules compute (see the module docstring for the
    convention). Unsupported-op warnings are off: read
    :meth:`unsupported_ops` instead (:func:`measure` reports those met
    inside attention modules)."""

    def __init__(self, model: nn.Module,
                 inputs: Union[torch.Tensor, Tuple[torch.Tensor, ...]]
                 ) -> None:
        super().__init__(model, inputs)
        self.set_op_handle(**EXTRA_HANDLES)
        self.set_op_handle(**{op: None for op in FREE_OPS})
        self.unsupported_ops_warnings(False)
        self.uncalled_modules_warnings(False)


# --------------------------------------------------------------------------
# which modules are attention
# --------------------------------------------------------------------------
def attention_classes() -> Tuple[type, ...]:
    """Classes counted as attention: mmattn's modules and conv replacements
    and mmcv's attention bricks."""
    from mmcv.cnn import ContextBlock, GeneralizedAttention
    from mmcv.cnn.bricks.non_local import _NonLocalNd

    from mmattn.models.attention import AttentionModule
    from mmattn.models.backbones import PSAConv, SKConv
    return (AttentionModule, ContextBlock, GeneralizedAttention, _NonLocalNd,
            SKConv, PSAConv)


def attention_modules(model: nn.Module,
                      prefix: str = '') -> Dict[str, nn.Module]:
    """The outermost attention modules below ``model``, by qualified name
    (a module nested in another attention module is part of it)."""
    classes = attention_classes()
    found: Dict[str, nn.Module] = {}
    for name, module in model.named_modules(prefix=prefix):
        if isinstance(module, classes) and not any(
                name.startswith(outer + '.') for outer in found):
            found[name] = module
    return found


# --------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------
@dataclass
class Complexity:
    """What :func:`measure` found.

    Attributes:
        params (int): Parameters of the measured module.
        flops (int): Its FLOPs (multiply-adds) for the given input.
        attention_params (int): Parameters of its attention modules.
        attention_flops (int): FLOPs inside its attention modules.
        attention_by_operator (Counter): ``attention_flops`` by operator.
        attention_uncounted (Counter): Ops met inside attention modules that
            have no handle (empty when everything is counted).
        num_attention_modules (int): How many attention modules.
        attention_types (Counter): How many of each class.
        by_module (dict): FLOPs of named parts (e.g. backbone, neck).
    """

    params: int
    flops: int
    attention_params: int = 0
    attention_flops: int = 0
    attention_by_operator: Counter = field(default_factory=Counter)
    attention_uncounted: Counter = field(default_factory=Counter)
    num_attention_modules: int = 0
    attention_types: Counter = field(default_factory=Counter)
    by_module: Dict[str, Tuple[int, int]] = field(default_factory=dict)


def measure(model: nn.Module,
            inputs: Union[torch.Tensor, Tuple[torch.Tensor, ...]],
            scope: str = '',
            parts: Sequence[str] = ()) -> Complexity:
    """Parameters and FLOPs of ``model`` (or its submodule ``scope``) on
    ``inputs``, traced once in eval mode without gradients.

    Args:
        model (nn.Module): The module to trace (its ``forward`` takes
            ``inputs``).
        inputs (Tensor | tuple[Tensor]): Its inputs.
        scope (str): Qualified name of the submodule to report; '' for the
            whole model.
        parts (Sequence[str]): Qualified names of submodules whose
            (params, FLOPs) go to :attr:`Complexity.by_module`.
    """
    if not isinstance(inputs, tuple):
        inputs = (inputs, )
    model.eval()
    analyzer = AttentionFlopAnalyzer(model, inputs)
    with torch.no_grad():
        flops = analyzer.by_module()
    params = parameter_count(model)
    root = model.get_submodule(scope) if scope else model
    attention = attention_modules(root, prefix=scope)
    by_operator: Counter = Counter()
    uncounted: Counter = Counter()
    for name in attention:
        by_operator.update(analyzer.by_operator(name))
        uncounted.update(analyzer.unsupported_ops(name))
    return Complexity(
        params=params[scope],
        flops=int(flops[scope]),
        attention_params=sum(params[name] for name in attention),
        attention_flops=int(sum(flops[name] for name in attention)),
        attention_by_operator=by_operator,
        attention_uncounted=uncounted,
        num_attention_modules=len(attention),
        attention_types=Counter(type(m).__name__
                                for m in attention.values()),
        by_module={part: (params[part], int(flops[part]))
                   for part in parts})


# --------------------------------------------------------------------------
# models to measure
# --------------------------------------------------------------------------
def build_backbone(backbone_cfg: dict) -> nn.Module:
    """Build a backbone from its config without loading weights
    (``init_cfg`` / ``pretrained`` dropped), in eval mode."""
    from mmdet.registry import MODELS
    cfg = copy.deepcopy(dict(backbone_cfg))
    cfg.pop('init_cfg', None)
    cfg.pop('pretrained', None)
    backbone = MODELS.build(cfg)
    backbone.eval()
    return backbone


class ImageClassifier(nn.Module):
    """An ImageNet classifier around a backbone: its last feature map,
    global average pooling and a ``num_classes`` FC, as the ResNet
    classifiers whose parameters and FLOPs the papers publish."""

    def __init__(self, backbone: nn.Module, num_classes: int = 1000) -> None:
        super().__init__()
        self.backbone = backbone
        channels = getattr(backbone, 'feat_dim', None)
        if channels is None:  # not an mmdet ResNet: ask the backbone
            with torch.no_grad():
                channels = backbone(torch.zeros(1, 3, 64, 64))[-1].shape[1]
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.backbone(x)[-1]  # (B, C, h, w), the last stage
        return self.fc(feat.mean(dim=(2, 3)))  # (B, num_classes)


def classifier_complexity(backbone_cfg: dict,
                          input_size: Size = (224, 224),
                          num_classes: int = 1000) -> Complexity:
    """Complexity of the ImageNet classifier built on ``backbone_cfg``
    (last stage, GAP, FC) for one ``input_size`` = (H, W) image.

    Results are cached per (config, size, classes) within the process:
    they depend on nothing else, and the model zoo and ``get_flops.py``
    measure the same backbones."""
    key = json.dumps([_plain(backbone_cfg), list(input_size), num_classes],
                     sort_keys=True, default=repr)
    if key not in _CLASSIFIER_CACHE:
        backbone = build_backbone(dict(backbone_cfg, out_indices=(
            backbone_cfg.get('num_stages', 4) - 1, )))
        model = ImageClassifier(backbone, num_classes)
        _CLASSIFIER_CACHE[key] = measure(model, _image(input_size))
    return copy.deepcopy(_CLASSIFIER_CACHE[key])


_CLASSIFIER_CACHE: Dict[str, Complexity] = {}


def _plain(value: Any) -> Any:
    """``value`` with ConfigDicts and tuples as dicts and lists, and no
    weight-loading keys (a cache key)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()
                if k not in ('init_cfg', 'pretrained')}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def backbone_complexity(backbone_cfg: dict,
                        input_size: Size = (800, 1333)) -> Complexity:
    """Complexity of the backbone alone on one (H, W) image."""
    return measure(build_backbone(backbone_cfg), _image(input_size))


def _image(size: Size) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, *size, generator=gen)


def padded_size(size: Size, divisor: int) -> Size:
    """``size`` rounded up to multiples of ``divisor`` (the detector's
    data preprocessor pads its batch that way)."""
    return tuple(-(-s // divisor) * divisor for s in size)


class _TensorForward(nn.Module):
    """A detector's ``forward(inputs, data_samples, mode='tensor')`` as a
    one-input module, which jit tracing needs (mmdet's ``get_flops.py``
    does the same with a partial)."""

    def __init__(self, detector: nn.Module, data_samples: list) -> None:
        super().__init__()
        self.detector = detector
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor):
        return self.detector(inputs, self.data_samples, mode='tensor')


#: Parts of a detector reported separately.
DETECTOR_PARTS = ('backbone', 'neck', 'rpn_head', 'roi_head', 'bbox_head')


def detector_complexity(model_cfg: dict,
                        input_size: Size = (800, 1333)) -> Complexity:
    """Complexity of a whole detector on one image of ``input_size`` =
    (H, W), padded as its data preprocessor pads (``pad_size_divisor``).

    The forward is mmdet's ``mode='tensor'`` (what ``tools/analysis_tools/
    get_flops.py`` of mmdet measures): backbone, neck and heads, with the
    RoI heads of two-stage detectors run on the proposals of the RPN. The
    number of proposals that survive NMS depends on the (random) weights
    and input, both seeded here. :attr:`Complexity.by_module` holds the
    backbone, neck and heads (``(params, FLOPs)`` each).
    """
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = copy.deepcopy(dict(model_cfg))
    backbone = dict(cfg['backbone'])
    backbone.pop('init_cfg', None)
    backbone.pop('pretrained', None)
    cfg['backbone'] = backbone
    torch.manual_seed(0)
    detector = MODELS.build(cfg)
    divisor = getattr(detector.data_preprocessor, 'pad_size_divisor', 1)
    h, w = input_size
    pad_h, pad_w = padded_size(input_size, divisor)
    inputs = torch.zeros(1, 3, pad_h, pad_w)
    inputs[..., :h, :w] = _image(input_size)
    sample = DetDataSample(metainfo=dict(
        img_shape=(h, w), ori_shape=(h, w), pad_shape=(pad_h, pad_w),
        batch_input_shape=(pad_h, pad_w), scale_factor=(1., 1.)))
    wrapper = _TensorForward(detector, [sample])
    parts = [f'detector.{p}' for p in DETECTOR_PARTS
             if getattr(detector, p, None) is not None]
    result = measure(wrapper, inputs, scope='detector', parts=parts)
    result.by_module = {name[len('detector.'):]: value
                        for name, value in result.by_module.items()}
    return result


__all__ = [
    'AttentionFlopAnalyzer', 'Complexity', 'measure', 'attention_classes',
    'attention_modules', 'build_backbone', 'ImageClassifier',
    'classifier_complexity', 'backbone_complexity', 'detector_complexity',
    'padded_size', 'EXTRA_HANDLES', 'ELEMENTWISE_OPS', 'REDUCTION_OPS',
    'FREE_OPS'
]
