"""What the analysis tests share: the command-line tools of
``tools/analysis/`` loaded as modules (``tools/`` is not a package)."""
import importlib.util
import os.path as osp

from conftest import REPO

CONFIG_DIR = osp.join(REPO, 'configs')


def load_tool(name: str):
    """``tools/analysis/<name>.py`` as a module (its ``main`` takes
    ``argv``)."""
    path = osp.join(REPO, 'tools', 'analysis', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'tool_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config(name: str) -> str:
    """Path of ``configs/<name>.py``."""
    return osp.join(CONFIG_DIR, f'{name}.py')
