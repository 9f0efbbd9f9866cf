"""Kill and resume (issue 8, acceptance 1): a toy training run through
``tools/train.py`` is killed with SIGKILL at three random moments, one of
them inside a checkpoint save, resumed with ``--resume`` each time, and
ends with exactly the weights of an uninterrupted run."""
import json
import os
import os.path as osp
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from mmengine.runner.checkpoint import CheckpointLoader

from reliability_toy import REPO, toy_cfg, toy_data  # noqa: F401

RUNNER = osp.join(osp.dirname(osp.abspath(__file__)),
                  'kill_resume_runner.py')
MAX_ITERS = 8
SEED = 20240607  # the kill moments are drawn from this seed


class Launcher:
    """Drives ``kill_resume_runner.py`` (one import, one fork per run)."""

    def __init__(self, tmp_path):
        env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
        self.proc = subprocess.Popen(
            [sys.executable, RUNNER], cwd=str(tmp_path), env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._read() == {'ready': True}

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, f'launcher died (exit {self.proc.wait()})'
        return json.loads(line)

    def start(self, argv, log, stall=''):
        self.proc.stdin.write(json.dumps(dict(argv=argv, log=str(log),
                                              stall=stall)) + '\n')
        self.proc.stdin.flush()
        return self._read()['pid']

    def wait(self, pid) -> int:
        message = self._read()
        assert message['pid'] == pid
        return message['status']

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write('\n')
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def wait_for(log, pattern, pid, timeout=600):
    """Poll the child's log until ``pattern`` appears; its match."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = open(log).read() if osp.exists(log) else ''
        match = re.search(pattern, text)
        if match:
            return match
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise AssertionError(f'run ended before {pattern!r}:\n'
                                 f'{text[-3000:]}')
        time.sleep(0.05)
    raise AssertionError(f'timeout waiting for {pattern!r}')


def last_checkpoint(work_dir):
    """(path named by last_checkpoint, its iteration), or (None, 0); the
    file named must be a complete checkpoint."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.exists(pointer):
        return None, 0
    path = open(pointer).read().strip()
    assert osp.isfile(path), f'last_checkpoint names a missing {path}'
    ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    assert {'state_dict', 'optimizer', 'meta'} <= set(ckpt)
    return path, ckpt['meta']['iter']


@pytest.mark.slow
def test_sigkill_three_times_then_resume_equals_uninterrupted(
        toy_data, tmp_path):  # noqa: F811
    rng = random.Random(SEED)
    cfg = toy_cfg(toy_data, str(tmp_path / 'unused'), MAX_ITERS)
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', interval=1, by_epoch=False, max_keep_ckpts=1)
    cfg.randomness = dict(seed=0, deterministic=True)
    config = str(tmp_path / 'toy_faster_rcnn_eca.py')
    cfg.dump(config)
    ref_dir, run_dir = str(tmp_path / 'reference'), str(tmp_path / 'killed')

    launcher = Launcher(tmp_path)
    try:
        pid = launcher.start([config, '--work-dir', ref_dir],
                             tmp_path / 'reference.log')
        assert launcher.wait(pid) == 0, open(tmp_path / 'reference.log').read()

        resume = [config, '--work-dir', run_dir, '--resume']
        # moment 1 and 3: a random point of a random iteration (maybe
        # inside its checkpoint save, maybe in the next forward pass);
        # moment 2: inside a save, either before the new checkpoint is
        # renamed into place or before last_checkpoint is updated.
        kills = [('random', rng.randint(1, 2)),
                 ('save', rng.choice(['.pth.tmp', 'last_checkpoint.tmp'])),
                 ('random', rng.randint(1, 2))]
        done = 0
        for i, (kind, arg) in enumerate(kills):
            log = tmp_path / f'killed_{i}.log'
            if kind == 'random':
                pid = launcher.start(resume, log)
                # an iteration that leaves the run one more to be killed in
                target = min(done + arg, MAX_ITERS - 2)
                line = wait_for(
                    log, rf'Iter\(train\) \[{target}/{MAX_ITERS}\]'
                    r'.*?time: ([0-9.]+)', pid)
                # a random moment within about one more iteration, as long
                # as the log says one takes on this machine (a fixed
                # interval spanned five of them on a fast one)
                time.sleep(rng.uniform(0, float(line[1])))
            else:
                pid = launcher.start(resume, log, stall=f'2:{arg}')
                wait_for(log, r'IN_SAVE ', pid)
                tmp_file = re.search(r'IN_SAVE (\S+)', open(log).read())[1]
            os.kill(pid, signal.SIGKILL)
            assert launcher.wait(pid) == -signal.SIGKILL
            path, done = last_checkpoint(run_dir)
            if kind == 'save':
                # killed with the temporary file written, not renamed
                assert osp.isfile(tmp_file)
                assert path is not None and done >= 1
            assert done < MAX_ITERS

        log = tmp_path / 'final.log'
        pid = launcher.start(resume, log)
        assert launcher.wait(pid) == 0, open(log).read()[-5000:]
        assert f'Iter(train) [{MAX_ITERS}/{MAX_ITERS}]' in open(log).read()
    finally:
        launcher.close()

    final = f'iter_{MAX_ITERS}.pth'
    expected = CheckpointLoader.load_checkpoint(osp.join(ref_dir, final))
    resumed = CheckpointLoader.load_checkpoint(osp.join(run_dir, final))
    assert resumed['meta']['iter'] == MAX_ITERS
    assert set(resumed['state_dict']) == set(expected['state_dict'])
    for key, value in expected['state_dict'].items():
        assert torch.equal(resumed['state_dict'][key], value), key
