"""ImageNet pretraining (``configs/pretrain/``) and its handoff to detection.

* every pretraining config parses and builds; its classifier's ``backbone.``
  keys are exactly the keys of the matching detection config's backbone,
  which names the checkpoint the pretraining run writes; until that run has
  written it, ``tools/train.py`` starts from torchvision's ResNet and warns;
* end to end (slow): ``tools/train.py`` trains a pretraining config one
  epoch on a generated ImageNet-format folder, evaluates top-1/top-5 and
  writes a checkpoint, which the detection config's ``init_cfg`` loads with
  no missing and no unexpected key.
"""
import glob
import json
import logging
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from conftest import REPO
from mmattn.compat import safe_load_checkpoint
from mmattn.datasets import generate_shapes_imagenet
from helpers import load_tool

GEN = load_tool('tools/misc/generate_configs.py')
PRETRAIN_DIR = osp.join(REPO, 'configs', 'pretrain')
PRETRAIN_CONFIGS = sorted(
    osp.basename(p) for p in glob.glob(osp.join(PRETRAIN_DIR, '*.py')))


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def detection_config(attention: str, depth: str) -> Config:
    return Config.fromfile(osp.join(
        REPO, 'configs', GEN.config_name('faster_rcnn', attention, depth)))


def build_classifier(cfg: Config):
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS
    return MODELS.build(cfg.model)


def build_detection_backbone(cfg: Config):
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    return MODELS.build(cfg.model.backbone)


def test_one_pretraining_config_per_attention_and_depth():
    assert PRETRAIN_CONFIGS == sorted(
        GEN.pretrain_name(attention, depth) for attention in GEN.ATTENTIONS
        for depth in GEN.DEPTHS)
    assert 'eca_resnet50_8xb32_in1k.py' in PRETRAIN_CONFIGS


def test_every_handoff_checkpoint_names_its_pretraining_config():
    """tools/train.py reads back, from the checkpoint each detection config
    names, the pretraining config that writes it."""
    from mmattn.engine.launch import PRETRAINED_HANDOFF
    for attention in GEN.ATTENTIONS:
        for depth in GEN.DEPTHS:
            checkpoint = GEN.pretrained_init(attention, depth)['checkpoint']
            handoff = PRETRAINED_HANDOFF.search(checkpoint)
            assert handoff['name'] + '.py' == GEN.pretrain_name(
                attention, depth)
            assert 'r' + handoff['depth'] == depth


@pytest.mark.parametrize('name', PRETRAIN_CONFIGS)
def test_config_builds_with_the_detection_backbone_keys(name):
    attention, arch = name.split('_')[:2]
    depth = 'r' + arch[len('resnet'):]
    cfg = Config.fromfile(osp.join(PRETRAIN_DIR, name))
    # the papers' recipe, from mmpretrain's own _base_ files
    assert cfg.default_scope == 'mmpretrain'
    optimizer = dict(cfg.optim_wrapper.optimizer)
    optimizer.pop('_scope_', None)  # mmengine marks what a scope's base set
    assert optimizer == dict(type='SGD', lr=0.1, momentum=0.9,
                             weight_decay=1e-4)
    assert cfg.param_scheduler.milestones == [30, 60, 90]
    assert cfg.train_cfg.max_epochs == GEN.PRETRAIN_EPOCHS
    assert cfg.train_dataloader.batch_size == 32
    assert cfg.auto_scale_lr.base_batch_size == 256
    assert cfg.model.backbone.norm_eval is False
    assert cfg.model.head.num_classes == 1000

    classifier = build_classifier(cfg)
    det_cfg = detection_config(attention, depth)
    # the detection config loads what this config's run writes last
    assert det_cfg.model.backbone.init_cfg == dict(
        type='Pretrained', prefix='backbone.',
        checkpoint=f'work_dirs/{name[:-3]}/epoch_{cfg.train_cfg.max_epochs}'
        '.pth')
    backbone = build_detection_backbone(det_cfg)
    pretrained = {k[len('backbone.'):]: v.shape
                  for k, v in classifier.state_dict().items()
                  if k.startswith('backbone.')}
    expected = {k: v.shape for k, v in backbone.state_dict().items()}
    assert pretrained.keys() - expected.keys() == set()  # unexpected
    assert expected.keys() - pretrained.keys() == set()  # missing
    assert pretrained == expected  # shapes


def test_pending_pretraining_falls_back_to_torchvision_and_warns(
        tmp_path, monkeypatch):
    """Before its pretraining config has run, a detection config starts
    from torchvision's ResNet (issue 5's default) and says so."""
    from mmattn.engine.launch import resolve_pretrained_backbone
    monkeypatch.chdir(tmp_path)
    warnings = []
    monkeypatch.setattr(
        'mmattn.engine.launch.print_log',
        lambda msg, logger=None, level=None: warnings.append((msg, level)))
    cfg = detection_config('sge', 'r101')
    resolve_pretrained_backbone(cfg)
    assert cfg.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint='torchvision://resnet101')
    (message, level), = warnings
    assert level == logging.WARNING
    assert 'work_dirs/sge_resnet101_8xb32_in1k/epoch_100.pth' in message
    assert 'configs/pretrain/sge_resnet101_8xb32_in1k.py' in message

    # once the pretraining run has written it, it is used as named
    checkpoint = tmp_path / 'work_dirs' / 'sge_resnet101_8xb32_in1k'
    checkpoint.mkdir(parents=True)
    (checkpoint / 'epoch_100.pth').write_bytes(b'')
    cfg = detection_config('sge', 'r101')
    resolve_pretrained_backbone(cfg)
    assert cfg.model.backbone.init_cfg == GEN.pretrained_init('sge', 'r101')
    assert len(warnings) == 1


