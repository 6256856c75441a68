#!/usr/bin/env bash
# verl 0.9 GRPO with the method's decoupled advantages and dual-gated SFT (MigRewardLoopManager, the
# mig_decoupled estimator and the mig_sft loss), launched through mig_annotator.trainer.verl_main.
#
#   mig-annotator serve --host 0.0.0.0 --port 8000 &       # the service: the main venv (engine extras)
#   bash examples/verl_reward_loop.sh [hydra overrides]     # the trainer: verl's venv (see below)
#
# Two Pythons: verl 0.9.1 pins transformers<5.11, the engine wants a newer one, so the trainer runs in its
# own venv, built once by scripts/setup_verl_venv.sh (verl + this package's base install, no engine); the
# service runs from the main venv. The trainer's Python is $MIG_VERL_PYTHON, else the repository's
# .venv-verl/bin/python when there is one, else `python`; it must import verl and mig_annotator. Ray
# workers started by this process inherit its venv; a cluster started by `ray start` needs the package
# installed in every node's Python (pip install mig-annotator), the launcher passes the environment.
#
# The manager is loaded by module path in every Ray worker; its options live under reward.mig, the
# advantage and SFT options under algorithm.mig. Each sample's rm_scores row carries its credit record
# (step rewards, where each step ends, the CoT and completion masks); the estimator turns a group's records
# into per-token advantages. MIG_VERL_DRY_RUN=1 prints the resolved run (data, model, n, batch sizes,
# estimator, loss, service URL, probe) and exits without starting Ray. $MIG_VERL_CONFIG picks the config
# in examples/ (default verl_mig_grpo; verl_gsm8k_qwen05b is the one-GPU recipe). Data:
# python -m mig_annotator.trainer.verl_data QUESTIONS.jsonl OUT.parquet (extra_info.question, which the
# manager uses as the question, else it decodes the prompt; reward_model.ground_truth the reference).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
MIG_URL="${MIG_SERVICE_URL:-http://127.0.0.1:8000}"
PYTHON="${MIG_VERL_PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -x "$HERE/../.venv-verl/bin/python" ]]; then PYTHON="$HERE/../.venv-verl/bin/python"; else PYTHON=python; fi
fi
if ! "$PYTHON" -c "import verl, mig_annotator.client" 2>/dev/null; then
    echo "verl_reward_loop.sh: $PYTHON cannot import verl and mig_annotator: build verl's venv with" \
        "scripts/setup_verl_venv.sh, or point MIG_VERL_PYTHON at a Python that has both" >&2
    exit 2
fi

"$PYTHON" -m mig_annotator.trainer.verl_main --config-path "$HERE" --config-name "${MIG_VERL_CONFIG:-verl_mig_grpo}" \
    "++reward.mig.base_url=${MIG_URL}" "$@"
