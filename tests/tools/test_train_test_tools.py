"""tools/train.py, tools/test.py and tools/dist_train.sh, run as a user
runs them (subprocesses), on tiny generated data on CPU."""
import argparse
import json
import os
import os.path as osp
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import REPO
from mmattn.datasets import SHAPES_CLASSES
from mmattn.engine.launch import (ConfigOptionsAction, parse_option_value,
                                  resolve_config_path)

DEMO = osp.join(REPO, 'configs', 'demo', 'mask_rcnn_eca_r18_fpn_shapes.py')
TRAIN = osp.join(REPO, 'tools', 'train.py')
TEST = osp.join(REPO, 'tools', 'test.py')
#: Long enough for the demo model to learn something on any CPU: after 40
#: iterations its bbox mAP@0.5 was 0.045 on one machine (the test wants
#: > 0.05), after 60 0.37.
TRAIN_ITERS = 60


def run(cmd, tmp_path, extra_path=(), timeout=600):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, *extra_path]),
               PYTHON=sys.executable, OMP_NUM_THREADS='1')
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


def demo_options(data_root, iters, image_size=64):
    """Point the demo config at ``data_root``, shrink it for a smoke run."""
    ann = osp.join(data_root, 'annotations', 'instances_val.json')
    scale = f'({image_size},{image_size})'
    return [
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
        f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}',
        f'train_dataloader.dataset.pipeline.2.scale={scale}',
        f'val_dataloader.dataset.pipeline.1.scale={scale}',
        f'test_dataloader.dataset.pipeline.1.scale={scale}',
        'train_dataloader.batch_size=2',
        f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
        f'default_hooks.checkpoint.interval={iters}',
        'param_scheduler=[]',  # constant lr: a smoke run has no schedule
        'default_hooks.logger.interval=1', 'log_processor.window_size=1',
    ]


# --------------------------------------------------------------------------
# --cfg-options and config names
# --------------------------------------------------------------------------
def test_cfg_option_values_with_dicts():
    plugins = parse_option_value(
        "[dict(cfg=dict(type='ECA',kernel_size=3),position='after_conv3',"
        "stages=(True,False,False,False))]")
    assert plugins == [dict(cfg=dict(type='ECA', kernel_size=3),
                            position='after_conv3',
                            stages=(True, False, False, False))]
    assert parse_option_value("dict(type='SE',rd_ratio=1./16)") == dict(
        type='SE', rd_ratio=1 / 16)
    # everything else reads exactly as mmengine's DictAction
    assert parse_option_value('[1,2,(a,b)]') == [1, 2, ('a', 'b')]
    assert parse_option_value('ECAResNet') == 'ECAResNet'
    assert parse_option_value('None') is None
    assert parse_option_value('0.5') == 0.5


@pytest.mark.parametrize('value', [
    "dict(type=__import__('os').getcwd())", "dict(**x)", 'dict(a=b)',
    "dict(type='SE'"])
def test_cfg_option_values_refuse_code(value):
    with pytest.raises(ValueError, match='--cfg-options value'):
        parse_option_value(value)


def test_cfg_options_action_parses_the_command_line():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+',
                        action=ConfigOptionsAction)
    args = parser.parse_args([
        '--cfg-options',
        "model.backbone.plugins=[dict(cfg=dict(type='ECA'),"
        "position='after_conv3')]",
        "custom_imports.imports=['mmattn']", 'train_cfg.max_iters=3'])
    assert args.cfg_options == {
        'model.backbone.plugins': [dict(cfg=dict(type='ECA'),
                                        position='after_conv3')],
        'custom_imports.imports': ['mmattn'],
        'train_cfg.max_iters': 3}


def test_resolve_config_path():
    path = resolve_config_path('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')
    assert osp.isfile(path) and path.endswith(
        osp.join('.mim', 'configs', 'retinanet', 'retinanet_r50_fpn_1x_coco'
                 '.py'))
    assert resolve_config_path(DEMO) == DEMO
    with pytest.raises(FileNotFoundError):
        resolve_config_path('mmdet::retinanet/no_such_config.py')


