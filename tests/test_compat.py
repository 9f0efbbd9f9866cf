"""mmengine 0.10.7 on torch >= 2.6: checkpoints load with weights_only=True,
mmengine's own types allow-listed, everything else refused unexecuted."""
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader, load_checkpoint

from mmattn.compat import UnsafeCheckpointError


class _CreatesFile:
    """Unpickling this would create ``path`` (a stand-in for any code)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_mmengine_types_load_with_weights_only(tmp_path):
    buffer = HistoryBuffer()
    buffer.update(1.5)
    ckpt = dict(state_dict={'w': torch.ones(2)},
                message_hub=dict(log_scalars={'loss': buffer}),
                meta=dict(seed=np.int64(3), lr=np.float64(0.1),
                          arr=np.arange(4, dtype=np.float32)))
    path = tmp_path / 'mmengine.pth'
    torch.save(ckpt, path)
    with pytest.raises(Exception):  # what mmengine alone does on torch 2.13
        torch.load(path)
    loaded = CheckpointLoader.load_checkpoint(str(path))
    assert loaded['message_hub']['log_scalars']['loss'].current() == 1.5
    assert loaded['meta']['seed'] == 3
    np.testing.assert_array_equal(loaded['meta']['arr'], np.arange(4))


def test_checkpoint_with_code_is_refused_and_never_run(tmp_path):
    victim = tmp_path / 'created_by_unpickling.txt'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.ones(1)},
                'payload': _CreatesFile(str(victim))}, path)
    assert not victim.exists()
    model = torch.nn.Linear(1, 1)
    with pytest.raises(UnsafeCheckpointError, match='Refused to load'):
        load_checkpoint(model, str(path))
    assert not victim.exists()
    assert not osp.exists(victim)
    assert os.listdir(tmp_path) == ['evil.pth']
