"""What the analysis tests share: the command-line tools of
``tools/analysis/`` loaded as modules (``tools/`` is not a package)."""
import os.path as osp

import helpers
from conftest import REPO

CONFIG_DIR = osp.join(REPO, 'configs')


def load_tool(name: str):
    """``tools/analysis/<name>.py`` as a module (its ``main`` takes
    ``argv``)."""
    return helpers.load_tool(f'tools/analysis/{name}.py')


def config(name: str) -> str:
    """Path of ``configs/<name>.py``."""
    return osp.join(CONFIG_DIR, f'{name}.py')