# --------------------------------------------------------------------------
# a plugin dropped into an unmodified mmdet config
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_plugin_into_unmodified_mmdet_config_trains(shapes_root, tmp_path):
    classes = ','.join(f"'{c}'" for c in SHAPES_CLASSES)
    options = [
        "model.backbone.plugins=[dict(cfg=dict(type='ECA'),"
        "position='after_conv3')]",
        "custom_imports.imports=['mmattn']",
        'model.backbone.init_cfg=None', 'model.bbox_head.num_classes=3',
        f'train_dataloader.dataset.data_root={shapes_root}',
        'train_dataloader.dataset.ann_file=annotations/instances_train.json',
        'train_dataloader.dataset.data_prefix.img=train/',
        f'train_dataloader.dataset.metainfo=dict(classes=({classes}))',
        'train_dataloader.dataset.pipeline.2.scale=(64,64)',
        'train_dataloader.batch_size=1', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        "train_cfg=dict(_delete_=True,type='IterBasedTrainLoop',"
        "max_iters=1,val_interval=100)",
        'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
        'param_scheduler=[]', 'log_processor.by_epoch=False',
        'default_hooks.logger.interval=1',
        "default_hooks.checkpoint=dict(_delete_=True,type='CheckpointHook',"
        "interval=1,by_epoch=False)",
    ]
    log = run([sys.executable, TRAIN,
               'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
               '--work-dir', str(tmp_path), '--cfg-options', *options],
              tmp_path)
    assert 'Iter(train) [1/1]' in log
    ckpt = torch.load(tmp_path / 'iter_1.pth', map_location='cpu',
                      weights_only=False)
    keys = ckpt['state_dict']
    # one ECA after conv3 of each of ResNet-50's 16 bottlenecks
    eca = [k for k in keys if k.startswith('backbone.layer')
           and k.endswith('.eca.conv.weight')]
    assert len(eca) == 16
    assert keys['bbox_head.retina_cls.weight'].shape[0] == 9 * 3


# --------------------------------------------------------------------------
# --compile-attention
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_training_with_compiled_attention(shapes_root, tmp_path):
    log = run([sys.executable, TRAIN, DEMO, '--compile-attention',
               '--work-dir', str(tmp_path), '--cfg-options',
               *demo_options(shapes_root, 2)], tmp_path)
    # the demo's ResNet-18 has one ECA in each of its 8 BasicBlocks
    assert 'CompileAttentionHook: compiling 8 attention modules' in log
    assert 'Iter(train) [2/2]' in log
    assert 'torch.compile failed' not in log


# --------------------------------------------------------------------------
# train, then test: metrics and a results file pycocotools re-evaluates
# --------------------------------------------------------------------------
ON_TRAIN_SPLIT = [  # evaluate where a briefly trained model scores > 0
    'test_dataloader.dataset.ann_file=annotations/instances_train.json',
    'test_dataloader.dataset.data_prefix.img=train/']


@pytest.fixture(scope='module')
def trained_demo(shapes_root, tmp_path_factory):
    """The demo config trained briefly on the tiny shapes set."""
    work_dir = tmp_path_factory.mktemp('demo_train')
    run([sys.executable, TRAIN, DEMO, '--work-dir', str(work_dir),
         '--cfg-options', *demo_options(shapes_root, TRAIN_ITERS, 96)],
        work_dir)
    return work_dir, str(work_dir / f'iter_{TRAIN_ITERS}.pth')


