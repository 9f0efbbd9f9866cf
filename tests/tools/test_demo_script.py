"""tools/demo.py end to end (generate, train, test, report) at smoke size;
the full-size run and its figures are in the README ("The demo")."""
import os
import os.path as osp
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_demo_script_smoke(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    cmd = [sys.executable, osp.join(REPO, 'tools', 'demo.py'),
           '--work-dir', str(tmp_path / 'work'),
           '--data-root', str(tmp_path / 'shapes'), '--num-train', '8',
           '--num-val', '3', '--image-size', '64', '--iters', '2',
           '--min-bbox', '0', '--min-segm', '0']
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          timeout=900)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / 'shapes' / 'annotations' /
            'instances_train.json').is_file()
    assert (tmp_path / 'work' / 'iter_2.pth').is_file()
    assert 'bbox mAP@0.5 = ' in out and 'segm mAP@0.5 = ' in out
    for name in ('metrics.json', 'results.pkl', 'results.bbox.json',
                 'results.segm.json'):
        assert (tmp_path / 'work' / name).is_file(), name
