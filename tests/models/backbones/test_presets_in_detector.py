"""Every preset in a Faster R-CNN FPN: one training step and a prediction on
CPU (tiny images, few proposals)."""
import logging

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.hub import get_config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

from mmattn.models.backbones import PRESETS

MMLogger.get_current_instance().setLevel(logging.WARNING)

SIZE = 32


@pytest.fixture(autouse=True, scope='module')
def single_thread():
    """These tensors are tiny: one thread avoids OpenMP spinning against
    the other processes on a shared CPU (several times faster there)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def detector_cfg():
    init_default_scope('mmdet')
    cfg = get_config('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
    model = cfg.model
    model.train_cfg.rpn_proposal.update(nms_pre=64, max_per_img=16)
    model.train_cfg.rcnn.sampler.update(num=16)
    model.test_cfg.rpn.update(nms_pre=64, max_per_img=16)
    model.test_cfg.rcnn.update(max_per_img=5)
    return model


def make_batch(num_images=2):
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(num_images):
        inputs.append(torch.randint(0, 255, (3, SIZE, SIZE), generator=gen,
                                    dtype=torch.uint8))
        sample = DetDataSample(metainfo=dict(
            img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE),
            pad_shape=(SIZE, SIZE), scale_factor=(1., 1.),
            batch_input_shape=(SIZE, SIZE)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[2., 3., 20., 25.], [10., 5., 30., 15.]]),
            labels=torch.tensor([1, 7]))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def run_detector(model_cfg, backbone, neck_in):
    cfg = model_cfg.copy()
    cfg.backbone = dict(backbone, init_cfg=None)
    cfg.neck.in_channels = neck_in
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    model.train()
    data = model.data_preprocessor(make_batch(), training=True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for n, p in model.backbone.named_parameters()
             if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(make_batch(), training=False)
        results = model(**data, mode='predict')
    assert len(results) == 2
    for result in results:
        pred = result.pred_instances
        assert pred.bboxes.shape[1] == 4 and len(pred) <= 5
        assert torch.isfinite(pred.bboxes).all()


@pytest.mark.parametrize('name', PRESETS)
def test_preset_trains_and_predicts_r50(name, detector_cfg):
    run_detector(detector_cfg, dict(type=name, depth=50),
                 [256, 512, 1024, 2048])


@pytest.mark.parametrize('name', ['SEResNet', 'SKResNet', 'BAMResNet',
                                  'NLResNet', 'ECAResNet'])
def test_basic_block_preset_trains_and_predicts_r18(name, detector_cfg):
    run_detector(detector_cfg, dict(type=name, depth=18),
                 [64, 128, 256, 512])
