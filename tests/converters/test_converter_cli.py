"""The command-line converters write a checkpoint that
``init_cfg=dict(type='Pretrained')`` loads with nothing missing."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import torch
from mmengine.logging import MMLogger
from test_official_converters import (OfficialResNet, eca_extra,
                                      randomized_state, wrapped)

from mmattn.converters.common import build_backbone

MMLogger.get_current_instance().setLevel(logging.WARNING)
ROOT = Path(__file__).resolve().parents[2]


def test_ecanet_cli_to_pretrained(tmp_path):
    src = randomized_state(OfficialResNet(50, eca_extra((3, 5, 5, 7))))
    src_path, dst_path = tmp_path / 'eca.pth.tar', tmp_path / 'mmattn.pth'
    torch.save(wrapped(src), src_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), os.environ.get('PYTHONPATH', '')]))
    run = subprocess.run(
        [sys.executable, str(ROOT / 'tools/model_converters/ecanet2mmattn.py'),
         str(src_path), str(dst_path)], env=env, capture_output=True,
        text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "'type': 'ECAResNet'" in run.stdout
    saved = torch.load(dst_path, weights_only=True)
    cfg = saved['meta']['backbone']
    backbone = build_backbone(dict(
        cfg, init_cfg=dict(type='Pretrained', checkpoint=str(dst_path))))
    backbone.init_weights()
    for key in ('layer3.4.conv2.weight', 'layer4.0.eca.conv.weight',
                'layer1.0.bn3.running_var'):
        torch.testing.assert_close(backbone.state_dict()[key], src[key])
