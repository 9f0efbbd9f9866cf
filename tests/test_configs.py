"""Every config of ``configs/``: generated and up to date, parses, builds,
trains one iteration and predicts on tiny generated images on CPU.

The configs are used as shipped; only data, class count, proposal counts
and pretrained downloads are shrunk, in the test, by
:func:`mmattn.testing.tiny_detection_cfg` (64 px images, batch 2, 16
proposals)."""
import copy
import glob
import math
import os.path as osp
import shutil

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from conftest import REPO
from helpers import load_tool
from mmattn.testing import tiny_detection_cfg

CONFIG_DIR = osp.join(REPO, 'configs')
CONFIGS = sorted(
    osp.relpath(p, CONFIG_DIR)
    for p in glob.glob(osp.join(CONFIG_DIR, '*.py')) +
    glob.glob(osp.join(CONFIG_DIR, 'demo', '*.py')))


GEN = load_tool('tools/misc/generate_configs.py')


def test_generated_configs_are_up_to_date():
    assert GEN.problems() == [], (
        'run python tools/misc/generate_configs.py')


def test_tables_cover_the_issue():
    """5 detectors x 2 depths x (18 attention tokens + baseline)."""
    assert set(GEN.DETECTORS) == {'faster_rcnn', 'mask_rcnn', 'retinanet',
                                  'cascade_rcnn', 'cascade_mask_rcnn'}
    assert GEN.DEPTHS == ('r50', 'r101')
    assert set(GEN.ATTENTIONS) == {
        'se', 'eca', 'cbam', 'bam', 'nam', 'sge', 'sk', 'epsa', 'gc', 'nl',
        'danet', 'ccnet', 'coord', 'triplet', 'simam', 'ge', 'fca', 'resatt'}
    flat = [c for c in CONFIGS if '/' not in c]
    assert len(flat) == 5 * 2 * 19
    assert set(GEN.expected_configs()) == set(flat) | {
        osp.join('pretrain', GEN.pretrain_name(attention, depth))
        for attention in GEN.ATTENTIONS for depth in GEN.DEPTHS}
    for name in ('faster_rcnn_eca_r50_fpn.py', 'mask_rcnn_sge_r101_fpn.py',
                 'faster_rcnn_r50_fpn.py', 'cascade_mask_rcnn_resatt_r101'
                 '_fpn.py'):
        assert name in flat


def test_check_mode_reports_stale_missing_and_extra(tmp_path):
    configs = tmp_path / 'configs'
    shutil.copytree(CONFIG_DIR, configs)
    assert GEN.main(['--check', '--config-dir', str(configs)]) == 0
    (configs / 'retinanet_se_r50_fpn.py').write_text('# edited by hand\n')
    (configs / 'mask_rcnn_gc_r101_fpn.py').unlink()
    (configs / 'faster_rcnn_foo_r50_fpn.py').write_text('')
    (configs / 'pretrain' / 'foo_resnet50_8xb32_in1k.py').write_text('')
    (configs / 'pretrain' / 'nam_resnet101_8xb32_in1k.py').unlink()
    found = GEN.problems(str(configs))
    assert sorted(found) == [
        'missing mask_rcnn_gc_r101_fpn.py',
        'missing pretrain/nam_resnet101_8xb32_in1k.py',
        'not in the tables: faster_rcnn_foo_r50_fpn.py',
        'not in the tables: pretrain/foo_resnet50_8xb32_in1k.py',
        'stale retinanet_se_r50_fpn.py']
    assert GEN.main(['--check', '--config-dir', str(configs)]) == 1
    assert GEN.main(['--config-dir', str(configs)]) == 0  # rewrites
    assert GEN.problems(str(configs)) == []


