"""Attention maps as pictures: what each attention module of a backbone
does to one image, one figure per stage.

Maps are captured by forward hooks, without touching the modules' code,
and each module is read the way it acts on its input ``x``:

* **gates** (SE, ECA, CBAM, BAM, SGE, SimAM, NAM, Coordinate, Triplet,
  FcaNet, Gather-Excite, Residual Attention, ...) multiply their input:
  the map is the effective weight :math:`A = y / x` of every feature
  (channel x position), i.e. the factor by which the module scales it
  (1 = unchanged). Composite gates come out composed (CBAM:
  :math:`M_c \\cdot M_s`; BAM and Residual Attention: :math:`1 + M`).
  Where ``x`` is exactly 0 (after a ReLU) the weight is undefined and
  left out;
* **residual** modules (Non-local, DANet, CCNet, GC, mmcv's generalized
  attention) add a context term: the map is :math:`y - x`, what the
  module adds;
* **kernel selection** convs (SK, PSA) replace a 3x3 conv: the map is the
  softmax weight each channel gives each branch (kernel size/dilation).

From the weight of each module, its figure row shows the **spatial map**
(the weight averaged over channels, over the image; absent when the
weight does not vary over space, as for channel gates), the
**per-channel** weight (averaged over positions) and a histogram of the
per-channel values.
"""
from __future__ import annotations

import math
import os
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from .complexity import attention_modules, build_backbone

GATE, RESIDUAL, SELECTION = 'gate', 'residual', 'selection'

#: Relative tolerance below which a weight counts as constant over space.
UNIFORM_RTOL = 1e-5

#: Mean and std used when a config has no
#: ``data_preprocessor`` (ImageNet statistics on 0-255 RGB).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def _residual_classes() -> Tuple[type, ...]:
    from mmcv.cnn import ContextBlock, GeneralizedAttention
    from mmcv.cnn.bricks.non_local import _NonLocalNd

    from mmattn.models.attention import CrissCrossAttention, DualAttention
    return (_NonLocalNd, DualAttention, CrissCrossAttention, ContextBlock,
            GeneralizedAttention)


def _selection_classes() -> Tuple[type, ...]:
    from mmattn.models.backbones import PSAConv, SKConv
    return (SKConv, PSAConv)


def module_kind(module: nn.Module) -> str:
    """:data:`GATE`, :data:`RESIDUAL` or :data:`SELECTION`."""
    if isinstance(module, _selection_classes()):
        return SELECTION
    if isinstance(module, _residual_classes()):
        return RESIDUAL
    return GATE


@dataclass
class AttentionMap:
    """What one attention module did to the image.

    Attributes:
        name (str): Qualified name in the backbone, e.g. 'layer2.0.cbam'.
        type (str): The module's class name.
        stage (int): 1-based ResNet stage it belongs to (0: unknown).
        kind (str): :data:`GATE`, :data:`RESIDUAL` or :data:`SELECTION`.
        channel (ndarray): Per-channel value, (C,): the weight y/x (gate)
            or y - x (residual) averaged over positions; for a selection
            (M, C), the weight of each of the M branches.
        spatial (ndarray, optional): Spatial map over the image part of the
            feature map, (h', w'): y/x averaged over channels (gate) or
            mean |y - x| (residual); NaN where undefined. None when the
            weight is constant over space (and for selections).
        uniform (float, optional): The constant over space when
            ``spatial`` is None (mean over channels); None otherwise.
        feature_size (tuple): (h, w) of the module's feature map.
        cell (tuple): (height, width) of one feature cell in image pixels
            (the stride), so ``spatial`` covers
            ``spatial.shape * cell`` >= the image.
        channels (int): C.
        branches (list[str]): Branch labels of a selection.
    """

    name: str
    type: str
    stage: int
    kind: str
    channel: np.ndarray
    spatial: Optional[np.ndarray]
    uniform: Optional[float]
    feature_size: Tuple[int, int]
    cell: Tuple[float, float]
    channels: int
    branches: List[str] = field(default_factory=list)

    def extent(self) -> Tuple[float, float, float, float]:
        """(left, right, bottom, top) of ``spatial`` in image pixels, for
        ``imshow``; it may pass the image's right / bottom edge by less
        than a cell."""
        h, w = self.spatial.shape
        return (0., w * self.cell[1], h * self.cell[0], 0.)

    def spatial_on_image(self, size: Tuple[int, int]) -> np.ndarray:
        """The spatial map on the pixels of the image of ``size`` = (H, W)
        it was computed on: resized (bilinear) to its cells' extent, then
        cut to the image. Undefined cells take the map's mean."""
        import cv2
        if self.spatial is None:
            raise ValueError(f'{self.name} has no spatial map')
        data = self.spatial.astype(np.float32)
        finite = np.isfinite(data)
        fill = float(data[finite].mean()) if finite.any() else 0.
        data = np.where(finite, data, fill)
        _, right, bottom, _ = self.extent()
        full = cv2.resize(data, (round(right), round(bottom)),
                          interpolation=cv2.INTER_LINEAR)
        return full[:size[0], :size[1]]


