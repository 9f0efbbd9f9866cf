# The two commands of the README (`make demo`, `make test`). Each first sets
# up, or reuses, the pinned environment in .venv (tools/setup_env.sh).
PYTHON := .venv/bin/python

.PHONY: env demo test lock

env:
	@bash tools/setup_env.sh

demo: env
	$(PYTHON) tools/demo.py

test: env
	$(PYTHON) -m pytest

# Re-resolve requirements.lock from pyproject.toml (all extras, plus the
# build tools mmcv's sdist needs). mmcv's metadata comes from the cached wheel.
lock: env
	printf 'pip\nwheel\nsetuptools>=80,<81\n' > .venv/build-tools.in
	python3 -m uv pip compile --quiet --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 --all-extras \
	    --find-links "$${MMATTN_CACHE:-$$HOME/.cache/mmattn}/wheels/torch-2.13.0-cpu" \
	    --custom-compile-command "make lock" \
	    pyproject.toml .venv/build-tools.in -o requirements.lock
