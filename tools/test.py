"""Test (and evaluate) a detector: MMDetection 3.3's ``tools/test.py`` with
mmattn.

Same arguments and behaviour as mmdet's, plus what ``tools/train.py`` adds
(mmattn imported, ``mmdet::`` config names, ``dict(...)`` in
``--cfg-options``, ``--launcher pytorch`` on CPU, ``--compile-attention``),
and:

* the metrics are also written to ``<work-dir>/metrics.json``;
* with ``--out results.pkl`` and a ``CocoMetric`` evaluator, the COCO-format
  results are kept next to it as ``results.bbox.json`` (and
  ``results.segm.json``), files that pycocotools' ``COCO.loadRes`` reads.

Examples::

    python tools/test.py configs/faster_rcnn_eca_r50_fpn.py \\
        work_dirs/faster_rcnn_eca_r50_fpn/epoch_24.pth --out results.pkl
    tools/dist_test.sh configs/faster_rcnn_eca_r50_fpn.py ckpt.pth 8
"""
import argparse
import json
import os
import os.path as osp
import warnings
from copy import deepcopy

from mmdet.engine.hooks.utils import trigger_visualization_hook
from mmdet.evaluation import DumpDetResults
from mmdet.registry import RUNNERS
from mmdet.utils import setup_cache_size_limit_of_dynamo
from mmengine import ConfigDict
from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.runner import Runner

import mmattn  # noqa: F401  (registers every module, compatibility fixes)
import mmattn.engine  # noqa: F401  (hooks)
from mmattn.engine.hooks import add_compile_attention_hook
from mmattn.engine.launch import (ConfigOptionsAction, merge_cfg_options,
                                  resolve_config_path, setup_cpu_distributed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='MMDet test (and eval) a model')
    parser.add_argument('config', help='test config file path (or '
                        'mmdet::<dir>/<file>.py for a config of mmdet)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        type=str,
        help='dump predictions to a pickle file for offline evaluation; '
        'with a CocoMetric evaluator the COCO-format results are also '
        'written next to it (<out>.bbox.json, <out>.segm.json)')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. '
        'If specified, it will be automatically saved '
        'to the work_dir/timestamp/show_dir')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=ConfigOptionsAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'and dicts, e.g. key="[dict(type=\'ECA\'),dict(type=\'SE\')]". '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--compile-attention',
        action='store_true',
        help='run the attention modules through torch.compile (the rest of '
        'the model stays eager; see mmattn.models.compiled)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--tta', action='store_true')
    # torch.distributed.run passes --local-rank (or sets LOCAL_RANK).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _jsonable(value):
    """numpy / torch scalars and arrays in a metrics dict, for json."""
    return value.tolist() if hasattr(value, 'tolist') else str(value)


def keep_coco_results(cfg: Config, out: str) -> list:
    """Make every ``CocoMetric`` of the test evaluator that has no
    ``outfile_prefix`` write its COCO-format results next to ``out``
    (``<out without .pkl>.bbox.json`` ...). Returns the prefixes set."""
    evaluators = cfg.test_evaluator
    if isinstance(evaluators, dict):
        evaluators = [evaluators]
    prefix = osp.splitext(osp.abspath(out))[0]
    prefixes = []
    for evaluator in evaluators:
        if (evaluator.get('type') in ('CocoMetric', 'mmdet.CocoMetric')
                and not evaluator.get('outfile_prefix')):
            evaluator['outfile_prefix'] = prefix
            prefixes.append(prefix)
    return prefixes


def build_cfg(args) -> Config:
    """The config as mmdet's test.py makes it from the arguments."""
    cfg = Config.fromfile(resolve_config_path(args.config))
    cfg.launcher = args.launcher
    merge_cfg_options(cfg, args.cfg_options)

    # work_dir is determined in this priority: CLI > segment in file > filename
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    cfg.load_from = args.checkpoint

    # attention modules through torch.compile (CompileAttentionHook)
    if args.compile_attention:
        add_compile_attention_hook(cfg)

    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)

    if args.tta:
        if 'tta_model' not in cfg:
            warnings.warn('Cannot find ``tta_model`` in config, '
                          'we will set it as default.')
            cfg.tta_model = dict(
                type='DetTTAModel',
                tta_cfg=dict(
                    nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
        if 'tta_pipeline' not in cfg:
            warnings.warn('Cannot find ``tta_pipeline`` in config, '
                          'we will set it as default.')
            test_data_cfg = cfg.test_dataloader.dataset
            while 'dataset' in test_data_cfg:
                test_data_cfg = test_data_cfg['dataset']
            cfg.tta_pipeline = deepcopy(test_data_cfg.pipeline)
            flip_tta = dict(
                type='TestTimeAug',
                transforms=[
                    [
                        dict(type='RandomFlip', prob=1.),
                        dict(type='RandomFlip', prob=0.)
                    ],
                    [
                        dict(
                            type='PackDetInputs',
                            meta_keys=('img_id', 'img_path', 'ori_shape',
                                       'img_shape', 'scale_factor', 'flip',
                                       'flip_direction'))
                    ],
                ])
            cfg.tta_pipeline[-1] = flip_tta
        cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline

    if args.out is not None:
        assert args.out.endswith(('.pkl', '.pickle')), \
            'The dump file must be a pkl file.'
        keep_coco_results(cfg, args.out)
    return cfg


def main(argv=None) -> dict:
    args = parse_args(argv)

    # Reduce the number of repeated compilations and improve
    # testing speed.
    setup_cache_size_limit_of_dynamo()

    cfg = build_cfg(args)
    setup_cpu_distributed(cfg, args.launcher)

    # build the runner from config
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)

    # add `DumpResults` dummy metric
    if args.out is not None:
        runner.test_evaluator.metrics.append(
            DumpDetResults(out_file_path=args.out))

    metrics = runner.test()

    if is_main_process():
        path = osp.join(cfg.work_dir, 'metrics.json')
        with open(path, 'w') as f:
            json.dump(metrics, f, indent=1, default=_jsonable)
        runner.logger.info(f'metrics written to {path}')
    return metrics


if __name__ == '__main__':
    main()
