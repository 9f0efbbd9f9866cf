"""Untrusted checkpoints (issue 8): every checkpoint load path (resume,
``load_from``, ``init_cfg`` Pretrained, the weight converters, and the
remote schemes ``http(s)://``, ``torchvision://``, ``open-mmlab://``,
``mmcls://``, ``pavi://``, ``s3://``) loads with ``weights_only=True``; a
checkpoint carrying code is refused, unexecuted, with a message that says
why. Remote files are placed in torch hub's cache beforehand (nothing is
downloaded)."""
import os.path as osp
import sys
import types
import zipfile
from urllib.parse import urlparse

import pytest
import torch
from mmdet.models import ResNet
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import (CheckpointLoader,
                                        get_external_models,
                                        get_mmcls_models,
                                        get_torchvision_models,
                                        load_checkpoint)

from mmattn import compat_checkpoint
from mmattn.compat import UnsafeCheckpointError
from mmattn.converters import convert_timm
from mmattn.converters.cli import main as converter_main
from mmattn.converters.common import load_source

#: What the refusal must say.
WHY = r'Refused to load checkpoint .* could run code'


class CreatesFile:
    """Unpickling this creates ``path`` (a stand-in for any code)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / 'created_by_unpickling.txt'
    yield str(path)
    assert not path.exists(), 'the checkpoint ran code'


def evil_checkpoint(path, victim):
    torch.save({'state_dict': {'conv1.weight': torch.zeros(64, 3, 7, 7)},
                'meta': {'iter': 1}, 'payload': CreatesFile(victim)}, path)
    return str(path)


def mmengine_checkpoint():
    """What mmengine writes besides tensors (allowed)."""
    buffer = HistoryBuffer()
    buffer.update(1.5)
    return {'state_dict': {'w': torch.ones(2)},
            'message_hub': {'log_scalars': {'loss': buffer}},
            'meta': {'iter': 3}}


@pytest.fixture
def hub_dir(tmp_path):
    """torch hub's cache, pointed at an empty directory."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))
    cache = tmp_path / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    yield cache
    torch.hub.set_dir(old)


def cached(hub_dir, url):
    return str(hub_dir / osp.basename(urlparse(url).path))


class TinyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.linear(inputs)


# --------------------------------------------------------------------------
# local paths: resume, load_from, init_cfg, converters
# --------------------------------------------------------------------------
@pytest.mark.parametrize('resume', [True, False], ids=['resume', 'load_from'])
def test_runner_refuses_code(resume, tmp_path, victim):
    path = evil_checkpoint(tmp_path / 'evil.pth', victim)
    runner = Runner(model=TinyModel(), work_dir=str(tmp_path / 'work'),
                    load_from=path, resume=resume)
    with pytest.raises(UnsafeCheckpointError, match=WHY):
        runner.load_or_resume()


