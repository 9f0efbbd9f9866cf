"""The repository keeps its promised shape: top level, and CI running
exactly the README's test command."""
import os
import re

from conftest import REPO

TOP_LEVEL = {'pyproject.toml', 'mmattn', 'configs', 'tools', 'tests',
             'README.md', '.ci', 'requirements.lock', 'Makefile',
             '.gitignore', '.git'}
LOCAL_ONLY = {'.venv', '.pytest_cache', 'work_dirs', 'data',
              'mmattn.egg-info'}


def test_top_level_is_exactly_the_promised_set():
    assert set(os.listdir(REPO)) - LOCAL_ONLY == TOP_LEVEL


def readme_test_command():
    text = open(os.path.join(REPO, 'README.md')).read()
    match = re.search(r'```(?:bash|sh)\n(?P<cmd>[^\n]+)\n```\s*\n'
                      r'<!-- test command -->', text)
    assert match, 'README must mark its test command'
    return match['cmd'].strip()


def test_ci_runs_exactly_the_readme_test_command():
    cmd = readme_test_command()
    lines = [ln.strip() for ln in open(os.path.join(REPO, '.ci', 'run'))
             if ln.strip() and not ln.startswith('#')
             and not ln.startswith('set ')]
    assert cmd in lines, (cmd, lines)