# --------------------------------------------------------------------------
# capture
# --------------------------------------------------------------------------
def module_stage(name: str, backbone: nn.Module) -> int:
    """1-based stage of a module named ``name`` in ``backbone``:
    ``layer<k>.*`` is in stage k; an after-stage module of
    :class:`~mmattn.models.backbones.AttentionResNet` follows its stage."""
    match = re.match(r'layer(\d+)\.', name)
    if match:
        return int(match.group(1))
    for i, names in enumerate(getattr(backbone, 'after_stage_names', [])):
        if name in names:
            return i + 1
    return 0


def _is_uniform(per_channel_range: torch.Tensor, scale: float) -> bool:
    finite = per_channel_range[torch.isfinite(per_channel_range)]
    return finite.numel() == 0 or bool(
        finite.max() <= UNIFORM_RTOL * max(scale, 1e-12))


def _cells(image_size: Tuple[int, int], input_size: Tuple[int, int],
           feature_size: Tuple[int, int]) -> Tuple[tuple, tuple]:
    """Cell size (stride) in pixels, and how many rows / columns of a
    feature map touch the image (not only the padding)."""
    cell = (input_size[0] / feature_size[0], input_size[1] / feature_size[1])
    count = tuple(max(1, math.ceil(i / c - 1e-6))
                  for i, c in zip(image_size, cell))
    return cell, count


def _branch_label(conv: nn.Module) -> str:
    conv = getattr(conv, 'conv', conv)  # ConvModule -> Conv2d
    k, d, g = conv.kernel_size[0], conv.dilation[0], conv.groups
    return f'{k}x{k}' + (f' d{d}' if d > 1 else '') + (f' g{g}' if g > 1
                                                        else '')