def test_config_is_one_snippet_away_from_its_baseline():
    """The attention config = the baseline + the snippet + the backbone's
    ImageNet checkpoint (that of its pretraining config)."""
    base = open(osp.join(CONFIG_DIR, 'mask_rcnn_r101_fpn.py')).read()
    attn = open(osp.join(CONFIG_DIR, 'mask_rcnn_sge_r101_fpn.py')).read()
    code = [ln for ln in attn.splitlines() if not ln.startswith('#')]
    assert code == [
        '_base_ = [',
        "    'mmdet::mask_rcnn/mask-rcnn_r101_fpn_2x_coco.py',",
        "    './_base_/attention/sge.py',",
        ']',
        'model = dict(',
        '    backbone=dict(',
        '        _base_.attention_backbone,',
        '        init_cfg=dict(',
        "            type='Pretrained',",
        "            prefix='backbone.',",
        "            checkpoint='work_dirs/sge_resnet101_8xb32_in1k/"
        "epoch_100.pth')))"]
    assert "'mmdet::mask_rcnn/mask-rcnn_r101_fpn_2x_coco.py'," in base
    assert 'attention' not in ''.join(
        ln for ln in base.splitlines() if not ln.startswith('#'))
    backbone = Config.fromfile(osp.join(
        CONFIG_DIR, 'mask_rcnn_sge_r101_fpn.py')).model.backbone
    assert backbone.plugins[0].cfg == dict(type='SGE', groups=64)
    assert backbone.depth == 101 and backbone.frozen_stages == 1
    assert backbone.init_cfg == GEN.pretrained_init('sge', 'r101')


@pytest.mark.parametrize('name', ['faster_rcnn_bam_r101_fpn.py',
                                  'retinanet_sk_r50_fpn.py'])
def test_preset_snippets_keep_the_inherited_resnet_keys(name):
    backbone = Config.fromfile(osp.join(CONFIG_DIR, name)).model.backbone
    assert backbone.type in ('BAMResNet', 'SKResNet')
    assert backbone.depth == int(name.split('_r')[-1].split('_')[0])
    assert backbone.frozen_stages == 1 and backbone.norm_eval is True
    assert backbone.init_cfg.checkpoint.endswith('_8xb32_in1k/epoch_100.pth')


# --------------------------------------------------------------------------
# build, one training iteration, one prediction
# --------------------------------------------------------------------------
_BATCHES = {}
INIT_CHECKED = {c for c in CONFIGS if c.startswith('demo/') or (
    c.startswith('faster_rcnn_') and c.endswith('_r50_fpn.py'))}


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """One torch thread: these tiny models gain nothing from a second one,
    and OpenMP threads that spin lose several-fold when the cores are
    shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(name, data_root, work_dir):
    cfg = Config.fromfile(osp.join(CONFIG_DIR, name))
    # Batch 2: BAM's and SK's BatchNorm over pooled vectors cannot train on
    # one image (as on COCO, where every GPU holds 2 or more).
    return tiny_detection_cfg(cfg, data_root, work_dir, max_iters=1,
                              image_size=64, batch_size=2, max_proposals=16)


def batches(cfg, with_mask):
    """One training and one validation batch, shared by every config of a
    kind (the tiny pipelines depend only on masks or not)."""
    if with_mask not in _BATCHES:
        torch.manual_seed(0)
        train = next(iter(Runner.build_dataloader(cfg.train_dataloader)))
        val = next(iter(Runner.build_dataloader(cfg.val_dataloader)))
        _BATCHES[with_mask] = (train, val)
    return _BATCHES[with_mask]


@pytest.mark.parametrize('name', CONFIGS)
def test_config_trains_one_iteration_and_predicts(name, shapes_root,
                                                  tmp_path):
    init_default_scope('mmdet')
    cfg = tiny(name, shapes_root, str(tmp_path))
    with_mask = 'mask_head' in str(cfg.model.get('roi_head', ''))
    train_batch, val_batch = copy.deepcopy(batches(cfg, with_mask))

    from mmdet.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    if name in INIT_CHECKED:
        # mmengine's init bookkeeping costs seconds per model: run it once
        # per snippet (a detector's init does not depend on the snippet).
        model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = {k: v.detach().clone() for k, v in model.named_parameters()
              if v.requires_grad}

    model.train()
    losses = model.train_step(train_batch, optim_wrapper)
    assert math.isfinite(float(losses['loss'])), losses
    if with_mask:
        assert any(k.endswith('loss_mask') for k in losses)
    changed = [k for k, v in model.named_parameters()
               if k in before and not torch.equal(v, before[k])]
    assert any(k.startswith('backbone.') for k in changed)

    model.eval()
    with torch.no_grad():
        result = model.test_step(val_batch)[0]
    pred = result.pred_instances
    assert pred.bboxes.shape[1] == 4 and torch.isfinite(pred.bboxes).all()
    assert len(pred.scores) == len(pred.labels) == len(pred.bboxes)
    assert (pred.labels < 3).all()
    if with_mask:
        assert pred.masks.shape[1:] == tuple(result.ori_shape)
