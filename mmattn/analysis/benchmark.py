"""Speed and memory of the attention modules, measured against the memory
floor and against peer implementations in the same run.

Three levels (issue 7):

* ``module``: each attention module on detection feature maps (batch 2,
  the four ResNet-50 stage outputs of an 800 x 1333 image), forward and
  forward + backward, against (a) the *memory floor*, one copy of the input
  (forward) or one copy forward plus one copy backward (forward +
  backward), and (b) the *peer*: timm's or mmcv's implementation of the same
  module, or, where neither has it, an eager transcription of the official
  code kept below as the baseline (the ``_Official*`` classes);
* ``backbone``: a ResNet-50 train step (forward + backward, batch 2,
  320 x 320) with the module after conv3 of every bottleneck (in mmattn's
  ``AttentionResNet``, as the SE / ECA configs build it), against plain
  mmdet ResNet-50;
* ``detector``: a Faster R-CNN R50-FPN train iteration (loss, backward) with
  the module after conv3 (``AttentionResNet`` backbone), against the plain
  detector.

Each level can also measure the modules compiled
(:func:`~mmattn.models.compiled.compile_attention`, rows marked
``compiled``), beside the same peer or plain model, measured in the same
rounds. The backbone and detector levels have a ``floor`` row: the network
with a module that only copies its input forward and its gradient backward
(:class:`CopyFloor`), what a gate that reads and writes the map once each
way cannot go below.

**Timing.** Every run is repeated and the median reported. The module, its
peer and the floor (or the plain model) are measured *interleaved*, one run
of each per round, so that machine noise hits all of them alike; a time
ratio is the median of the per-round ratios (:meth:`Row.ratio`). Forward is
timed in train mode with autograd off (``torch.no_grad``); forward +
backward with autograd on, backward from a fixed random output gradient.

**Peak memory** is the high-water mark of the bytes allocated *during* one
call, above what was allocated before it (the input and output gradient are
allocated beforehand and not counted). On CUDA it is
``torch.cuda.max_memory_allocated`` minus the allocation at the start. On
CPU, where torch keeps no allocator statistics, it is computed from the
allocation and free events that ``torch.profiler.profile(profile_memory=
True)`` records (every CPU tensor allocation, forward and backward
threads): the maximum of their running sum. The memory run is a separate,
untimed call, so the profiler's overhead never enters the times. The
profiler does not see the allocations of compiled (Inductor) code, so
compiled rows report no peak memory on the CPU.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

Shape = Tuple[int, int, int, int]

#: Batch 2, the four ResNet-50 stage outputs of an 800 x 1333 image.
DETECTION_SHAPES: Tuple[Shape, ...] = ((2, 256, 200, 334), (2, 512, 100, 167),
                                       (2, 1024, 50, 84), (2, 2048, 25, 42))
#: Small maps with the same channel widths, for ``--quick``.
QUICK_SHAPES: Tuple[Shape, ...] = ((2, 256, 40, 64), (2, 512, 20, 32),
                                   (2, 1024, 10, 16), (2, 2048, 5, 8))
#: The self-attention shape of the issue's target 3 (a 100 x 168 map).
SELF_ATTENTION_SHAPES: Tuple[Shape, ...] = ((1, 256, 100, 168), )
QUICK_SELF_ATTENTION_SHAPES: Tuple[Shape, ...] = ((1, 256, 24, 40), )

FWD = 'fwd'
FWD_BWD = 'fwd+bwd'
TRAIN = 'train'


# --------------------------------------------------------------------------
# transcriptions of the official code: the peers where timm and mmcv have
# none (eager PyTorch, as the authors wrote it)
# --------------------------------------------------------------------------
class _OfficialSimAM(nn.Module):
    """SimAM, ZjjConan/SimAM ``simam_module``."""

    def __init__(self, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[2] * x.shape[3] - 1
        d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        y = d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n +
                      self.e_lambda)) + 0.5
        return x * torch.sigmoid(y)


class _OfficialSGE(nn.Module):
    """SGE, implus/PytorchInsight ``SpatialGroupEnhance``."""

    def __init__(self, groups: int = 64) -> None:
        super().__init__()
        self.groups = groups
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.view(b * self.groups, -1, h, w)
        xn = (x * F.adaptive_avg_pool2d(x, 1)).sum(dim=1, keepdim=True)
        t = xn.view(b * self.groups, -1)
        t = t - t.mean(dim=1, keepdim=True)
        t = t / (t.std(dim=1, keepdim=True) + 1e-5)
        t = t.view(b, self.groups, h, w) * self.weight + self.bias
        x = x * torch.sigmoid(t.view(b * self.groups, 1, h, w))
        return x.view(b, c, h, w)


class _OfficialNAM(nn.Module):
    """NAM channel gate, Christian-lyc/NAM ``Channel_Att``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn2 = nn.BatchNorm2d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.bn2(x)
        weight_bn = self.bn2.weight.data.abs() / torch.sum(
            self.bn2.weight.data.abs())
        x = x.permute(0, 2, 3, 1).contiguous()
        x = torch.mul(weight_bn, x)
        x = x.permute(0, 3, 1, 2).contiguous()
        return torch.sigmoid(x) * residual