class AttentionRecorder:
    """Forward hooks that record an :class:`AttentionMap` for every
    attention module of ``backbone`` (see the module docstring).

    Use as a context manager around the backbone's forward pass; maps are
    reduced in the hook, so no full-size tensor is kept. ``image_size`` is
    the (H, W) of the image inside the padded input of ``input_size``;
    spatial maps keep the cells that touch the image.
    """

    def __init__(self, backbone: nn.Module, image_size: Tuple[int, int],
                 input_size: Tuple[int, int]) -> None:
        self.backbone = backbone
        self.image_size = image_size
        self.input_size = input_size
        self.maps: List[AttentionMap] = []
        self._handles: list = []
        self._versions: Dict[str, int] = {}

    def __enter__(self) -> 'AttentionRecorder':
        for name, module in attention_modules(self.backbone).items():
            kind = module_kind(module)
            if kind == SELECTION:
                self._hook_selection(name, module)
            else:
                self._handles.append(module.register_forward_pre_hook(
                    self._remember_version(name)))
                self._handles.append(module.register_forward_hook(
                    self._make_hook(name, module, kind)))
        return self

    def _remember_version(self, name: str):
        """A pre-hook noting the input's version counter: a module that
        overwrites its input in place would leave nothing to compare its
        output with, and the map would be wrong."""

        def pre_hook(mod: nn.Module, args: tuple) -> None:
            self._versions[name] = args[0]._version

        return pre_hook

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _record(self, name: str, module: nn.Module, kind: str, **kwargs):
        self.maps.append(AttentionMap(
            name=name, type=type(module).__name__,
            stage=module_stage(name, self.backbone), kind=kind, **kwargs))

    def _make_hook(self, name: str, module: nn.Module, kind: str):

        def hook(mod: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if args[0]._version != self._versions.pop(name):
                raise RuntimeError(
                    f'{name} ({type(mod).__name__}) modified its input in '
                    f'place: its attention map cannot be read from input '
                    f'and output')
            x = args[0][0].detach().float()  # (C, h, w), first image
            y = output[0].detach().float()
            if kind == GATE:
                weight = torch.where(x != 0, y / x,
                                     torch.full_like(x, float('nan')))
                finite = weight[torch.isfinite(weight)]
                scale = float(finite.abs().max()) if finite.numel() else 1.
                shown = weight
            else:
                weight = y - x
                scale = float(x.abs().max() + weight.abs().max())
                shown = weight.abs()
            cell, (rows, cols) = _cells(self.image_size, self.input_size,
                                        tuple(x.shape[-2:]))
            weight = weight[:, :rows, :cols]  # (C, h', w'): on the image
            shown = shown[:, :rows, :cols]
            flat = weight.flatten(1)  # (C, h'*w')
            spread = flat.nan_to_num(float('-inf')).amax(1) - \
                flat.nan_to_num(float('inf')).amin(1)  # (C,)
            channel = flat.nanmean(dim=1)  # (C,)
            spatial = shown.nanmean(dim=0)  # (h', w')
            uniform = _is_uniform(spread, scale)
            self._record(
                name, mod, kind,
                channel=channel.numpy(),
                spatial=None if uniform else spatial.numpy(),
                uniform=float(channel.nanmean()) if uniform else None,
                feature_size=tuple(x.shape[-2:]), cell=cell,
                channels=x.shape[0])

        return hook

    def _hook_selection(self, name: str, module: nn.Module) -> None:
        """SK: softmax over the branches of ``fc_select``'s logits; PSA:
        softmax over the scales of the shared SE weights (``se``)."""
        from mmattn.models.backbones import SKConv
        if isinstance(module, SKConv):
            source, groups = module.fc_select, module.num_branches
            labels = [_branch_label(b) for b in module.branches]
        else:
            source, groups = module.se, len(module.convs)
            labels = [_branch_label(c) for c in module.convs]
        found: Dict[str, torch.Tensor] = {}

        def grab_logits(mod: nn.Module, args: tuple,
                        output: torch.Tensor) -> None:
            # SK: (B, M*C, 1, 1); PSA: (B*S, C', 1, 1) with the first
            # image's S rows first. Keep the first image's (M, C) logits.
            first = output[0] if isinstance(module, SKConv) else \
                output[:groups]
            found['logits'] = first.detach().float().reshape(groups, -1)

        def hook(mod: nn.Module, args: tuple, output: torch.Tensor) -> None:
            weights = found.pop('logits').softmax(dim=0)  # (M, C)
            size = tuple(output.shape[-2:])
            self._record(name, module, SELECTION, channel=weights.numpy(),
                         spatial=None, uniform=None, feature_size=size,
                         cell=_cells(self.image_size, self.input_size,
                                     size)[0],
                         channels=weights.shape[1], branches=labels)

        self._handles.append(source.register_forward_hook(grab_logits))
        self._handles.append(module.register_forward_hook(hook))


# --------------------------------------------------------------------------
# image in, maps out
# --------------------------------------------------------------------------
@dataclass
class Preprocessed:
    """An image ready for the backbone.

    Attributes:
        inputs (Tensor): (1, 3, H_pad, W_pad), normalised and padded.
        image (ndarray): The resized RGB image, (H, W, 3) uint8, at the
            top left of ``inputs``.
    """

    inputs: torch.Tensor
    image: np.ndarray


def preprocess(image_bgr: np.ndarray,
               scale: Tuple[int, int] = (1333, 800),
               mean: Sequence[float] = IMAGENET_MEAN,
               std: Sequence[float] = IMAGENET_STD,
               to_rgb: bool = True,
               pad_divisor: int = 32) -> Preprocessed:
    """Resize keeping the aspect ratio to fit ``scale`` (mmdet's
    ``Resize(scale, keep_ratio=True)``: long side <= max(scale), short
    side <= min(scale)), normalise and zero-pad to ``pad_divisor``, as an
    mmdet test pipeline and ``DetDataPreprocessor`` do."""
    import mmcv
    img = mmcv.imrescale(image_bgr, scale, interpolation='bilinear')
    rgb = img[..., ::-1]
    x = (rgb if to_rgb else img).astype(np.float32)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    h, w = x.shape[:2]
    ph, pw = (-(-h // pad_divisor) * pad_divisor,
              -(-w // pad_divisor) * pad_divisor)
    padded = np.zeros((ph, pw, 3), np.float32)
    padded[:h, :w] = x
    inputs = torch.from_numpy(padded).permute(2, 0, 1)[None].contiguous()
    return Preprocessed(inputs, np.ascontiguousarray(rgb))


def collect_attention_maps(backbone: nn.Module,
                           data: Preprocessed) -> List[AttentionMap]:
    """Run ``backbone`` (eval mode, no gradient) on ``data`` and return
    the map of every attention module, in forward order."""
    backbone.eval()
    with AttentionRecorder(backbone, data.image.shape[:2],
                           tuple(data.inputs.shape[-2:])) as recorder, \
            torch.no_grad():
        backbone(data.inputs)
    return recorder.maps


# --------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------
_EXPLAIN = {
    GATE: 'weight = y / x: the factor the module multiplies each feature '
          'by (1 = unchanged)',
    RESIDUAL: 'added = y - x: what the module adds to its input',
    SELECTION: 'softmax weight of each branch, per output channel',
}


def _title(m: AttentionMap) -> str:
    return f'{m.name}  ({m.type}, {m.channels} ch, {m.feature_size[0]}x' \
           f'{m.feature_size[1]})'


def _spatial_panel(ax, m: AttentionMap, image: np.ndarray, fig) -> None:
    h, w = image.shape[:2]
    ax.imshow(image, extent=(0, w, h, 0))
    if m.spatial is not None:
        data = np.ma.masked_invalid(m.spatial)
        overlay = ax.imshow(data, cmap='jet', alpha=0.5, extent=m.extent(),
                            interpolation='bilinear')
        bar = fig.colorbar(overlay, ax=ax, fraction=0.046, pad=0.02)
        bar.ax.tick_params(labelsize=6)
        what = ('mean weight over channels' if m.kind == GATE else
                'mean |added| over channels')
        ax.set_title(f'{_title(m)}\nspatial: {what}', fontsize=8)
    else:
        if m.kind == SELECTION:
            note = 'selects among kernels per channel:\nno spatial map'
        elif m.kind == RESIDUAL and not m.uniform:
            note = 'adds nothing (y = x):\nzero-initialised, untrained'
        elif m.kind == RESIDUAL:
            note = 'adds the same vector everywhere:\nno spatial variation'
        else:
            note = (f'same weight at every position:\nno spatial '
                    f'attention here (mean {m.uniform:.3g})')
        ax.text(w / 2, h / 2, note, ha='center', va='center', fontsize=8,
                bbox=dict(boxstyle='round', fc='white', alpha=0.85))
        ax.set_title(f'{_title(m)}\nspatial: uniform', fontsize=8)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()


def _channel_panels(ax_bar, ax_hist, m: AttentionMap) -> None:
    if m.kind == SELECTION:
        edges = np.arange(m.channels + 1)
        for label, weights in zip(m.branches, m.channel):
            ax_bar.plot(edges, np.append(weights, weights[-1]), lw=0.8,
                        drawstyle='steps-post', label=label)
        ax_bar.legend(fontsize=6, loc='upper right')
        ax_bar.set_ylim(0, 1)
        ax_bar.set_title('branch weight per channel', fontsize=8)
        ax_hist.bar(range(len(m.branches)), m.channel.mean(axis=1),
                    tick_label=m.branches)
        ax_hist.set_title('mean weight per branch', fontsize=8)
        ax_hist.tick_params(labelsize=6)
        return
    values = m.channel
    # float64: float32 bin edges collapse on nearly constant values
    finite = values[np.isfinite(values)].astype(np.float64)
    reference = 1.0 if m.kind == GATE else 0.0
    what = 'weight' if m.kind == GATE else 'added'
    # one bar per channel, drawn as a single step-shaped polygon
    heights = np.nan_to_num(values, nan=reference)
    ax_bar.fill_between(np.arange(len(values) + 1),
                        np.append(heights, heights[-1]), step='post',
                        lw=0)
    ax_bar.axhline(reference, color='grey', lw=0.6, ls='--')
    ax_bar.set_xlim(0, len(values))
    ax_bar.set_xlabel('channel', fontsize=7)
    ax_bar.set_title(f'per channel: mean {what} over positions',
                     fontsize=8)
    lo, hi = ((float(finite.min()), float(finite.max())) if finite.size
              else (reference, reference))
    if hi - lo <= 1e-6 * max(1., abs(hi)):
        # (near-)constant values: one bin, widened so that it shows
        pad = max(1e-3 * abs(hi), 1e-6)
        bins, value_range = 1, (lo - pad, hi + pad)
    else:
        bins, value_range = min(40, max(5, finite.size // 8)), (lo, hi)
    ax_hist.hist(finite, bins=bins, range=value_range, histtype='stepfilled')
    ax_hist.axvline(reference, color='grey', lw=0.6, ls='--')
    ax_hist.set_xlabel(f'channel {what}', fontsize=7)
    ax_hist.set_title('histogram over channels', fontsize=8)
    for ax in (ax_bar, ax_hist):
        ax.tick_params(labelsize=6)
        ax.locator_params(nbins=4)


def render_stage(maps: Sequence[AttentionMap], image: np.ndarray,
                 title: str = ''):
    """One figure for the maps of one stage: a row per module with its
    spatial map over ``image`` (RGB, the network's input size), its
    per-channel weights and their histogram. Returns the matplotlib
    figure (Agg canvas, not shown)."""
    from matplotlib.figure import Figure
    rows = len(maps)
    height = 3.0 * rows + 1.0  # inches: 3 per row, 1 for title and note
    fig = Figure(figsize=(13, height))
    # A fixed layout: tight_layout would measure every tick label of
    # every panel, several times the cost of drawing the figure.
    axes = fig.subplots(rows, 3, squeeze=False, gridspec_kw=dict(
        width_ratios=(1.4, 1, 1), left=0.03, right=0.98, wspace=0.3,
        top=1 - 0.8 / height, bottom=0.8 / height, hspace=0.55))
    for m, (ax_img, ax_bar, ax_hist) in zip(maps, axes):
        _spatial_panel(ax_img, m, image, fig)
        _channel_panels(ax_bar, ax_hist, m)
    kinds = sorted({m.kind for m in maps})
    footnote = '; '.join(_EXPLAIN[k] for k in kinds)
    fig.suptitle(title, fontsize=10, y=1 - 0.15 / height)
    fig.text(0.5, 0.1 / height, footnote, ha='center', va='bottom',
             fontsize=7)
    return fig


def stage_title(maps: Sequence[AttentionMap], image_name: str,
                input_size: Tuple[int, int]) -> str:
    """'Stage k: C channels at 1/s resolution, <types>, <image>'."""
    m = maps[0]
    stride = input_size[0] // max(1, m.feature_size[0])
    types = ', '.join(sorted({x.type for x in maps}))
    return (f'Stage {m.stage}: {len(maps)} attention module(s) shown '
            f'({types}) on {m.channels}-channel maps at 1/{stride} '
            f'resolution; image {image_name}')


# --------------------------------------------------------------------------
# config in, PNGs out
# --------------------------------------------------------------------------
def _test_scale(cfg) -> Tuple[int, int]:
    """The ``Resize`` scale of the config's test pipeline, else
    (1333, 800)."""
    pipelines = [cfg.get('test_pipeline')]
    loader = cfg.get('test_dataloader')
    if loader is not None:
        pipelines.append(loader.get('dataset', {}).get('pipeline'))
    for pipeline in pipelines:
        for step in pipeline or []:
            if step.get('type') == 'Resize' and 'scale' in step:
                return tuple(step['scale'])
    return (1333, 800)


def _preprocessor_settings(cfg) -> dict:
    pre = (cfg.get('model', {}).get('data_preprocessor') or {})
    return dict(mean=pre.get('mean', IMAGENET_MEAN),
                std=pre.get('std', IMAGENET_STD),
                to_rgb=pre.get('bgr_to_rgb', pre.get('to_rgb', True)),
                pad_divisor=pre.get('pad_size_divisor', 32))


def load_backbone(cfg, checkpoint: Optional[str] = None) -> nn.Module:
    """Build ``cfg.model.backbone`` (no download) and load its weights from
    a detector or classifier checkpoint (keys ``backbone.*``) or a
    backbone checkpoint."""
    backbone = build_backbone(cfg.model.backbone)
    if checkpoint:
        from mmengine.runner import CheckpointLoader, load_state_dict
        ckpt = CheckpointLoader.load_checkpoint(checkpoint,
                                                map_location='cpu')
        state = ckpt.get('state_dict', ckpt)
        prefixed = {k[len('backbone.'):]: v for k, v in state.items()
                    if k.startswith('backbone.')}
        load_state_dict(backbone, prefixed or state, strict=False,
                        logger='current')
    backbone.eval()
    return backbone


@dataclass
class Visualization:
    """What :func:`visualize` produced.

    Attributes:
        files (dict[int, str]): PNG path per stage.
        maps (list[AttentionMap]): Every module's map.
        image (ndarray): The resized RGB image the maps are drawn on.
    """

    files: Dict[int, str]
    maps: List[AttentionMap]
    image: np.ndarray


def select_blocks(maps: Sequence[AttentionMap],
                  limit: Optional[int]) -> List[AttentionMap]:
    """At most ``limit`` maps, evenly spaced from the first to the last
    (all if ``limit`` is None)."""
    if limit is None or len(maps) <= limit:
        return list(maps)
    if limit < 1:
        raise ValueError(f'max_per_stage must be >= 1, got {limit}')
    picks = np.unique(np.linspace(0, len(maps) - 1, limit).round())
    return [maps[int(i)] for i in picks]


def visualize(config, image: str, out_dir: str,
              checkpoint: Optional[str] = None,
              scale: Optional[Tuple[int, int]] = None,
              dpi: int = 100,
              max_per_stage: Optional[int] = None) -> Visualization:
    """Save ``<out_dir>/stage<k>.png`` for every stage of ``config``'s
    backbone that holds attention modules.

    Args:
        config (str | Config): A detection (or classification) config.
        image (str): Path of the image.
        out_dir (str): Where the PNGs go (created).
        checkpoint (str, optional): Weights; without them the maps show the
            modules' initialisation (zero-initialised residual modules
            then add nothing).
        scale (tuple, optional): (long, short) bound of the resize; default:
            the config's test ``Resize`` scale, else (1333, 800).
        dpi (int): Resolution of the PNGs.
        max_per_stage (int, optional): Draw at most this many modules per
            stage (evenly spaced, first and last included); default all.
            :attr:`Visualization.maps` always holds every module.
    """
    import mmcv
    from mmengine.config import Config
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    img = mmcv.imread(image)
    if img is None:
        raise ValueError(f'cannot read image {image!r}')
    data = preprocess(img, scale or _test_scale(cfg),
                      **_preprocessor_settings(cfg))
    maps = collect_attention_maps(load_backbone(cfg, checkpoint), data)
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    name = osp.basename(image)
    for stage in sorted({m.stage for m in maps}):
        stage_maps = select_blocks([m for m in maps if m.stage == stage],
                                   max_per_stage)
        fig = render_stage(stage_maps, data.image, stage_title(
            stage_maps, name, tuple(data.inputs.shape[-2:])))
        files[stage] = osp.join(out_dir, f'stage{stage}.png')
        fig.savefig(files[stage], dpi=dpi)
    return Visualization(files, maps, data.image)


__all__ = [
    'AttentionMap', 'AttentionRecorder', 'Preprocessed', 'Visualization',
    'module_kind', 'module_stage', 'preprocess', 'collect_attention_maps',
    'render_stage', 'stage_title', 'select_blocks', 'load_backbone',
    'visualize', 'GATE',
    'RESIDUAL', 'SELECTION'
]
