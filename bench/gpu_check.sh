#!/usr/bin/env bash
# GPU check for a machine with a GPU: the transformers probe's packed vs packed-single vs naive
# paths on CUDA in bf16, on a random-weight model of Llama-3.2-1B's shape with the SmolLM2 tokenizer
# (bench/gpu_check.py). Reports traces/s, tokens/s and the achieved model TFLOP/s against the card's dense
# bf16 peak (H100 SXM: 989 TFLOP/s; H100 PCIe: 756). About 3-6 minutes on an H100; gpu_check.py stops
# starting new runs after --budget-s (default 420 s) and the whole check is capped at 500 s.
#
# The device machine has torch and transformers, no network and no vLLM. It gets the working tree, so
# bench/assets/smollm2-tokenizer/ (3.4 MB, not git-ignored) travels without a carry. The project also needs
# pydantic; where the machine lacks it, this script installs it from a wheelhouse made here beforehand:
#
#   bench/gpu_check.sh --prepare-wheels       # here, once: pydantic wheels for CPython 3.10-3.13 (~10 MB)
#                                             # into bench/out/gpu-wheels (git-ignored, so it must be carried)
# Device call (one call; results come back from $OUT):
#   command:   bash bench/gpu_check.sh
#   carry:     ["bench/out/gpu-wheels"]
#   timeout_s: 560
# Locally, without a GPU: bash bench/gpu_check.sh --smoke   (tiny model on the CPU; checks the code runs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WHEELS="$ROOT/bench/out/gpu-wheels"
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"

if [[ "${1:-}" == "--prepare-wheels" ]]; then
    for version in 3.10 3.11 3.12 3.13; do
        "$PYTHON" -m pip download --quiet --only-binary=:all: --python-version "$version" \
            --platform manylinux2014_x86_64 --implementation cp --dest "$WHEELS" pydantic
    done
    ls "$WHEELS"
    exit 0
fi

OUT="${OUT:-$ROOT/bench/out/gpu-check}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
{
    echo "python: $PYTHON"
    "$PYTHON" --version
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>&1 || true
} | tee "$OUT/environment.txt"

if ! "$PYTHON" -c "import pydantic" 2>/dev/null; then
    DEPS="$(mktemp -d)"
    echo "pydantic missing: installing it from $WHEELS into $DEPS" | tee -a "$OUT/environment.txt"
    "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" --target "$DEPS" pydantic
    export PYTHONPATH="$DEPS${PYTHONPATH:+:$PYTHONPATH}"
fi

status=0
timeout 500 "$PYTHON" bench/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt" || status=$?
echo "gpu_check: exit $status; results in $OUT" >&2
exit "$status"