class _OfficialZPoolGate(nn.Module):
    """Z-pool, 7x7 conv, BN, sigmoid, multiply (landskape-ai
    ``AttentionGate``; Jongchan ``SpatialGate``)."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2,
                              bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((torch.max(x, 1)[0].unsqueeze(1),
                            torch.mean(x, 1).unsqueeze(1)), dim=1)
        return x * torch.sigmoid(self.bn(self.conv(pooled)))


class _OfficialTriplet(nn.Module):
    """Triplet attention, landskape-ai/triplet-attention."""

    def __init__(self) -> None:
        super().__init__()
        self.cw = _OfficialZPoolGate()
        self.hc = _OfficialZPoolGate()
        self.hw = _OfficialZPoolGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_out1 = self.cw(x.permute(0, 2, 1, 3).contiguous())
        x_out11 = x_out1.permute(0, 2, 1, 3).contiguous()
        x_out2 = self.hc(x.permute(0, 3, 2, 1).contiguous())
        x_out21 = x_out2.permute(0, 3, 2, 1).contiguous()
        return 1 / 3 * (self.hw(x) + x_out11 + x_out21)


class _OfficialBAM(nn.Module):
    """BAM, Jongchan/attention-module ``MODELS/bam.py`` (global pooling
    over H x W, so that non-square maps work)."""

    def __init__(self, channels: int, reduction: int = 16,
                 dilation: int = 4) -> None:
        super().__init__()
        rd = channels // reduction
        self.channel = nn.Sequential(nn.Linear(channels, rd),
                                     nn.BatchNorm1d(rd), nn.ReLU(),
                                     nn.Linear(rd, channels))
        layers = [nn.Conv2d(channels, rd, 1), nn.BatchNorm2d(rd), nn.ReLU()]
        for _ in range(2):
            layers += [nn.Conv2d(rd, rd, 3, padding=dilation,
                                 dilation=dilation),
                       nn.BatchNorm2d(rd), nn.ReLU()]
        layers.append(nn.Conv2d(rd, 1, 1))
        self.spatial = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x, x.shape[2:], stride=x.shape[2:])
        channel_att = self.channel(pooled.flatten(1))
        channel_att = channel_att.unsqueeze(2).unsqueeze(3).expand_as(x)
        spatial_att = self.spatial(x).expand_as(x)
        return (1 + torch.sigmoid(channel_att * spatial_att)) * x


class _OfficialFca(nn.Module):
    """FcaNet, cfzd/FcaNet ``MultiSpectralAttentionLayer``, with the DCT
    filters of an mmattn module of the same width."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        from mmattn.models.attention import MultiSpectralAttention
        reference = MultiSpectralAttention(channels)
        self.dct_h, self.dct_w = reference.dct_size
        self.register_buffer('weight', reference.dct_filter.clone())
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False),
            nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x_pooled = x
        if h != self.dct_h or w != self.dct_w:
            x_pooled = F.adaptive_avg_pool2d(x, (self.dct_h, self.dct_w))
        y = torch.sum(x_pooled * self.weight, dim=[2, 3])
        y = self.fc(y).view(n, c, 1, 1)
        return x * y.expand_as(x)


