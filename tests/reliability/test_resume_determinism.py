"""RandomStateHook: a resumed run ends with the weights of the
uninterrupted one, for iteration- and epoch-based loops, with a validation
between a save and the next batch (validation draws from torch's
generator when it creates its data-loader iterator). A tiny mmengine model
whose data augmentation uses numpy's generator and whose loss uses
torch's and Python's, so that any difference in the random streams shows
in the weights; ``test_kill_resume.py`` does the same for a detector."""
import random

import numpy as np
import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from mmattn.engine.hooks.random_state import CHECKPOINT_KEY


class NoisyData(Dataset):
    """Eight vectors; each fetch adds numpy noise (an augmentation)."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        x = torch.full((4, ), float(index))
        noise = torch.from_numpy(np.random.randn(4).astype(np.float32))
        return dict(inputs=x + noise)


class NoisyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)
        self.draws = []

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = inputs
        draw = random.random()
        if mode == 'loss':
            self.draws.append(draw)
        out = self.linear(x * torch.rand_like(x) * draw)
        if mode == 'loss':
            return dict(loss=out.square().mean())
        return [dict(out=o) for o in out]


class CountMetric(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results.append(len(data_samples))

    def compute_metrics(self, results):
        return dict(n=sum(results))


def make_runner(work_dir, by_epoch, length, resume=False, name='',
                load_from=None):
    loader = dict(dataset=NoisyData(), batch_size=2, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=True),
                  collate_fn=dict(type='default_collate'))
    if by_epoch:
        train_cfg = dict(by_epoch=True, max_epochs=length, val_interval=1)
    else:
        train_cfg = dict(type='IterBasedTrainLoop', max_iters=length,
                         val_interval=2)
    torch.manual_seed(0)  # the same initial weights in every run
    return Runner(
        model=NoisyModel(), work_dir=str(work_dir),
        experiment_name=f'rng_{name}_{work_dir.name}',
        train_dataloader=loader, train_cfg=train_cfg,
        val_dataloader=dict(loader, sampler=dict(type='DefaultSampler',
                                                 shuffle=False)),
        val_cfg=dict(), val_evaluator=dict(type=CountMetric),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1,
                                          momentum=0.9)),
        default_hooks=dict(checkpoint=dict(
            type='CheckpointHook', interval=1, by_epoch=by_epoch),
            logger=dict(type='LoggerHook', interval=100)),
        custom_hooks=[dict(type='RandomStateHook')],
        randomness=dict(seed=0, deterministic=True), resume=resume,
        load_from=load_from)


@pytest.mark.parametrize('by_epoch,stop,total',
                         [(False, 3, 6), (True, 1, 3)],
                         ids=['iter_based', 'epoch_based'])
def test_resumed_run_ends_with_uninterrupted_weights(tmp_path, by_epoch,
                                                     stop, total):
    full = make_runner(tmp_path / 'full', by_epoch, total, name='full')
    full.train()
    expected = full.model.linear.weight.detach().clone()

    first = make_runner(tmp_path / 'split', by_epoch, stop, name='a')
    first.train()
    assert CHECKPOINT_KEY in torch.load(
        tmp_path / 'split' / ('epoch_1.pth' if by_epoch else 'iter_3.pth'),
        weights_only=False)
    resumed = make_runner(tmp_path / 'split', by_epoch, total, resume=True,
                          name='b')
    resumed.train()
    assert (resumed.epoch if by_epoch else resumed.iter) == total
    torch.testing.assert_close(resumed.model.linear.weight, expected,
                               rtol=0, atol=0)


def test_load_from_does_not_restore_the_random_state(tmp_path):
    """A new run that only loads weights starts from the seed: its random
    draws are those of a fresh run, not those after the checkpoint."""
    make_runner(tmp_path / 'a', False, 2, name='c').train()
    loaded = make_runner(tmp_path / 'b', False, 1, name='d',
                         load_from=str(tmp_path / 'a' / 'iter_2.pth'))
    loaded.train()
    fresh = make_runner(tmp_path / 'c', False, 1, name='e')
    fresh.train()
    assert loaded.model.draws == fresh.model.draws
