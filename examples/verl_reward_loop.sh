#!/usr/bin/env bash
# verl 0.9 GRPO with the method's decoupled advantages and dual-gated SFT (MigRewardLoopManager, the
# mig_decoupled estimator and the mig_sft loss), launched through mig_annotator.trainer.verl_main.
#
#   mig-annotator serve --host 0.0.0.0 --port 8000 &       # the service (main venv, engine extras)
#   bash examples/verl_reward_loop.sh                       # verl's venv: scripts/setup_verl_venv.sh
#
# The manager is loaded by module path in every Ray worker; its options live under reward.mig, the
# advantage and SFT options under algorithm.mig. Each sample's rm_scores row carries its credit record
# (step rewards, where each step ends, the CoT and completion masks); the estimator turns a group's records
# into per-token advantages. MIG_VERL_DRY_RUN=1 prints the prepared config and exits. Data:
# verl's GSM8K preprocessing (examples/data_preprocess/gsm8k.py) with extra_info.question, which the
# manager uses as the question (else it decodes the prompt).
set -euo pipefail
MIG_URL="${MIG_SERVICE_URL:-http://127.0.0.1:8000}"

python -m mig_annotator.trainer.verl_main --config-path "$(cd "$(dirname "$0")" && pwd)" --config-name verl_mig_grpo \
    "++reward.mig.base_url=${MIG_URL}" "$@"
