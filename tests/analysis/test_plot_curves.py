"""``tools/analysis/plot_curves.py`` on logs written by mmengine's own
``LocalVisBackend``: a baseline and an attention variant."""
import json

import numpy as np
import pytest
from analysis_tools import load_tool
from mmengine.visualization import LocalVisBackend

from mmattn.analysis.curves import default_metric, load_run, smooth

PLOT_CURVES = load_tool('plot_curves')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def write_run(work_dir, loss0: float, maps) -> None:
    """What an epoch-based mmdet run logs: training records every 5
    iterations (10 per epoch), a COCO evaluation after each epoch, in
    ``<work_dir>/<timestamp>/vis_data/scalars.json``."""
    backend = LocalVisBackend(str(work_dir / '20260101_000000' /
                                  'vis_data'))
    it = 0
    for epoch, mean_ap in enumerate(maps, 1):
        for _ in range(2):
            it += 5
            backend.add_scalars(
                dict(lr=0.02, loss=loss0 / it ** 0.5, loss_cls=0.1,
                     time=0.5, epoch=epoch, iter=it, memory=100), step=it)
        backend.add_scalars({'coco/bbox_mAP': mean_ap,
                             'coco/bbox_mAP_50': mean_ap + 0.2,
                             'data_time': 0.01, 'time': 0.2}, step=epoch)


def test_baseline_and_variant_on_one_png(tmp_path, capsys):
    write_run(tmp_path / 'faster_rcnn_r50_fpn', 2.0, [0.10, 0.20, 0.25])
    write_run(tmp_path / 'faster_rcnn_eca_r50_fpn', 1.8, [0.12, 0.23, 0.28])
    with open(tmp_path / 'faster_rcnn_r50_fpn' / '20260101_000000' /
              'vis_data' / 'scalars.json', 'a') as f:
        f.write('{"loss": 0.5, "ste')  # a line still being written
    out = tmp_path / 'curves.png'
    runs = PLOT_CURVES.main([
        str(tmp_path / 'faster_rcnn_r50_fpn'),
        str(tmp_path / 'faster_rcnn_eca_r50_fpn'), '--labels', 'baseline',
        'ECA', '--smooth', '2', '--out', str(out), '--dpi', '50'])
    with open(out, 'rb') as f:
        assert f.read(8) == PNG_SIGNATURE
    assert out.stat().st_size > 5000
    assert [r.label for r in runs] == ['baseline', 'ECA']
    base, eca = runs
    assert base.by_epoch
    steps, loss = base.train['loss']
    np.testing.assert_array_equal(steps, [5, 10, 15, 20, 25, 30])
    np.testing.assert_allclose(loss, 2.0 / steps ** 0.5)
    epochs, mean_ap = eca.val['coco/bbox_mAP']
    np.testing.assert_array_equal(epochs, [1, 2, 3])
    np.testing.assert_allclose(mean_ap, [0.12, 0.23, 0.28])
    assert 'loss' not in base.val and 'coco/bbox_mAP' not in base.train
    assert default_metric(runs) == 'coco/bbox_mAP'
    assert '2 run(s)' in capsys.readouterr().out


def test_run_from_file_and_default_label(tmp_path):
    write_run(tmp_path / 'my_run', 1.0, [0.3])
    scalars = (tmp_path / 'my_run' / '20260101_000000' / 'vis_data' /
               'scalars.json')
    assert load_run(str(scalars)).label == 'my_run'
    assert load_run(str(tmp_path / 'my_run')).label == 'my_run'
    lines = [json.loads(line) for line in scalars.read_text().splitlines()]
    assert len(lines) == 3
    with pytest.raises(FileNotFoundError):
        load_run(str(tmp_path / 'missing'))


def test_smooth_is_a_trailing_mean():
    values = np.array([1., 3., 5., 7.])
    np.testing.assert_allclose(smooth(values, 2), [1., 2., 4., 6.])
    np.testing.assert_allclose(smooth(values, 1), values)
    np.testing.assert_allclose(smooth(values, 10), [1., 2., 3., 4.])