class _OfficialPAM(nn.Module):
    """DANet position attention, junfu1115/DANet ``PAM_Module``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query_conv = nn.Conv2d(channels, channels // 8, 1)
        self.key_conv = nn.Conv2d(channels, channels // 8, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        proj_query = self.query_conv(x).view(b, -1, w * h).permute(0, 2, 1)
        proj_key = self.key_conv(x).view(b, -1, w * h)
        attention = torch.softmax(torch.bmm(proj_query, proj_key), dim=-1)
        proj_value = self.value_conv(x).view(b, -1, w * h)
        out = torch.bmm(proj_value, attention.permute(0, 2, 1))
        return self.gamma * out.view(b, c, h, w) + x


class _OfficialCAM(nn.Module):
    """DANet channel attention, junfu1115/DANet ``CAM_Module``."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        proj_query = x.view(b, c, -1)
        energy = torch.bmm(proj_query, x.view(b, c, -1).permute(0, 2, 1))
        energy_new = torch.max(energy, -1, keepdim=True)[0].expand_as(
            energy) - energy
        attention = torch.softmax(energy_new, dim=-1)
        out = torch.bmm(attention, x.view(b, c, -1)).view(b, c, h, w)
        return self.gamma * out + x


class _OfficialDANet(nn.Module):
    """Both DANet branches on one input, summed as mmattn's
    ``DualAttention`` sums them: ``PAM(x) + CAM(x) - x``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pam = _OfficialPAM(channels)
        self.cam = _OfficialCAM()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pam(x) + self.cam(x) - x


class _RecurrentMMCVCrissCross(nn.Module):
    """mmcv's one-pass ``CrissCrossAttention`` applied twice with shared
    weights: CCNet's R = 2 recurrence, mmattn's default."""

    def __init__(self, channels: int, recurrence: int = 2) -> None:
        super().__init__()
        from mmcv.ops import CrissCrossAttention
        self.block = CrissCrossAttention(channels)
        self.recurrence = recurrence

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.recurrence):
            x = self.block(x)
        return x


class _OfficialPSA(nn.Module):
    """EPSANet ``PSAModule`` (murufeng/EPSANet), stride 1."""

    def __init__(self, in_channels: int, channels: int,
                 kernels: Sequence[int] = (3, 5, 7, 9),
                 groups: Sequence[int] = (1, 4, 8, 16)) -> None:
        super().__init__()
        self.split_channel = channels // 4
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, self.split_channel, k, padding=k // 2,
                      groups=g, bias=False) for k, g in zip(kernels, groups))
        rd = self.split_channel // 16
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                nn.Conv2d(self.split_channel, rd, 1),
                                nn.ReLU(inplace=True),
                                nn.Conv2d(rd, self.split_channel, 1),
                                nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        xs = [conv(x) for conv in self.convs]
        feats = torch.cat(xs, dim=1)
        feats = feats.view(b, 4, self.split_channel, feats.shape[2],
                           feats.shape[3])
        x_se = torch.cat([self.se(xi) for xi in xs], dim=1)
        attention = torch.softmax(x_se.view(b, 4, self.split_channel, 1, 1),
                                  dim=1)
        feats_weight = feats * attention
        out = feats_weight[:, 0]
        for i in range(1, 4):
            out = torch.cat((feats_weight[:, i], out), 1)
        return out


class _CopyFunction(torch.autograd.Function):
    """One copy of the input forward, one copy of the gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clone()


