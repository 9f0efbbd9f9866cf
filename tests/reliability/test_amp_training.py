"""Mixed precision (issue 8, acceptance 3): ``--amp`` training (bfloat16
autocast on CPU) of attention Faster R-CNNs on the toy data, with every
attention module: 20 iterations, finite losses, and no attention module
ever turns a finite input into inf/NaN.

To cover every module in 20 iterations each, the modules share two toy
detectors (ResNet-18 body with its standard widths, default module
arguments, each module at its default position in one stage; SK and PSA
convs replace the strided 3x3 convs). A forward hook on every module
records non-finite outputs, so a failure names the module."""
import os.path as osp

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmdet.registry import MODELS

from helpers import load_tool
from mmattn.compat_amp import AmpOptimWrapper
from reliability_toy import REPO, contract_module, toy_cfg, toy_data  # noqa

ITERS = 20
S1, S2, S3, S4 = ((True, False, False, False), (False, True, False, False),
                  (False, False, True, False), (False, False, False, True))


def plugin(name, stages, position=None):
    """``name`` with its default arguments, at its default position (mmcv's
    ContextBlock states none: GC-ResNet's after_conv3)."""
    entry = dict(cfg=contract_module().plugin_cfg(name), stages=stages)
    if position is not None:
        entry['position'] = position
    return entry


#: Two detectors that together hold every attention module.
NETWORKS = {
    'sk': dict(
        attn_conv=dict(type='SKConv'),
        plugins=[
            plugin('SE', S1), plugin('SimAM', S1), plugin('CBAM', S2),
            plugin('MultiSpectralAttention', S2), plugin('SGE', S3),
            plugin('CoordAttention', S4), plugin('NonLocal', S3),
            plugin('GlobalContext', S4),
            plugin('BAM', (True, True, True, False)),
            plugin('DualAttention', S4)]),
    'psa': dict(
        attn_conv=dict(type='PSAConv'),
        plugins=[
            plugin('ECA', S1), plugin('NAM', S2), plugin('GatherExcite', S2),
            plugin('ContextBlock', S3, 'after_conv3'),
            plugin('TripletAttention', S4),
            plugin('ResidualAttention', (True, True, True, False)),
            plugin('CrissCrossAttention', S4)]),
}


def test_networks_hold_every_attention_module():
    names = [p['cfg']['type'] for n in NETWORKS.values()
             for p in n['plugins']]
    assert sorted(names) == sorted(contract_module().TYPE_NAMES)


def test_amp_flag_builds_cpu_bf16_optim_wrapper():
    """``tools/train.py --amp`` on a CPU machine: mmengine's wrapper
    asserts a GPU; mmattn's takes over the name with bfloat16."""
    train = load_tool('tools/train.py')
    cfg = train.build_cfg(train.parse_args(
        [osp.join(REPO, 'configs', 'faster_rcnn_eca_r50_fpn.py'), '--amp']))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    with DefaultScope.overwrite_default_scope('mmdet'):
        wrapper = build_optim_wrapper(torch.nn.Linear(2, 2),
                                      cfg.optim_wrapper)
    assert isinstance(wrapper, AmpOptimWrapper)
    assert wrapper.cast_dtype == torch.bfloat16
    with pytest.raises(ValueError, match='dtype'):
        AmpOptimWrapper(optimizer=torch.optim.SGD(
            torch.nn.Linear(2, 2).parameters(), lr=0.1), dtype='float16')


def attention_modules(model):
    from mmcv.cnn import ContextBlock

    from mmattn.models.attention import AttentionModule
    from mmattn.models.backbones import PSAConv, SKConv
    kinds = (AttentionModule, ContextBlock, SKConv, PSAConv)
    return {name: m for name, m in model.backbone.named_modules()
            if isinstance(m, kinds)}


@pytest.mark.slow
@pytest.mark.parametrize('network', sorted(NETWORKS))
def test_amp_training_every_module_stays_finite(network, toy_data, tmp_path):
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = toy_cfg(toy_data, str(tmp_path), ITERS, base_channels=64,
                  **NETWORKS[network])
    # what tools/train.py --amp sets
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
        model.init_weights()
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        loader = Runner.build_dataloader(cfg.train_dataloader)
    assert isinstance(optim_wrapper, AmpOptimWrapper)

    modules = attention_modules(model)
    kinds = {type(m).__name__ for m in modules.values()}
    expected = {p['cfg']['type'] for p in NETWORKS[network]['plugins']}
    assert expected | {NETWORKS[network]['attn_conv']['type']} <= kinds
    bad, dtypes = [], set()

    def check(name):
        def hook(module, inputs, output):
            x = inputs[0]
            dtypes.add(x.dtype)
            if torch.isfinite(x).all() and not torch.isfinite(output).all():
                bad.append((name, type(module).__name__))
        return hook

    handles = [m.register_forward_hook(check(n)) for n, m in modules.items()]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    try:
        model.train()
        data_iter = iter(loader)
        for i in range(ITERS):
            try:
                batch = next(data_iter)
            except StopIteration:
                data_iter = iter(loader)
                batch = next(data_iter)
            log_vars = model.train_step(batch, optim_wrapper)
            losses = {k: float(v) for k, v in log_vars.items()
                      if 'loss' in k}
            assert all(torch.isfinite(torch.tensor(list(losses.values())))), \
                (i, losses)
            assert not bad, f'non-finite output of {bad[0]} at iteration {i}'
    finally:
        for handle in handles:
            handle.remove()
        torch.set_num_threads(threads)
    assert torch.bfloat16 in dtypes  # the modules did run under autocast
    changed = [n for n, p in model.named_parameters()
               if not torch.equal(p, before[n])]
    assert len(changed) > len(before) // 2  # the steps were taken
    assert all(torch.isfinite(p).all() for p in model.parameters())
