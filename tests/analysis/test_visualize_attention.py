"""``tools/analysis/visualize_attention.py`` on a generated image, for
every attention snippet of ``configs/_base_/attention``: one non-empty PNG
per stage holding attention, maps of the right kind and shape."""
import glob
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
from analysis_tools import CONFIG_DIR, config, load_tool
from helpers import randomize_
from mmengine.config import Config

from mmattn.analysis.complexity import attention_modules
from mmattn.analysis.visualize import (GATE, RESIDUAL, SELECTION,
                                       AttentionRecorder, load_backbone,
                                       render_stage)
from mmattn.models.attention import AttentionModule

VISUALIZE = load_tool('visualize_attention')
TOKENS = sorted(osp.basename(p)[:-3] for p in glob.glob(
    osp.join(CONFIG_DIR, '_base_', 'attention', '*.py')))

#: Image size (H, W): not a multiple of 32, so padding is exercised, and
#: far from square, so the aspect ratio shows.
IMAGE_HW = (72, 136)
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'

#: Stages holding attention, where they are not all four.
STAGES = {'bam': {1, 2, 3}, 'resatt': {1, 2, 3}, 'gc': {2, 3, 4},
          'nl': {3}, 'danet': {4}, 'ccnet': {4}}
KINDS = {'sk': SELECTION, 'epsa': SELECTION, 'gc': RESIDUAL,
         'nl': RESIDUAL, 'danet': RESIDUAL, 'ccnet': RESIDUAL}


@pytest.fixture(scope='module')
def image_path(tmp_path_factory):
    """A red disc and a green square on grey."""
    img = np.full(IMAGE_HW + (3, ), 90, np.uint8)
    cv2.circle(img, (35, 36), 22, (0, 0, 230), -1)
    cv2.rectangle(img, (80, 12), (126, 60), (0, 200, 0), -1)
    path = str(tmp_path_factory.mktemp('vis') / 'shapes.png')
    cv2.imwrite(path, img)
    return path


def _is_png(path: str) -> bool:
    with open(path, 'rb') as f:
        return f.read(8) == PNG_SIGNATURE and osp.getsize(path) > 1000


