"""Training curves (loss, mAP) of one or several runs from mmengine's
logs, for comparing a baseline with its attention variant.

mmengine's ``LocalVisBackend`` writes ``<work_dir>/<timestamp>/vis_data/
scalars.json``: one JSON object per line, either a training record
(``loss``, ``loss_*``, ``lr``, ``iter``, ``epoch`` for epoch-based loops,
``step`` = global iteration) or a validation record (metrics such as
``coco/bbox_mAP``, ``step`` = epoch for epoch-based loops, iteration
otherwise).
"""
from __future__ import annotations

import glob
import json
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

Series = Tuple[np.ndarray, np.ndarray]


def find_scalars(path: str) -> str:
    """The ``scalars.json`` of ``path``: the file itself, or the newest
    ``vis_data/scalars.json`` below a work / run directory."""
    if osp.isfile(path):
        return path
    found = sorted(glob.glob(osp.join(path, '**', 'vis_data',
                                      'scalars.json'), recursive=True))
    if not found and osp.isfile(osp.join(path, 'scalars.json')):
        found = [osp.join(path, 'scalars.json')]
    if not found:
        raise FileNotFoundError(f'no vis_data/scalars.json under {path!r}')
    return max(found, key=osp.getmtime)


def _is_train(record: dict) -> bool:
    return any(key == 'loss' or key.startswith('loss_') for key in record)


@dataclass
class Run:
    """The scalars of one run.

    Attributes:
        label (str): Its name in the legend.
        train (dict): Key -> (steps, values) of training records (x:
            global iteration).
        val (dict): Key -> (steps, values) of validation records (x: epoch
            for epoch-based runs, iteration otherwise).
        by_epoch (bool): Whether the training records carry an epoch.
    """

    label: str
    train: Dict[str, Series] = field(default_factory=dict)
    val: Dict[str, Series] = field(default_factory=dict)
    by_epoch: bool = False


def load_run(path: str, label: Optional[str] = None) -> Run:
    """Read a run from its ``scalars.json`` (or a directory holding one,
    see :func:`find_scalars`). Unparsable lines are skipped (a log being
    written)."""
    scalars = find_scalars(path)
    train: Dict[str, List[Tuple[float, float]]] = {}
    val: Dict[str, List[Tuple[float, float]]] = {}
    by_epoch = False
    with open(scalars) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict) or 'step' not in record:
                continue
            is_train = _is_train(record)
            by_epoch |= is_train and 'epoch' in record
            target = train if is_train else val
            for key, value in record.items():
                if key != 'step' and isinstance(value, (int, float)):
                    target.setdefault(key, []).append(
                        (record['step'], float(value)))
    if label is None:
        label = _default_label(path, scalars)

    def arrays(d):
        return {k: (np.array([s for s, _ in v]), np.array([x for _, x in v]))
                for k, v in d.items()}

    return Run(label, arrays(train), arrays(val), by_epoch)


def _default_label(path: str, scalars: str) -> str:
    """The work-dir name: ``work_dirs/<name>/<timestamp>/vis_data/..``."""
    if osp.isdir(path):
        return osp.basename(osp.normpath(path))
    parts = osp.normpath(scalars).split(osp.sep)
    return parts[-4] if len(parts) >= 4 else parts[0]


def default_metric(runs: Sequence[Run]) -> Optional[str]:
    """``coco/bbox_mAP`` if a run logged it, else the first validation key
    ending in 'mAP' (then any validation key)."""
    keys = [k for run in runs for k in run.val]
    for wanted in ('coco/bbox_mAP', ):
        if wanted in keys:
            return wanted
    for key in keys:
        if key.endswith('mAP'):
            return key
    return next((k for k in keys if k not in ('time', 'data_time')), None)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (1: unchanged)."""
    if window <= 1 or values.size == 0:
        return values
    kernel = np.ones(min(window, values.size))
    sums = np.convolve(values, kernel, mode='full')[:values.size]
    counts = np.convolve(np.ones_like(values), kernel,
                         mode='full')[:values.size]
    return sums / counts


def plot_curves(runs: Sequence[Run],
                loss_key: str = 'loss',
                metric_key: Optional[str] = None,
                smooth_window: int = 1,
                title: str = ''):
    """A two-panel figure: ``loss_key`` against iterations and
    ``metric_key`` (default :func:`default_metric`) against epochs (or
    iterations), one line per run. Returns the matplotlib figure."""
    from matplotlib.figure import Figure
    metric_key = metric_key or default_metric(runs)
    fig = Figure(figsize=(12, 4.5))
    ax_loss, ax_metric = fig.subplots(1, 2)
    for run in runs:
        if loss_key in run.train:
            steps, values = run.train[loss_key]
            ax_loss.plot(steps, smooth(values, smooth_window),
                         label=run.label, lw=1.2)
        if metric_key and metric_key in run.val:
            steps, values = run.val[metric_key]
            ax_metric.plot(steps, values, marker='o', label=run.label)
    ax_loss.set_xlabel('iteration')
    ax_loss.set_ylabel(loss_key + (f' (moving average of {smooth_window})'
                                   if smooth_window > 1 else ''))
    ax_loss.set_title(f'training {loss_key}')
    by_epoch = any(run.by_epoch for run in runs)
    ax_metric.set_xlabel('epoch' if by_epoch else 'iteration')
    ax_metric.set_ylabel(metric_key or 'no validation metric logged')
    ax_metric.set_title(f'validation {metric_key}' if metric_key else
                        'validation: no metric logged')
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ = ['Run', 'find_scalars', 'load_run', 'default_metric', 'smooth',
           'plot_curves']