def coco_stats(ann_file, results, iou_type):
    """pycocotools' six AP figures of ``results`` (a COCO results file or
    list). Mask results are evaluated without their boxes, as mmdet's
    ``CocoMetric`` does: pycocotools' ``loadRes`` would take a result's box
    area, not its mask area, for the small / medium / large ranges."""
    if isinstance(results, str):
        with open(results) as f:
            results = json.load(f)
    if iou_type == 'segm':
        results = [{k: v for k, v in r.items() if k != 'bbox'}
                   for r in results]
    gt = COCO(ann_file)
    evaluator = COCOeval(gt, gt.loadRes(results), iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats


STAT_KEYS = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')


@pytest.mark.slow
def test_test_tool_metrics_and_results_file(trained_demo, shapes_root,
                                            tmp_path):
    _, checkpoint = trained_demo
    out = tmp_path / 'results.pkl'
    ann_file = osp.join(shapes_root, 'annotations', 'instances_train.json')
    log = run([sys.executable, TEST, DEMO, checkpoint, '--work-dir',
               str(tmp_path), '--out', str(out), '--cfg-options',
               *demo_options(shapes_root, TRAIN_ITERS, 96), *ON_TRAIN_SPLIT,
               f'test_evaluator.ann_file={ann_file}'], tmp_path)
    assert 'coco/bbox_mAP_50' in log
    metrics = json.loads((tmp_path / 'metrics.json').read_text())

    # the COCO-format files written next to --out evaluate to the metrics
    for task in ('bbox', 'segm'):
        results = json.loads((tmp_path / f'results.{task}.json').read_text())
        assert len(results) > 0
        stats = coco_stats(ann_file, str(tmp_path / f'results.{task}.json'),
                           task)
        for key, value in zip(STAT_KEYS, stats):
            assert metrics[f'coco/{task}_{key}'] == float(f'{value:.3f}')

    # and so does the pickle of predictions, turned into COCO results here
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == len(COCO(ann_file).getImgIds())
    dets = []
    for pred in predictions:
        inst = pred['pred_instances']
        for (x1, y1, x2, y2), score, label in zip(
                inst['bboxes'].tolist(), inst['scores'].tolist(),
                inst['labels'].tolist()):
            dets.append(dict(image_id=pred['img_id'], category_id=label + 1,
                             bbox=[x1, y1, x2 - x1, y2 - y1], score=score))
    stats = coco_stats(ann_file, dets, 'bbox')
    for key, value in zip(STAT_KEYS, stats):
        assert metrics[f'coco/bbox_{key}'] == float(f'{value:.3f}')
    assert metrics['coco/bbox_mAP_50'] > 0.05  # a model that learnt something


# --------------------------------------------------------------------------
# two processes on CPU (gloo) end with the same weights
# --------------------------------------------------------------------------
DUMP_HOOK = '''
import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DumpWeightsHook(Hook):
    """Save each rank's parameters before and after training."""

    def _dump(self, runner, tag):
        model = runner.model.module if hasattr(runner.model, 'module') \\
            else runner.model
        torch.save(dict(world_size=get_world_size(),
                        wrapper=type(runner.model).__name__,
                        params={k: v.detach().clone()
                                for k, v in model.named_parameters()}),
                   f'{runner.work_dir}/{tag}_rank{get_rank()}.pth')

    def before_train(self, runner):
        self._dump(runner, 'before')

    def after_train(self, runner):
        self._dump(runner, 'after')
'''


@pytest.mark.slow
def test_dist_train_two_cpu_processes_agree(shapes_root, tmp_path):
    (tmp_path / 'dump_weights_hook.py').write_text(textwrap.dedent(DUMP_HOOK))
    work_dir = tmp_path / 'work'
    run(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), DEMO, '2',
         '--work-dir', str(work_dir), '--cfg-options',
         *demo_options(shapes_root, 3),
         "custom_imports.imports=['mmattn','dump_weights_hook']",
         "custom_hooks=[dict(type='DumpWeightsHook')]"],
        tmp_path, extra_path=[str(tmp_path)])
    dumps = {(tag, rank): torch.load(work_dir / f'{tag}_rank{rank}.pth')
             for tag in ('before', 'after') for rank in (0, 1)}
    for dump in dumps.values():
        assert dump['world_size'] == 2
        assert dump['wrapper'] == 'MMDistributedDataParallel'
    after0, after1 = dumps['after', 0]['params'], dumps['after', 1]['params']
    assert after0.keys() == after1.keys()
    for key in after0:
        torch.testing.assert_close(after0[key], after1[key], rtol=0, atol=0,
                                   msg=key)
    moved = [k for k, v in after0.items()
             if not torch.equal(v, dumps['before', 0]['params'][k])]
    assert any('.eca.' in k for k in moved) and len(moved) > len(after0) // 2
    assert (work_dir / 'iter_3.pth').is_file()
