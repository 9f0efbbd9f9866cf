"""`import mmattn` makes its modules visible to every way of building one:
an mmdet config through ``custom_imports``, an mmpretrain-scoped config,
and plain Python with no default scope. Each path runs in a fresh
interpreter so that no earlier import or default scope helps it."""
import os.path as osp
import subprocess
import sys
import textwrap

from conftest import REPO


def run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                          cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_mmdet_config_via_custom_imports(tmp_path):
    cfg_file = tmp_path / 'faster_rcnn_with_mmattn.py'
    cfg_file.write_text(textwrap.dedent('''
        _base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
        custom_imports = dict(imports=['mmattn'], allow_failed_imports=False)
        model = dict(backbone=dict(init_cfg=None, plugins=[
            dict(cfg=dict(type='ECA'), position='after_conv3')]))
    '''))
    out = run_python(f'''
        import sys
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        assert 'mmattn' not in sys.modules
        cfg = Config.fromfile({str(cfg_file)!r})
        init_default_scope(cfg.default_scope)
        from mmdet.registry import MODELS
        model = MODELS.build(cfg.model)
        n = sum(type(m).__name__ == 'ECA' for m in model.modules())
        print(type(model).__name__, n)
    ''')
    assert out.split() == ['FasterRCNN', '16']


def test_shipped_config_builds():
    config = osp.join(REPO, 'configs', 'faster_rcnn_eca_r50_fpn.py')
    out = run_python(f'''
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        cfg = Config.fromfile({config!r})
        cfg.model.backbone.init_cfg = None
        init_default_scope(cfg.default_scope)
        from mmdet.registry import MODELS
        model = MODELS.build(cfg.model)
        ks = [m.kernel_size for m in model.modules()
              if type(m).__name__ == 'ECA']
        print(ks)
    ''')
    assert out.strip() == str([3] * 3 + [5] * 10 + [7] * 3)


def test_mmpretrain_scope_finds_mmattn_modules():
    out = run_python('''
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        cfg = Config(dict(
            default_scope='mmpretrain',
            custom_imports=dict(imports=['mmattn', 'mmdet.models'],
                                allow_failed_imports=False),
            model=dict(
                type='ImageClassifier',
                backbone=dict(type='mmdet.ResNet', depth=50,
                              plugins=[dict(cfg=dict(type='SE'),
                                            position='after_conv3')]),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(type='LinearClsHead', num_classes=10,
                          in_channels=2048))))
        from mmengine.utils import import_modules_from_strings
        import_modules_from_strings(**cfg.custom_imports)
        init_default_scope(cfg.default_scope)
        from mmpretrain.registry import MODELS
        model = MODELS.build(cfg.model)
        direct = MODELS.build(dict(type='SE', in_channels=64))
        n = sum(type(m).__name__ == 'SE' for m in model.modules())
        print(type(model).__name__, n, type(direct).__module__)
    ''')
    assert out.split() == ['ImageClassifier', '16',
                           'mmattn.models.attention.se']


def test_plain_python_without_default_scope():
    out = run_python('''
        import torch
        import mmattn  # noqa: F401
        from mmengine.registry import DefaultScope
        from mmdet.models import ResNet
        assert DefaultScope.get_current_instance() is None
        net = ResNet(depth=50, plugins=[
            dict(cfg=dict(type='ECA'), position='after_conv3')])
        outs = net(torch.randn(1, 3, 64, 64))
        print(sum(type(m).__name__ == 'ECA' for m in net.modules()),
              [o.shape[1] for o in outs])
    ''')
    assert out.strip() == '16 [256, 512, 1024, 2048]'


def test_mmcv_ops_import_order_keeps_mmattn_criss_cross():
    """mmcv.ops registers its own 'CrissCrossAttention' in the same root
    registry; importing mmattn before or after it must neither crash nor
    hand out mmcv's single-pass version."""
    for first, second in (('mmattn', 'mmcv.ops'), ('mmcv.ops', 'mmattn')):
        out = run_python(f'''
            import {first}, {second}
            from mmengine.registry import MODELS
            print(MODELS.get('CrissCrossAttention').__module__)
        ''')
        assert out.strip() == 'mmattn.models.attention.ccnet'