def test_missing_checkpoint_of_ones_own_is_refused(tmp_path, monkeypatch):
    from mmattn.engine.launch import resolve_pretrained_backbone
    monkeypatch.chdir(tmp_path)
    train = load_tool('tools/train.py')
    args = train.parse_args([
        osp.join(REPO, 'configs', 'faster_rcnn_sge_r101_fpn.py'),
        '--cfg-options',
        'model.backbone.init_cfg.checkpoint=ckpts/sge_r101_typo.pth'])
    cfg = train.build_cfg(args)
    with pytest.raises(FileNotFoundError) as err:
        resolve_pretrained_backbone(cfg)
    message = str(err.value)
    assert "model.backbone.init_cfg.checkpoint='ckpts/sge_r101_typo.pth'" \
        in message
    assert 'torchvision://resnet101' in message
    # the override the message (and the README) suggests
    args = train.parse_args([
        osp.join(REPO, 'configs', 'faster_rcnn_sge_r101_fpn.py'),
        '--cfg-options',
        'model.backbone.init_cfg.checkpoint=torchvision://resnet101',
        'model.backbone.init_cfg.prefix=None'])
    cfg = train.build_cfg(args)
    assert cfg.model.backbone.init_cfg == dict(
        type='Pretrained', prefix=None, checkpoint='torchvision://resnet101')
    resolve_pretrained_backbone(cfg)  # remote: left to mmengine
    assert cfg.model.backbone.init_cfg.checkpoint == 'torchvision://resnet101'


# --------------------------------------------------------------------------
# end to end: pretrain one epoch, hand the checkpoint to detection
# --------------------------------------------------------------------------
NUM_CLASSES = 6


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    """Work dir of one ``tools/train.py`` epoch of the ECA-ResNet-50
    pretraining config on a generated ImageNet-format folder (32 px, 6
    classes); only data, sizes and class count are overridden."""
    root = tmp_path_factory.mktemp('pretrain')
    data = str(root / 'imagenet')
    work_dir = str(root / 'work')
    generate_shapes_imagenet(data, num_classes=NUM_CLASSES, num_train=4,
                             num_val=2, image_size=40)
    options = [
        f'model.head.num_classes={NUM_CLASSES}',
        f'data_preprocessor.num_classes={NUM_CLASSES}',
        'train_cfg.max_epochs=1',
        'train_dataloader.dataset.pipeline.1.scale=32',
        'val_dataloader.dataset.pipeline.1.scale=36',
        'val_dataloader.dataset.pipeline.2.crop_size=32',
    ]
    for loader in ('train_dataloader', 'val_dataloader'):
        options += [f'{loader}.batch_size=4', f'{loader}.num_workers=0',
                    f'{loader}.persistent_workers=False',
                    f'{loader}.dataset.data_root={data}']
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'),
         osp.join(PRETRAIN_DIR, 'eca_resnet50_8xb32_in1k.py'),
         '--work-dir', work_dir, '--auto-scale-lr',  # lr 0.1 * 4 / 256
         '--cfg-options', *options],
        env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work_dir


@pytest.mark.slow
def test_pretraining_trains_an_epoch_evaluates_and_saves(pretrained):
    assert osp.isfile(osp.join(pretrained, 'epoch_1.pth'))
    with open(osp.join(pretrained, 'last_checkpoint')) as f:
        assert f.read().strip().endswith('epoch_1.pth')
    scalars, = glob.glob(osp.join(pretrained, '*', 'vis_data',
                                  'scalars.json'))
    with open(scalars) as f:
        records = [json.loads(line) for line in f]
    val = [r for r in records if 'accuracy/top1' in r]
    assert len(val) == 1 and val[0]['step'] == 1
    top1, top5 = val[0]['accuracy/top1'], val[0]['accuracy/top5']
    assert 0 <= top1 <= top5 <= 100
    # 6 classes: a finite score ranks the right one last for 1 in 6 images
    # by chance (NaN scores, as after a diverged epoch, would not)
    assert top5 >= 50
    train = [r for r in records if 'loss' in r]
    assert train and all(torch.isfinite(torch.tensor(r['loss']))
                         for r in train)


@pytest.mark.slow
def test_checkpoint_loads_into_the_detection_backbone(pretrained,
                                                      monkeypatch):
    checkpoint = osp.join(pretrained, 'epoch_1.pth')
    cfg = detection_config('eca', 'r50')
    cfg.model.backbone.init_cfg.checkpoint = checkpoint
    backbone = build_detection_backbone(cfg)

    import mmengine.runner.checkpoint as mmengine_checkpoint
    report = []
    real_print_log = mmengine_checkpoint.print_log

    def record(msg, *args, **kwargs):
        report.append(str(msg))
        return real_print_log(msg, *args, **kwargs)

    monkeypatch.setattr(mmengine_checkpoint, 'print_log', record)
    backbone.init_weights()
    # mmengine's load report: one message per kind of mismatch, none here
    assert not [m for m in report if 'missing keys' in m
                or 'unexpected key' in m or 'size mismatch' in m], report

    state = safe_load_checkpoint(checkpoint)['state_dict']
    loaded = backbone.state_dict()
    assert len(loaded) == len(
        [k for k in state if k.startswith('backbone.')])
    for key, value in loaded.items():
        assert torch.equal(value, state['backbone.' + key]), key
