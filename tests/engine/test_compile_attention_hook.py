"""``CompileAttentionHook`` and the ``--compile-attention`` flag of
``tools/train.py`` / ``tools/test.py``."""
import os.path as osp
from types import SimpleNamespace

import pytest
from conftest import REPO
from helpers import load_tool
from mmdet.models import ResNet
from mmengine.config import Config
from mmengine.logging import MMLogger

from mmattn.engine.hooks import (CompileAttentionHook,
                                 add_compile_attention_hook)
from mmattn.models.compiled import is_compiled

DEMO = osp.join(REPO, 'configs', 'demo', 'mask_rcnn_eca_r18_fpn_shapes.py')


def test_hook_is_added_once():
    cfg = Config(dict(custom_hooks=[dict(type='NAMSparsityHook')]))
    add_compile_attention_hook(cfg)
    add_compile_attention_hook(cfg)
    assert [h['type'] for h in cfg.custom_hooks] == [
        'NAMSparsityHook', 'CompileAttentionHook']


def test_hook_compiles_the_attention_of_the_runner_s_model():
    model = ResNet(depth=50, plugins=[
        dict(cfg=dict(type='ECA'), position='after_conv3')])
    runner = SimpleNamespace(model=model,
                             logger=MMLogger.get_current_instance())
    CompileAttentionHook(dynamic=False).before_run(runner)
    ecas = [m for n, m in model.named_modules() if n.endswith('.eca')]
    assert len(ecas) == 16 and all(is_compiled(m) for m in ecas)
    assert model.layer1[0].eca._compiled_call_impl.options['dynamic'] is False
    assert not is_compiled(model.layer1[0].conv1)


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_flag_adds_the_hook(tool):
    module = load_tool(f'tools/{tool}.py')
    argv = [DEMO] + (['ckpt.pth'] if tool == 'test' else [])
    for flag, expected in (([], False), (['--compile-attention'], True)):
        cfg = module.build_cfg(module.parse_args(argv + flag))
        hooks = [h['type'] for h in cfg.get('custom_hooks', [])]
        assert ('CompileAttentionHook' in hooks) is expected, hooks
