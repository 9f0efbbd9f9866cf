#!/usr/bin/env bash
# Create, or reuse, mmattn's pinned environment in .venv (Python 3.11).
#
# * Everything but mmcv comes from requirements.lock through uv (uv reads PyPI
#   directly: pip's local CPU-only torch wheel has no matching torchvision).
# * mmcv 2.1.0 has no wheel for torch 2.13: it is built once from its sdist
#   with compiled ops (CUDA ops too when torch sees a GPU), against the
#   installed torch, without build isolation, and the wheel is cached in
#   $MMATTN_CACHE/wheels/<torch>-<cpu|cuXY>/ so later installs on this machine
#   (fresh clones included) reuse it.
# * A stamp keyed on the lock, pyproject.toml and this script makes a second
#   run a no-op.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMATTN_VENV:-$ROOT/.venv}"
CACHE="${MMATTN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmattn}"
LOCK="$ROOT/requirements.lock"
UV_VERSION=0.13.9
MMCV_VERSION=2.1.0
PY="$VENV/bin/python"

key="$(cat "$LOCK" "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)"
if [[ -x "$PY" && "$(cat "$VENV/.mmattn-env" 2>/dev/null)" == "$key" ]]; then
    exit 0
fi
start=$SECONDS
log() { echo "[setup_env] $*" >&2; }

# 1. uv, the installer (run as a module: no PATH assumptions).
if ! python3 -m uv --version >/dev/null 2>&1; then
    log "installing uv==$UV_VERSION"
    python3 -m pip install --quiet "uv==$UV_VERSION"
fi
UV=(python3 -m uv)
export UV_PYTHON_DOWNLOADS=never

# 2. The virtual environment and the locked packages (all but mmcv).
if [[ ! -x "$PY" ]]; then
    log "creating $VENV"
    "${UV[@]}" venv --quiet --python "$(command -v python3.11 || command -v python3)" "$VENV"
fi
log "installing requirements.lock"
grep -v '^mmcv==' "$LOCK" > "$VENV/.lock-without-mmcv"
"${UV[@]}" pip install --quiet --python "$PY" -r "$VENV/.lock-without-mmcv"

# 3. mmcv with compiled ops: cached wheel, or build it once.
flavour="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0] + "-" + ("cu" + torch.version.cuda.replace(".", "") if torch.cuda.is_available() else "cpu"))')"
wheel_dir="$CACHE/wheels/torch-$flavour"
wheel="$(ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$wheel" ]]; then
    log "building mmcv $MMCV_VERSION with ops for torch $flavour (about 10 minutes on 2 cores, once per machine)"
    build_dir="$(mktemp -d)"
    export MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}"
    if [[ "$flavour" != *-cpu ]]; then export FORCE_CUDA=1; fi
    "$PY" -m pip wheel --quiet --no-build-isolation --no-deps \
        "mmcv==$MMCV_VERSION" -w "$build_dir"
    mkdir -p "$wheel_dir"
    mv "$build_dir"/mmcv-*.whl "$wheel_dir"/
    rm -rf "$build_dir"
    wheel="$(ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl | head -n1)"
fi
log "installing $(basename "$wheel")"
"${UV[@]}" pip install --quiet --python "$PY" --no-deps "$wheel"

# 4. mmattn itself, editable.
"${UV[@]}" pip install --quiet --python "$PY" --no-deps -e "$ROOT"

# 5. The stack must really work: compiled ops on both sides.
"$PY" - <<'PY'
import torch, torchvision, mmcv.ops, mmdet, mmattn  # noqa: F401
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.]])
scores = torch.tensor([0.9, 0.8])
assert torchvision.ops.nms(boxes, scores, 0.5).tolist() == [0]
assert mmcv.ops.nms(boxes, scores, 0.5)[1].tolist() == [0]
PY
echo "$key" > "$VENV/.mmattn-env"
log "environment ready in $((SECONDS - start)) s"
