"""The toy detector and data of the reliability tests: mmattn's ECA Faster
R-CNN config (``configs/faster_rcnn_eca_r50_fpn.py``) shrunk by
``tiny_detection_cfg`` and slimmed further: a ResNet-18 body
(``AttentionResNet``, BasicBlocks, BN trained), narrow FPN and heads, 64 px
images. A training iteration takes a fraction of a second on CPU."""
import importlib.util
import os.path as osp
import sys
from typing import List, Optional

import pytest
from mmengine.config import Config

from mmattn.datasets import generate_shapes_coco
from mmattn.testing import tiny_detection_cfg

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'faster_rcnn_eca_r50_fpn.py')

#: Images in the toy training split: more than the kill test's iterations
#: times the batch, so that no run crosses an epoch boundary (mmengine's
#: infinite iterator sleeps 2 s there).
NUM_TRAIN = 16


def toy_cfg(data_root: str,
            work_dir: str,
            max_iters: int,
            plugins: Optional[List[dict]] = None,
            attn_conv: Optional[dict] = None,
            base_channels: int = 16,
            width: int = 32,
            image_size: int = 64) -> Config:
    """The toy Faster R-CNN. ``plugins`` replace the config's ECA plugins
    (None keeps them); ``attn_conv`` replaces the strided 3x3 convs."""
    cfg = tiny_detection_cfg(Config.fromfile(CONFIG), data_root, work_dir,
                             max_iters=max_iters, image_size=image_size,
                             batch_size=2, max_proposals=32)
    backbone = cfg.model.backbone
    backbone.update(type='AttentionResNet', depth=18,
                    base_channels=base_channels, frozen_stages=-1,
                    norm_eval=False, init_cfg=None)
    if plugins is not None:
        backbone.plugins = plugins
    if attn_conv is not None:
        backbone.attn_conv = attn_conv
    cfg.model.neck.update(
        in_channels=[base_channels * 2**i for i in range(4)],
        out_channels=width)
    cfg.model.rpn_head.update(in_channels=width, feat_channels=width)
    cfg.model.roi_head.bbox_roi_extractor.out_channels = width
    cfg.model.roi_head.bbox_head.update(in_channels=width,
                                        fc_out_channels=64)
    # no evaluation: the tests look at training
    cfg.train_cfg.val_interval = max_iters + 1
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.default_hooks.pop('visualization', None)
    return cfg


def contract_module():
    """``tests/models/attention/test_contract.py`` (its ``TYPE_NAMES``: every
    attention type mmattn promises), under its own module name so that
    pytest's collection of it finds the same module."""
    if 'test_contract' not in sys.modules:
        path = osp.join(REPO, 'tests', 'models', 'attention',
                        'test_contract.py')
        spec = importlib.util.spec_from_file_location('test_contract', path)
        module = importlib.util.module_from_spec(spec)
        sys.modules['test_contract'] = module
        spec.loader.exec_module(module)
    return sys.modules['test_contract']


def make_toy_data(root: str) -> str:
    generate_shapes_coco(root, num_train=NUM_TRAIN, num_val=1,
                         image_size=64, seed=1)
    return root


@pytest.fixture(scope='session')
def toy_data(tmp_path_factory):
    """The toy training set (16 images of 64 x 64)."""
    return make_toy_data(str(tmp_path_factory.mktemp('toy_shapes')))