class CopyFloor(nn.Module):
    """The memory floor as a plugin: the output is a copy of the input, the
    input gradient a copy of the output gradient (``clone``'s own backward
    would pass the gradient through without a copy). A network with it
    after every conv3 costs what any module that reads and writes the full
    map once each way costs at least."""

    _abbr_ = 'copy_floor'

    def __init__(self, in_channels: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _CopyFunction.apply(x)


# --------------------------------------------------------------------------
# what is benchmarked
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class ModuleSpec:
    """One attention module of the benchmark and its peer.

    Attributes:
        name: Name in tables and on the command line.
        build: ``channels -> module`` (mmattn's implementation).
        peer: Name of the peer implementation, for the tables.
        build_peer: ``channels -> module`` (the peer).
        kind: ``'gate'`` (runs on the detection shapes), ``'conv'`` (a conv2
            replacement: runs on the bottleneck widths, C / 4),
            ``'self_attention'`` (runs on :data:`SELF_ATTENTION_SHAPES`) or
            ``'floor'`` (:class:`CopyFloor`: backbone and detector levels
            only).
        plugin: mmdet ResNet plugin config for the backbone and detector
            levels; None keeps the module out of them.
    """

    name: str
    build: Callable[[int], nn.Module]
    peer: str
    build_peer: Callable[[int], nn.Module]
    kind: str = 'gate'
    plugin: Optional[dict] = None


def _timm(name: str, **kwargs) -> Callable[[int], nn.Module]:
    def build(channels: int) -> nn.Module:
        import timm.layers
        return timm.layers.get_attn(name)(channels, **kwargs)
    return build


def _registered(type_name: str, **kwargs) -> Callable[[int], nn.Module]:
    def build(channels: int) -> nn.Module:
        from mmattn.registry import MODELS
        return MODELS.build(dict(type=type_name, in_channels=channels,
                                 **kwargs))
    return build


def _sk(channels: int) -> nn.Module:
    from mmattn.models.backbones.sk import SKConv
    return SKConv(channels, channels)


def _timm_sk(channels: int) -> nn.Module:
    from timm.layers import SelectiveKernel
    return SelectiveKernel(channels, channels, rd_ratio=1 / 16,
                           rd_divisor=1, split_input=False)


def _psa(channels: int) -> nn.Module:
    from mmattn.models.backbones.psa import PSAConv
    return PSAConv(channels, channels)


def _mmcv_context_block(channels: int) -> nn.Module:
    from mmcv.cnn import ContextBlock
    return ContextBlock(channels, ratio=1 / 16)


def _mmcv_non_local(channels: int) -> nn.Module:
    from mmcv.cnn import NonLocal2d
    return NonLocal2d(channels)


MODULES: Dict[str, ModuleSpec] = {
    spec.name: spec
    for spec in (
        ModuleSpec('floor', CopyFloor, 'one copy each way', CopyFloor,
                   kind='floor', plugin=dict(type=CopyFloor)),
        ModuleSpec('SE', _registered('SE'), 'timm SEModule',
                   _timm('se', rd_divisor=1), plugin=dict(type='SE')),
        ModuleSpec('ECA', _registered('ECA'), 'timm EcaModule',
                   _timm('eca'), plugin=dict(type='ECA')),
        ModuleSpec('CBAM', _registered('CBAM'), 'timm CbamModule',
                   _timm('cbam', mlp_bias=True), plugin=dict(type='CBAM')),
        ModuleSpec('BAM', _registered('BAM'), 'official (eager)',
                   _OfficialBAM, plugin=dict(type='BAM')),
        ModuleSpec('NAM', _registered('NAM'), 'official (eager)',
                   _OfficialNAM, plugin=dict(type='NAM')),
        ModuleSpec('SGE', _registered('SGE'), 'official (eager)',
                   lambda c: _OfficialSGE(), plugin=dict(type='SGE')),
        ModuleSpec('SimAM', _registered('SimAM'), 'official (eager)',
                   lambda c: _OfficialSimAM(), plugin=dict(type='SimAM')),
        ModuleSpec('GE', _registered('GatherExcite'), 'timm GatherExcite',
                   _timm('ge', use_mlp=False),
                   plugin=dict(type='GatherExcite')),
        ModuleSpec('FcaNet', _registered('MultiSpectralAttention'),
                   'official (eager)', _OfficialFca,
                   plugin=dict(type='MultiSpectralAttention')),
        ModuleSpec('Coordinate', _registered('CoordAttention'),
                   'timm CoordAttn',
                   _timm('coord', rd_ratio=1 / 32, rd_divisor=1, bias=True),
                   plugin=dict(type='CoordAttention')),
        ModuleSpec('Triplet', _registered('TripletAttention'),
                   'official (eager)', lambda c: _OfficialTriplet(),
                   plugin=dict(type='TripletAttention')),
        ModuleSpec('GC', _registered('GlobalContext'), 'mmcv ContextBlock',
                   _mmcv_context_block, plugin=dict(type='GlobalContext')),
        ModuleSpec('GC-vs-timm', _registered('GlobalContext'),
                   'timm GlobalContext',
                   _timm('gc', rd_ratio=1 / 16, fuse_add=True,
                         fuse_scale=False, init_last_zero=True)),
        ModuleSpec('NonLocal', _registered('NonLocal'), 'mmcv NonLocal2d',
                   _mmcv_non_local, kind='self_attention'),
        ModuleSpec('DANet', _registered('DualAttention'),
                   'official (eager)', _OfficialDANet,
                   kind='self_attention'),
        ModuleSpec('DANet-PAM', _registered('DualAttention', mode='position'),
                   'official (eager)', _OfficialPAM, kind='self_attention'),
        ModuleSpec('CCNet', _registered('CrissCrossAttention'),
                   'mmcv CrissCrossAttention x2', _RecurrentMMCVCrissCross,
                   kind='self_attention'),
        # issue 7's target 3: the other self-attentions against NonLocal2d
        ModuleSpec('DANet-PAM-vs-NL', _registered('DualAttention',
                                                  mode='position'),
                   'mmcv NonLocal2d', _mmcv_non_local, kind='self_attention'),
        ModuleSpec('CCNet-vs-NL', _registered('CrissCrossAttention'),
                   'mmcv NonLocal2d', _mmcv_non_local, kind='self_attention'),
        ModuleSpec('SK', _sk, 'timm SelectiveKernel', _timm_sk, kind='conv'),
        ModuleSpec('EPSA', _psa, 'official (eager)',
                   lambda c: _OfficialPSA(c, c), kind='conv'),
    )
}

#: Modules of the detector level (the issue's list, and the floor).
DETECTOR_MODULES = ('floor', 'ECA', 'SE', 'CBAM')


def module_shapes(spec: ModuleSpec, shapes: Sequence[Shape],
                  quick: bool) -> List[Shape]:
    """The input shapes of ``spec``: ``shapes`` for gates, the bottleneck
    widths (C / 4) of ``shapes`` for conv replacements, the
    self-attention shape(s) for self-attention modules, none for the
    floor (the module level has its own)."""
    if spec.kind == 'floor':
        return []
    if spec.kind == 'self_attention':
        return list(QUICK_SELF_ATTENTION_SHAPES if quick else
                    SELF_ATTENTION_SHAPES)
    if spec.kind == 'conv':
        return [(b, c // 4, h, w) for b, c, h, w in shapes]
    return list(shapes)


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes (device synchronised)."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Bytes allocated at the high-water mark of one call of ``fn``, above
    what was allocated when it started (see the module docstring)."""
    if device.type == 'cuda':
        _sync(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - start
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as p:
        fn()
    events = sorted((e.start_ns(), e.nbytes())
                    for e in p.profiler.kineto_results.events()
                    if e.name() == '[memory]')
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


@dataclass
class Measurement:
    """Times (s) of the timed rounds, in round order, and peak memory
    (bytes; None where it cannot be measured) of one implementation in one
    mode."""

    times: Tuple[float, ...]
    peak_bytes: Optional[int]

    @property
    def time_s(self) -> float:
        """Median time over the rounds."""
        return statistics.median(self.times)


def measure_interleaved(fns: Dict[str, Callable[[], object]],
                        repeat: int,
                        device: torch.device,
                        warmup: int = 1,
                        no_memory: Sequence[str] = ()
                        ) -> Dict[str, Measurement]:
    """Time the callables of ``fns`` in rounds (one call of each per round,
    the order rotating from round to round) and take each one's peak
    memory in one extra, untimed call.

    Args:
        fns: Label -> callable.
        repeat: Number of timed rounds; the median is reported.
        device: Device the callables run on (for synchronisation and the
            memory statistics).
        warmup: Untimed rounds first (lazy initialisation, compilation,
            caches).
        no_memory: Labels whose peak memory is not taken (None).

    Returns:
        dict: Label -> :class:`Measurement`.
    """
    labels = list(fns)
    for _ in range(warmup):
        for label in labels:
            fns[label]()
    times: Dict[str, List[float]] = {label: [] for label in labels}
    for round_ in range(repeat):
        shift = round_ % len(labels)
        for label in labels[shift:] + labels[:shift]:
            times[label].append(time_call(fns[label], device))
    return {
        label: Measurement(
            tuple(times[label]), None if label in no_memory else
            peak_memory(fns[label], device))
        for label in labels
    }


def _forward(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> None:
        with torch.no_grad():
            module(x)
    return run


def _free_gradients(model: nn.Module, *inputs: torch.Tensor) -> None:
    """Drops the gradients a call of a training step wrote, at its end: a
    measured call then frees nothing that it did not allocate. Freed at the
    start of the next call instead, the gradients of one profiled call
    would count against the next one (:func:`peak_memory`): the profiler
    keeps the sizes of the blocks it saw allocated, so that call's peak
    came out one full-size input gradient low (a peer measured after the
    module, the second of two calls)."""
    model.zero_grad(set_to_none=True)
    for x in inputs:
        x.grad = None


def _forward_backward(module: nn.Module, x: torch.Tensor,
                      grad: torch.Tensor) -> Callable[[], object]:
    def run() -> None:
        module(x).backward(grad)
        _free_gradients(module, x)
    return run


def _floor_forward(x: torch.Tensor) -> Callable[[], object]:
    def run() -> None:
        torch.empty_like(x).copy_(x)
    return run


def _floor_forward_backward(x: torch.Tensor,
                            grad: torch.Tensor) -> Callable[[], object]:
    def run() -> None:
        out = torch.empty_like(x).copy_(x)  # forward: one copy of x
        torch.empty_like(grad).copy_(grad)  # backward: one copy of grad
        del out
    return run


@dataclass
class Row:
    """Measurements of one module (or model) in one setting.

    Attributes:
        level: ``'module'``, ``'backbone'`` or ``'detector'``.
        name: Module name (``'plain'`` is never a row: it is the peer of
            the backbone and detector levels).
        setting: Input shape or image size, as text.
        peer: Name of what :attr:`peer_runs` measured.
        runs: Mode -> measurement of mmattn's implementation.
        peer_runs: Mode -> measurement of the peer (or plain model).
        floor_runs: Mode -> measurement of the memory floor (module level
            only).
        compiled: Whether mmattn's modules ran compiled
            (:func:`~mmattn.models.compiled.compile_attention`).
    """

    level: str
    name: str
    setting: str
    peer: str
    runs: Dict[str, Measurement]
    peer_runs: Dict[str, Measurement]
    floor_runs: Dict[str, Measurement] = field(default_factory=dict)
    compiled: bool = False

    @property
    def label(self) -> str:
        """The name, marked ``compiled`` for a compiled run."""
        return f'{self.name} compiled' if self.compiled else self.name

    def ratio(self, mode: str, quantity: str, against: str) -> float:
        """``quantity`` (``'time'`` or ``'memory'``) of ``mode`` relative
        to ``against`` (``'floor'`` or ``'peer'``); NaN if not measured.

        A time ratio is the median of the per-round ratios: the two calls
        of a round ran back to back, so a slow stretch of the machine
        (another process, frequency scaling) divides out, where a ratio of
        medians would take it in whole when it hits more rounds of one
        side."""
        reference = (self.floor_runs if against == 'floor' else
                     self.peer_runs).get(mode)
        if reference is None or mode not in self.runs:
            return math.nan
        if quantity == 'time':
            return statistics.median(
                t / r if r else math.nan
                for t, r in zip(self.runs[mode].times, reference.times))
        numerator, denominator = self.runs[mode].peak_bytes, \
            reference.peak_bytes
        if numerator is None or not denominator:
            return math.nan
        return numerator / denominator


def _train_mode(module: nn.Module) -> nn.Module:
    """``module`` in train mode (mmdet's ResNet.train returns None)."""
    module.train()
    return module


def _shape_text(shape: Sequence[int]) -> str:
    return 'x'.join(str(s) for s in shape)


def _maybe_compiled(model: nn.Module, compiled: bool) -> nn.Module:
    """``model``, its attention modules compiled if ``compiled``."""
    if compiled:
        from mmattn.models.compiled import compile_attention
        if not compile_attention(model):
            raise ValueError(f'{type(model).__name__} holds no attention '
                             f'module to compile')
    return model


def _memory_unseen(compiled: bool, device: torch.device) -> Tuple[str, ...]:
    """The labels whose memory :func:`peak_memory` cannot see: compiled
    code on the CPU (see the module docstring)."""
    return ('module', ) if compiled and device.type == 'cpu' else ()


def benchmark_module(spec: ModuleSpec, shape: Shape, repeat: int,
                     device: torch.device, compiled: bool = False) -> Row:
    """Forward and forward + backward of ``spec``'s module (compiled if
    ``compiled``), its peer and the memory floor on one input shape,
    interleaved (see :func:`measure_interleaved`). Both implementations run
    in train mode with the same input and output gradient."""
    torch.manual_seed(0)
    channels = shape[1]
    module = _train_mode(_maybe_compiled(spec.build(channels).to(device),
                                         compiled))
    peer = _train_mode(spec.build_peer(channels).to(device))
    x = torch.randn(shape, device=device)
    grad = torch.randn(shape, device=device)
    unseen = _memory_unseen(compiled, device)
    fwd = measure_interleaved(
        {'module': _forward(module, x), 'peer': _forward(peer, x),
         'floor': _floor_forward(x)}, repeat, device, no_memory=unseen)
    x.requires_grad_(True)
    fwd_bwd = measure_interleaved(
        {'module': _forward_backward(module, x, grad),
         'peer': _forward_backward(peer, x, grad),
         'floor': _floor_forward_backward(x, grad)}, repeat, device,
        no_memory=unseen)
    pick = {label: {FWD: fwd[label], FWD_BWD: fwd_bwd[label]}
            for label in ('module', 'peer', 'floor')}
    return Row('module', spec.name, _shape_text(shape), spec.peer,
               pick['module'], pick['peer'], pick['floor'], compiled)


def _plugin_resnet(plugin: Optional[dict]) -> nn.Module:
    """Plain mmdet ResNet-50, or mmattn's ``AttentionResNet`` (mmdet's
    with the lean channel-gate path) with ``plugin`` after every conv3."""
    from mmdet.models.backbones import ResNet

    from mmattn.models.backbones import AttentionResNet
    if plugin is None:
        return ResNet(depth=50)
    return AttentionResNet(
        depth=50, plugins=[dict(cfg=dict(plugin), position='after_conv3')])


def _backbone_step(model: nn.Module,
                   images: torch.Tensor) -> Callable[[], object]:
    def run() -> None:
        loss = sum(out.mean() for out in model(images))
        loss.backward()
        _free_gradients(model)
    return run


def _versus_plain(level: str, spec: ModuleSpec,
                  build: Callable[[Optional[dict]], nn.Module],
                  step: Callable[[nn.Module, object], Callable[[], object]],
                  inputs: object, shape: str, peer: str, repeat: int,
                  device: torch.device, compiled: bool) -> Row:
    """One train step of ``build(spec.plugin)`` (its attention compiled if
    ``compiled``) interleaved with the same step of ``build(None)`` (the
    network without attention)."""
    torch.manual_seed(0)
    model = _train_mode(_maybe_compiled(build(spec.plugin).to(device),
                                        compiled))
    plain = _train_mode(build(None).to(device))
    runs = measure_interleaved(
        {'module': step(model, inputs), 'plain': step(plain, inputs)},
        repeat, device, no_memory=_memory_unseen(compiled, device))
    return Row(level, spec.name, shape, peer, {TRAIN: runs['module']},
               {TRAIN: runs['plain']}, compiled=compiled)


def benchmark_backbone(spec: ModuleSpec, image_size: Tuple[int, int],
                       repeat: int, device: torch.device,
                       batch_size: int = 2, compiled: bool = False) -> Row:
    """A ResNet-50 train step (forward, backward of the mean of the four
    stage outputs) with ``spec``'s plugin after conv3 of every bottleneck
    (:func:`_plugin_resnet`; compiled if ``compiled``), interleaved with
    the same step of plain mmdet ResNet-50."""
    torch.manual_seed(0)
    images = torch.randn(batch_size, 3, *image_size, device=device)
    return _versus_plain('backbone', spec, _plugin_resnet, _backbone_step,
                         images, f'{batch_size}x3x{_shape_text(image_size)}',
                         'mmdet ResNet-50', repeat, device, compiled)


def _faster_rcnn(plugin: Optional[dict]) -> nn.Module:
    import os.path as osp

    import mmdet
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmattn.registry import MODELS
    init_default_scope('mmdet')
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs',
                    'faster_rcnn', 'faster-rcnn_r50_fpn_1x_coco.py')
    cfg = Config.fromfile(path).model
    cfg.backbone.init_cfg = None
    if plugin is not None:
        cfg.backbone.type = 'AttentionResNet'
        cfg.backbone.plugins = [dict(cfg=dict(plugin), position='after_conv3')]
    return MODELS.build(cfg)


def _detector_step(model: nn.Module, data: dict) -> Callable[[], object]:
    def run() -> None:
        torch.manual_seed(0)  # the same RPN / RoI samples every call
        batch = model.data_preprocessor(data, True)
        loss, _ = model.parse_losses(model(**batch, mode='loss'))
        loss.backward()
        _free_gradients(model)
    return run


def benchmark_detector(spec: ModuleSpec, image_size: Tuple[int, int],
                       repeat: int, device: torch.device,
                       batch_size: int = 2, compiled: bool = False) -> Row:
    """A Faster R-CNN R50-FPN train iteration (data preprocessing, losses,
    backward) with ``spec``'s plugin after conv3 (compiled if
    ``compiled``), interleaved with the plain detector, on random images
    with 3 random boxes each."""
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(0)
    data = demo_mm_inputs(batch_size, image_shapes=(3, *image_size),
                          num_items=[3] * batch_size, num_classes=80)
    return _versus_plain('detector', spec, _faster_rcnn, _detector_step,
                         data, f'{batch_size}x3x{_shape_text(image_size)}',
                         'mmdet Faster R-CNN R50-FPN', repeat, device,
                         compiled)


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------
def _ms(m: Optional[Measurement]) -> str:
    return '' if m is None else f'{m.time_s * 1e3:.1f}'


def _mb(m: Optional[Measurement]) -> str:
    if m is None or m.peak_bytes is None:
        return ''
    return f'{m.peak_bytes / 2**20:.1f}'


def _x(value: float) -> str:
    return 'n/a' if math.isnan(value) else f'{value:.2f}'


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as markdown: one table per level, absolute numbers and the
    ratios to the floor and to the peer."""
    parts = []
    module_rows = [r for r in rows if r.level == 'module']
    if module_rows:
        header = ['module', 'input', 'peer']
        for mode in (FWD, FWD_BWD):
            header += [f'{mode} ms', f'{mode} time / floor',
                       f'{mode} time / peer', f'{mode} peak MB',
                       f'{mode} mem / floor', f'{mode} mem / peer']
        lines = ['| ' + ' | '.join(header) + ' |',
                 '|' + ' --- |' * len(header)]
        for r in module_rows:
            cells = [r.label, r.setting, r.peer]
            for mode in (FWD, FWD_BWD):
                cells += [_ms(r.runs.get(mode)),
                          _x(r.ratio(mode, 'time', 'floor')),
                          _x(r.ratio(mode, 'time', 'peer')),
                          _mb(r.runs.get(mode)),
                          _x(r.ratio(mode, 'memory', 'floor')),
                          _x(r.ratio(mode, 'memory', 'peer'))]
            lines.append('| ' + ' | '.join(cells) + ' |')
        parts.append('\n'.join(lines))
    for level in ('backbone', 'detector'):
        level_rows = [r for r in rows if r.level == level]
        if not level_rows:
            continue
        header = [level, 'input', 'train step ms', 'plain ms',
                  'time / plain', 'peak MB', 'plain peak MB',
                  'mem / plain']
        lines = ['| ' + ' | '.join(header) + ' |',
                 '|' + ' --- |' * len(header)]
        for r in level_rows:
            lines.append('| ' + ' | '.join([
                f'{r.label} vs {r.peer}', r.setting, _ms(r.runs[TRAIN]),
                _ms(r.peer_runs[TRAIN]), _x(r.ratio(TRAIN, 'time', 'peer')),
                _mb(r.runs[TRAIN]), _mb(r.peer_runs[TRAIN]),
                _x(r.ratio(TRAIN, 'memory', 'peer'))]) + ' |')
        parts.append('\n'.join(lines))
    return '\n\n'.join(parts) + '\n'


def plot_ratios(rows: Sequence[Row], path: str) -> None:
    """Bar chart of the ratios (log scale, 1 marked): forward + backward
    time and peak memory against the floor and the peer for module rows,
    train step time and memory against the plain model for the others."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    series = []  # (label, mode, against)
    if any(r.level == 'module' for r in rows):
        series += [('time / floor', FWD_BWD, 'time', 'floor'),
                   ('time / peer', FWD_BWD, 'time', 'peer'),
                   ('mem / floor', FWD_BWD, 'memory', 'floor'),
                   ('mem / peer', FWD_BWD, 'memory', 'peer')]
    if any(r.level != 'module' for r in rows):
        series += [('time / plain', TRAIN, 'time', 'peer'),
                   ('mem / plain', TRAIN, 'memory', 'peer')]
    labels = [f'{r.label} {r.level} {r.setting}' for r in rows]
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6., 0.6 * len(rows) + 2), 5))
    for i, (label, mode, quantity, against) in enumerate(series):
        values = [r.ratio(mode, quantity, against) for r in rows]
        ax.bar([j + i * width for j in range(len(rows))],
               [0 if math.isnan(v) else v for v in values], width,
               label=f'{label} ({mode})')
    ax.axhline(1.0, color='black', linewidth=0.8)
    ax.set_yscale('log')
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))])
    ax.set_xticklabels(labels, rotation=60, ha='right', fontsize=7)
    ax.set_ylabel('ratio (log scale)')
    ax.set_title('mmattn attention cost (medians)')
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
