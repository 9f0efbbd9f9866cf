"""Train a detector, or pretrain its backbone on ImageNet: MMDetection 3.3's
``tools/train.py`` with mmattn.

Same arguments and behaviour as mmdet's, plus: mmattn is imported (no
config needs ``custom_imports``), the config may be mmdet's own
(``mmdet::<dir>/<file>.py``), ``--cfg-options`` also reads values with
``dict(...)`` (a plugin list on the command line), and ``--launcher
pytorch`` works on CPU-only machines (gloo). See
:mod:`mmattn.engine.launch`. A :class:`~mmattn.engine.RandomStateHook` is
added, so that ``--resume`` continues with the random numbers of the
uninterrupted run; ``--amp`` also works on CPU (bfloat16, see
:mod:`mmattn.compat_amp`); ``--compile-attention`` runs the attention
modules through ``torch.compile`` (:mod:`mmattn.models.compiled`). A
backbone ``Pretrained`` checkpoint that is a missing local file is dealt
with before anything is built
(:func:`~mmattn.engine.launch.resolve_pretrained_backbone`): the ImageNet
checkpoint of a pretraining config not run yet gives way to torchvision's
weights, with a warning; any other is an error.

The pretraining configs (``configs/pretrain/``, mmpretrain scope) train
with the same command; their last checkpoint is where the detection configs
of the same attention and depth look for it.

Examples::

    python tools/train.py configs/faster_rcnn_eca_r50_fpn.py
    python tools/train.py configs/demo/mask_rcnn_eca_r18_fpn_shapes.py \\
        --work-dir work_dirs/demo
    python tools/train.py mmdet::retinanet/retinanet_r50_fpn_1x_coco.py \\
        --cfg-options model.backbone.type=ECAResNet
    tools/dist_train.sh configs/mask_rcnn_sge_r101_fpn.py 8
    tools/dist_train.sh configs/pretrain/eca_resnet50_8xb32_in1k.py 8
"""
import argparse
import os
import os.path as osp

from mmdet.utils import setup_cache_size_limit_of_dynamo
from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmattn  # noqa: F401  (registers every module, compatibility fixes)
import mmattn.engine  # noqa: F401  (hooks, e.g. NAMSparsityHook)
from mmattn.engine.hooks import (add_compile_attention_hook,
                                 add_random_state_hook)
from mmattn.engine.launch import (ConfigOptionsAction, merge_cfg_options,
                                  resolve_config_path,
                                  resolve_pretrained_backbone,
                                  setup_cpu_distributed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train a detector or an ImageNet classifier')
    parser.add_argument('config', help='train config file path (or '
                        'mmdet::<dir>/<file>.py for a config of mmdet)')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
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
    # torch.distributed.run passes --local-rank (or sets LOCAL_RANK).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_cfg(args) -> Config:
    """The config as mmdet's train.py makes it from the arguments."""
    cfg = Config.fromfile(resolve_config_path(args.config))
    cfg.launcher = args.launcher
    merge_cfg_options(cfg, args.cfg_options)

    # work_dir is determined in this priority: CLI > segment in file > filename
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    # enable automatic-mixed-precision training
    if args.amp is True:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'

    # enable automatically scaling LR (mmpretrain's configs carry no
    # ``enable`` key, only ``base_batch_size``)
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise RuntimeError('--auto-scale-lr: the config has no '
                               '"auto_scale_lr.base_batch_size" (the batch '
                               'size its learning rate is set for)')
        cfg.auto_scale_lr.enable = True

    # a resumed run continues with the random numbers of the uninterrupted
    # one (RandomStateHook)
    add_random_state_hook(cfg)

    # attention modules through torch.compile (CompileAttentionHook)
    if args.compile_attention:
        add_compile_attention_hook(cfg)

    # resume is determined in this priority: resume from > auto_resume
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None):
    args = parse_args(argv)

    # Reduce the number of repeated compilations and improve
    # training speed.
    setup_cache_size_limit_of_dynamo()

    cfg = build_cfg(args)
    resolve_pretrained_backbone(cfg)
    setup_cpu_distributed(cfg, args.launcher)

    # build the runner from config
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)

    runner.train()


if __name__ == '__main__':
    main()