def test_pretrained_init_refuses_code(tmp_path, victim):
    path = evil_checkpoint(tmp_path / 'evil.pth', victim)
    backbone = ResNet(depth=18,
                      init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(UnsafeCheckpointError, match=WHY):
        backbone.init_weights()


def test_converters_refuse_code(tmp_path, victim):
    path = evil_checkpoint(tmp_path / 'evil.pth', victim)
    with pytest.raises(UnsafeCheckpointError, match=WHY):
        load_source(path)
    with pytest.raises(UnsafeCheckpointError, match=WHY):
        converter_main('timm2mmattn', convert_timm, names=('seresnet50', ),
                       argv=['seresnet50', path, str(tmp_path / 'out.pth')])
    assert not (tmp_path / 'out.pth').exists()


# --------------------------------------------------------------------------
# remote schemes
# --------------------------------------------------------------------------
def test_every_mmengine_scheme_is_weights_only():
    """No scheme keeps one of mmengine's loaders (they unpickle with
    ``weights_only=False`` or without the allow-list)."""
    ours = set(compat_checkpoint.REMOTE_LOADERS.values())
    for prefix, loader in CheckpointLoader._schemes.items():
        assert loader.__module__.startswith('mmattn.'), (prefix, loader)
        assert prefix == '' or loader in ours


REMOTE = {
    'https': ('https://example.invalid/models/evil-1234.pth', None),
    'torchvision': ('torchvision://resnet18',
                    get_torchvision_models()['resnet18']),
    'modelzoo': ('modelzoo://resnet50', get_torchvision_models()['resnet50']),
    'open-mmlab': ('open-mmlab://detectron/resnet50_caffe',
                   get_external_models()['detectron/resnet50_caffe']),
    'mmcls': ('mmcls://vgg11', get_mmcls_models()['vgg11']),
}


@pytest.mark.parametrize('scheme', sorted(REMOTE))
def test_remote_checkpoint_with_code_is_refused(scheme, hub_dir, victim):
    name, url = REMOTE[scheme]
    evil_checkpoint(cached(hub_dir, url or name), victim)
    with pytest.raises(UnsafeCheckpointError, match=WHY) as err:
        CheckpointLoader.load_checkpoint(name)
    assert repr(url or name) in str(err.value)  # names the URL


def test_imagenet_init_from_torchvision_refuses_code(hub_dir, victim):
    """The init of every mmdet config: torchvision://resnet50."""
    evil_checkpoint(cached(hub_dir, get_torchvision_models()['resnet18']),
                    victim)
    backbone = ResNet(depth=18, init_cfg=dict(
        type='Pretrained', checkpoint='torchvision://resnet18'))
    with pytest.raises(UnsafeCheckpointError, match=WHY):
        backbone.init_weights()


def test_remote_mmengine_checkpoint_still_loads(hub_dir, tmp_path):
    url = 'https://example.invalid/ckpt/iter_3.pth'
    torch.save(mmengine_checkpoint(), cached(hub_dir, url))
    ckpt = CheckpointLoader.load_checkpoint(url)
    assert ckpt['message_hub']['log_scalars']['loss'].current() == 1.5
    # a legacy (torch < 1.6) archive: one file zipped
    legacy = tmp_path / 'legacy.pth'
    torch.save({'w': torch.arange(3)}, legacy,
               _use_new_zipfile_serialization=False)
    url = 'https://example.invalid/ckpt/legacy_zip.pth'
    with zipfile.ZipFile(cached(hub_dir, url), 'w') as archive:
        archive.write(legacy, 'legacy.pth')
    model = torch.nn.Module()
    model.register_buffer('w', torch.zeros(3, dtype=torch.int64))
    load_checkpoint(model, url)
    assert model.w.tolist() == [0, 1, 2]


def test_pavi_checkpoint_with_code_is_refused(tmp_path, victim,
                                              monkeypatch):
    evil = evil_checkpoint(tmp_path / 'evil.pth', victim)

    class Model:
        name = 'evil.pth'

        def download(self, path):
            with open(evil, 'rb') as src, open(path, 'wb') as dst:
                dst.write(src.read())

    modelcloud = types.SimpleNamespace(get=lambda path: Model())
    monkeypatch.setitem(sys.modules, 'pavi',
                        types.SimpleNamespace(modelcloud=modelcloud))
    with pytest.raises(UnsafeCheckpointError, match="'pavi://proj/evil'"):
        CheckpointLoader.load_checkpoint('pavi://proj/evil')


def test_s3_checkpoint_with_code_is_refused(tmp_path, victim, monkeypatch):
    data = open(evil_checkpoint(tmp_path / 'evil.pth', victim), 'rb').read()
    backend = types.SimpleNamespace(get=lambda path: data)
    monkeypatch.setattr(compat_checkpoint, 'get_file_backend',
                        lambda path, backend_args=None: backend)
    with pytest.raises(UnsafeCheckpointError, match="'s3://bucket/evil'"):
        CheckpointLoader.load_checkpoint('s3://bucket/evil')
