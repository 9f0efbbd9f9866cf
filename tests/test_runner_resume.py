"""An mmengine Runner trains ECA Faster R-CNN for 2 iterations on generated
COCO data, saves a checkpoint, and resumes from it with weights_only on."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from conftest import REPO
from mmattn.testing import tiny_detection_cfg

CONFIG = osp.join(REPO, 'configs', 'faster_rcnn_eca_r50_fpn.py')


def make_runner(data_root, work_dir, max_iters, **overrides):
    cfg = tiny_detection_cfg(Config.fromfile(CONFIG), data_root,
                             str(work_dir), max_iters=max_iters,
                             image_size=96)
    cfg.update(overrides)
    cfg.randomness = dict(seed=0)
    return Runner.from_cfg(cfg)


@pytest.mark.slow
def test_train_save_resume(shapes_root, tmp_path):
    runner = make_runner(shapes_root, tmp_path, max_iters=2)
    runner.train()
    ckpt = tmp_path / 'iter_2.pth'
    assert ckpt.is_file()
    assert (tmp_path / 'last_checkpoint').read_text().strip() == str(ckpt)
    saved = runner.model.state_dict()

    resumed = make_runner(shapes_root, tmp_path, max_iters=3, resume=True)
    resumed.train()  # resumes at iteration 2, runs the 3rd
    assert resumed.iter == 3
    assert (tmp_path / 'iter_3.pth').is_file()
    hub = resumed.message_hub.get_scalar('train/loss')
    assert len(hub.data[0]) == 3  # history of iterations 1-2 came back

    # load_from (weights only, fresh schedule) restores the same weights
    loaded = make_runner(shapes_root, tmp_path / 'again', max_iters=1,
                         load_from=str(ckpt))
    loaded.load_or_resume()
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, saved[key], msg=key)