@pytest.mark.parametrize('token', TOKENS)
def test_every_module_gets_one_png_per_stage(token, image_path, tmp_path):
    """Every module's map is computed; one module per stage is drawn
    (drawing all of them is the default, tested below with CBAM)."""
    out = str(tmp_path / token)
    result = VISUALIZE.main([
        config(f'faster_rcnn_{token}_r50_fpn'), image_path, '--out-dir', out,
        '--scale', '136', '72', '--dpi', '40', '--max-per-stage', '1'])
    stages = STAGES.get(token, {1, 2, 3, 4})
    assert set(result.files) == stages
    assert sorted(glob.glob(osp.join(out, '*.png'))) == sorted(
        result.files.values())
    assert all(_is_png(path) for path in result.files.values())
    assert {m.kind for m in result.maps} == {KINDS.get(token, GATE)}
    assert result.image.shape[:2] == IMAGE_HW
    for m in result.maps:
        assert m.stage in stages
        width = m.channels if m.kind != SELECTION else m.channel.shape[1]
        assert m.channel.shape[-1] == width
        if m.spatial is not None:
            # cut to the cells touching the image (the input is padded
            # to 96 x 160): the image's aspect, up to one cell
            stride = 96 // m.feature_size[0]
            assert m.cell == (stride, stride)
            assert m.spatial.shape == (-(-IMAGE_HW[0] // stride),
                                       -(-IMAGE_HW[1] // stride))
            assert m.spatial_on_image(IMAGE_HW).shape == IMAGE_HW


def test_spatial_map_keeps_the_image_aspect_and_checkpoint_loads(
        image_path, tmp_path):
    """CBAM with random (trained-like) attention weights from a detector
    checkpoint: its spatial gate varies over the image, and the heatmap
    is drawn over exactly the image's extent (aspect W/H)."""
    cfg = Config.fromfile(config('faster_rcnn_cbam_r50_fpn'))
    backbone = load_backbone(cfg)
    for i, module in enumerate(attention_modules(backbone).values()):
        randomize_(module, seed=i)
    checkpoint = str(tmp_path / 'cbam.pth')
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in
                               backbone.state_dict().items()}}, checkpoint)
    result = VISUALIZE.main([
        config('faster_rcnn_cbam_r50_fpn'), image_path, '--checkpoint',
        checkpoint, '--out-dir', str(tmp_path / 'out'), '--scale', '136',
        '72', '--dpi', '40'])
    assert len(result.maps) == 16 and len(result.files) == 4
    maps = [m for m in result.maps if m.stage == 1]
    assert all(m.spatial is not None for m in result.maps)
    m = maps[0]
    assert np.isfinite(m.spatial).all() and np.ptp(m.spatial) > 0
    h, w = IMAGE_HW
    assert m.spatial.shape == (h // 4, w // 4)  # stride 4 divides both
    on_image = m.spatial_on_image(IMAGE_HW)
    assert on_image.shape == IMAGE_HW and np.ptp(on_image) > 0
    fig = render_stage(maps, result.image, 'stage 1')
    fig.draw_without_rendering()  # applies the axes' aspect
    heat_ax = fig.axes[0]
    image, overlay = heat_ax.get_images()
    assert overlay.get_extent() == image.get_extent() == [0, w, h, 0]
    box = heat_ax.get_window_extent()
    assert box.width / box.height == pytest.approx(w / h, rel=0.02)


class _ChannelGate(AttentionModule):
    """y = x * g_c, a fixed per-channel gate."""

    def __init__(self, gate):
        super().__init__()
        self.register_buffer('g', torch.tensor(gate).view(1, -1, 1, 1))

    def forward(self, x):
        return x * self.g


class _SpatialGate(AttentionModule):
    """y = x * m(h, w), a fixed spatial gate."""

    def __init__(self, gate):
        super().__init__()
        self.register_buffer('m', gate[None, None])

    def forward(self, x):
        return x * self.m


class _InPlace(AttentionModule):

    def forward(self, x):
        return x.mul_(2.)


def _record(module, x, image_size, input_size=None):
    """Maps of ``module`` placed in stage 2, on a feature ``x`` of an
    ``image_size`` image padded to ``input_size`` (default: x's size)."""
    net = nn.Sequential()
    net.add_module('layer2', nn.Sequential(module))
    input_size = input_size or tuple(x.shape[-2:])
    with AttentionRecorder(net, image_size, input_size) as rec:
        net(x)
    return rec.maps


def test_gate_maps_are_the_gates():
    """The recorded weight y / x is the gate itself: a channel gate has
    no spatial map and its per-channel values; a spatial gate its map,
    cut to the cells that touch the image."""
    x = torch.randn(1, 3, 8, 8)
    (m, ) = _record(_ChannelGate([0.2, 0.5, 0.9]), x, (6, 7))
    assert (m.kind, m.stage, m.spatial, m.cell) == (GATE, 2, None, (1., 1.))
    np.testing.assert_allclose(m.channel, [0.2, 0.5, 0.9], rtol=1e-6)
    assert m.uniform == pytest.approx(np.mean([0.2, 0.5, 0.9]), rel=1e-6)
    gate = torch.rand(8, 8) + 0.1
    # a stride-2 feature: the 11 x 14 image (padded to 16 x 16) touches
    # 6 x 7 of its 8 x 8 cells
    (m, ) = _record(_SpatialGate(gate), x, (11, 14), (16, 16))
    assert m.cell == (2., 2.) and m.spatial.shape == (6, 7)
    np.testing.assert_allclose(m.spatial, gate[:6, :7].numpy(), rtol=1e-5)
    np.testing.assert_allclose(m.channel, np.full(3, gate[:6, :7].mean()),
                               rtol=1e-5)
    assert m.spatial_on_image((11, 14)).shape == (11, 14)


def test_in_place_module_is_refused():
    with pytest.raises(RuntimeError, match='in place'):
        _record(_InPlace(), torch.randn(1, 2, 4, 4), (4, 4))
