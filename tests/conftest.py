import os.path as osp

import pytest
import torch

import mmattn  # noqa: F401  (registration and compatibility fixes)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def pytest_report_header(config):
    """Show the stack, and that mmcv's compiled ops really run on CPU."""
    import mmcv
    import mmdet
    import mmengine
    import torchvision
    from mmcv.ops import RoIAlign, nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.]])
    _, keep = nms(boxes, torch.tensor([0.9, 0.8]), iou_threshold=0.5)
    feats = torch.arange(16.).view(1, 1, 4, 4)
    rois = torch.tensor([[0., 0., 0., 3., 3.]])
    pooled = RoIAlign((2, 2), spatial_scale=1., sampling_ratio=2)(feats, rois)
    return [
        f'stack: torch {torch.__version__}, torchvision '
        f'{torchvision.__version__}, mmengine {mmengine.__version__}, mmcv '
        f'{mmcv.__version__}, mmdet {mmdet.__version__}',
        f'mmcv compiled ops on CPU: mmcv.ops.nms keep={keep.tolist()}, '
        f'RoIAlign out={pooled.flatten().tolist()}',
    ]


@pytest.fixture(scope='session')
def shapes_root(tmp_path_factory):
    """A small generated COCO-format dataset shared by the tests."""
    from mmattn.datasets import generate_shapes_coco
    root = str(tmp_path_factory.mktemp('shapes'))
    generate_shapes_coco(root, num_train=8, num_val=4, image_size=96)
    return root


@pytest.fixture(params=[None, 1, 2],
                ids=['blocks_default', 'block1', 'block2'])
def channel_blocks(request, monkeypatch):
    """Sets, for an input's shape, the channels per block of the
    hand-written CPU passes (:func:`mmattn.models.common.channel_blocks`):
    the default (one block at test sizes), one, or two (a shorter last
    block for an odd channel count), with the size from which a pooling's
    backward takes blocks set to 0 for the last two."""
    from mmattn.models import common

    def use_for(x):
        if request.param is not None:
            per_channel = x.numel() // x.shape[1]
            monkeypatch.setattr(common, 'CPU_BLOCK_NUMEL',
                                request.param * per_channel)
            monkeypatch.setattr(common, 'MIN_BLOCKED_POOL_GRAD_NUMEL', 0)
        return x

    return use_for
