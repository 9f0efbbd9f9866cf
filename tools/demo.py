"""The embedded demo: ECA Mask R-CNN on generated shapes, on CPU.

1. generates the COCO-format shapes dataset (boxes + instance masks,
   train and val splits; deterministic) into ``--data-root``;
2. trains ``configs/demo/mask_rcnn_eca_r18_fpn_shapes.py`` with
   ``tools/train.py``;
3. evaluates the last checkpoint on the val split with ``tools/test.py``
   (COCO bbox and segm mAP through pycocotools) and prints the metrics.

It exits with status 1 if bbox mAP@0.5 or segm mAP@0.5 is below its target
(``--min-bbox``, ``--min-segm``). ``make demo`` runs it with the defaults.

Example::

    python tools/demo.py                      # the README's figures
    python tools/demo.py --iters 20 --num-train 16 --num-val 4 \\
        --min-bbox 0 --min-segm 0            # a smoke run
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'demo', 'mask_rcnn_eca_r18_fpn_shapes.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=CONFIG)
    parser.add_argument('--work-dir',
                        default=osp.join(ROOT, 'work_dirs', 'demo'))
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data',
                                                        'shapes'))
    parser.add_argument('--num-train', type=int, default=400)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--image-size', type=int, default=192)
    parser.add_argument('--iters', type=int, default=None,
                        help='training iterations (default: the config\'s)')
    parser.add_argument('--min-bbox', type=float, default=0.7,
                        help='target bbox mAP@0.5')
    parser.add_argument('--min-segm', type=float, default=0.6,
                        help='target segm mAP@0.5 (Mask R-CNN)')
    return parser.parse_args(argv)


def generate(args) -> None:
    """Generate the dataset, unless ``data_root`` already holds the one
    these arguments generate (it is deterministic)."""
    params = dict(num_train=args.num_train, num_val=args.num_val,
                  image_size=args.image_size, seed=0)
    stamp = osp.join(args.data_root, 'generated_with.json')
    if osp.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == params:
                return
    from mmattn.datasets import generate_shapes_coco
    generate_shapes_coco(args.data_root, **params)
    with open(stamp, 'w') as f:
        json.dump(params, f)


def data_options(data_root: str) -> list:
    """``--cfg-options`` pointing the config's dataset at ``data_root``."""
    ann = osp.join(data_root, 'annotations', 'instances_val.json')
    return [f'train_dataloader.dataset.data_root={data_root}',
            f'val_dataloader.dataset.data_root={data_root}',
            f'test_dataloader.dataset.data_root={data_root}',
            f'val_evaluator.ann_file={ann}',
            f'test_evaluator.ann_file={ann}']


def schedule_options(config: str, iters: int) -> list:
    """``--cfg-options`` training the config for ``iters`` iterations, its
    lr schedule (iteration-based) scaled to match."""
    from mmengine.config import Config
    cfg = Config.fromfile(config, import_custom_modules=False)
    max_iters = cfg.train_cfg.max_iters
    scale = iters / max_iters
    options = [f'train_cfg.max_iters={iters}',
               f'default_hooks.checkpoint.interval={iters}']
    for i, scheduler in enumerate(cfg.param_scheduler):
        # a scheduler keeps at least one iteration (mmengine requires
        # end > begin); milestones stay inside the shortened run
        begin = round(scheduler.get('begin', 0) * scale)
        end = max(begin + 1, round(scheduler.get('end', max_iters) * scale))
        options += [f'param_scheduler.{i}.begin={begin}',
                    f'param_scheduler.{i}.end={end}']
        if 'milestones' in scheduler:
            milestones = ','.join(str(min(iters, max(1, round(m * scale))))
                                  for m in scheduler['milestones'])
            options.append(f'param_scheduler.{i}.milestones=[{milestones}]')
    return options


def run(cmd: list) -> None:
    print('+', ' '.join(cmd), flush=True)
    # Idle OpenMP threads sleep instead of spinning: with spinning, torch's
    # two threads slow down several-fold as soon as anything else runs on
    # the two cores (measured 9.9 s vs 1.7 s per iteration).
    env = dict(os.environ)
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    generate(args)
    print(f'dataset: {args.num_train} train / {args.num_val} val images '
          f'({args.image_size} px) in {args.data_root} '
          f'[{time.time() - start:.0f} s]', flush=True)

    options = data_options(args.data_root)
    # no evaluation inside training: tools/test.py evaluates right after
    train_options = options + ['train_cfg.val_interval=1000000']
    if args.iters is not None:
        train_options += schedule_options(args.config, args.iters)
    run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), args.config,
         '--work-dir', args.work_dir, '--cfg-options', *train_options])
    trained = time.time()
    with open(osp.join(args.work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()

    results = osp.join(args.work_dir, 'results.pkl')
    run([sys.executable, osp.join(ROOT, 'tools', 'test.py'), args.config,
         checkpoint, '--work-dir', args.work_dir, '--out', results,
         '--cfg-options', *options])
    with open(osp.join(args.work_dir, 'metrics.json')) as f:
        metrics = json.load(f)
    end = time.time()

    print(f'\nECA Mask R-CNN on generated shapes ({args.num_val} val '
          f'images): training {trained - start:.0f} s, total '
          f'{end - start:.0f} s wall')
    failed = False
    for task, target in (('bbox', args.min_bbox), ('segm', args.min_segm)):
        key = f'coco/{task}_mAP_50'
        if key not in metrics:
            continue
        ok = metrics[key] >= target
        failed |= not ok
        print(f'  {task} mAP@0.5 = {metrics[key]:.3f} (target >= {target}: '
              f'{"ok" if ok else "MISSED"}), mAP@[.5:.95] = '
              f'{metrics[f"coco/{task}_mAP"]:.3f}')
    print(f'  metrics: {osp.join(args.work_dir, "metrics.json")}; '
          f'predictions: {results} (+ .bbox.json / .segm.json)')
    return 1 if failed else 0


if __name__ == '__main__':
    os.environ.setdefault('PYTHONUNBUFFERED', '1')
    sys.exit(main())
