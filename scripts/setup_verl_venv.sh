#!/usr/bin/env bash
# Create the verl test venv (.venv-verl in the repo root): verl 0.9.1 + the project's base install (the
# client and its adapters; no engine extras) + pytest.
#
# verl 0.9.1 pins transformers<5.11 while the engine extras want a newer one, so verl lives apart from the
# main .venv. The reward service the tests call runs from the main venv (a subprocess). Idempotent: a marker
# newer than pyproject.toml and this script means the venv is ready; the script then only checks imports.
#
#   scripts/setup_verl_venv.sh            # or VENV_DIR=/elsewhere PYTHON=python3.11 scripts/setup_verl_venv.sh
#
# torch goes in first, so that verl's resolver keeps it: torch==2.13.0 from a configured source (a CPU build
# where one is on disk), else the PyTorch CPU index ($TORCH_INDEX_URL); a plain `torch` from PyPI would be
# a multi-GB CUDA build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${VENV_DIR:-$ROOT/.venv-verl}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
VERL_SPEC="${VERL_SPEC:-verl==0.9.1}"
MARKER="$VENV_DIR/.installed"
PIP=("$VENV_DIR/bin/python" -m pip)

check_imports() {
    HF_HUB_OFFLINE=1 "$VENV_DIR/bin/python" -c \
        "import verl, verl.trainer.ppo.ray_trainer, transformers, torch, mig_annotator.client; print(f'verl {verl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}')"
}

if [[ -f "$MARKER" && "$MARKER" -nt "$ROOT/pyproject.toml" && "$MARKER" -nt "${BASH_SOURCE[0]}" ]]; then
    check_imports
    exit 0
fi

echo "setup_verl_venv: creating $VENV_DIR" >&2
rm -f "$MARKER"
[[ -x "$VENV_DIR/bin/python" ]] || "$PYTHON" -m venv "$VENV_DIR"
"${PIP[@]}" install --quiet --upgrade pip

# 1. torch first: a configured source, or the PyTorch CPU index.
if ! "${PIP[@]}" install --quiet "$TORCH_SPEC" 2>/dev/null; then
    echo "setup_verl_venv: $TORCH_SPEC not on the configured indexes; trying $TORCH_INDEX_URL" >&2
    "${PIP[@]}" install --quiet --extra-index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
fi

# 2. verl itself, then the project's base install (editable, no extras) and pytest.
"${PIP[@]}" install --quiet "$VERL_SPEC"
(cd "$ROOT" && "${PIP[@]}" install --quiet -e .)
"${PIP[@]}" install --quiet pytest
# verl 0.9.1's driver (verl.trainer.ppo.ray_trainer, where compute_advantage lives) imports these through
# its rollout server code without declaring them.
"${PIP[@]}" install --quiet cachetools uvicorn fastapi

check_imports
touch "$MARKER"
echo "setup_verl_venv: ready ($VENV_DIR)" >&2
