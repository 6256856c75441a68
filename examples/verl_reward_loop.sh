#!/usr/bin/env bash
# verl 0.9 PPO/GRPO with token-level MIG rewards from the reward loop (MigRewardLoopManager).
#
#   mig-annotator serve --host 0.0.0.0 --port 8000 &       # the service (main venv, engine extras)
#   bash examples/verl_reward_loop.sh                       # verl's venv: scripts/setup_verl_venv.sh
#
# The manager is loaded by module path in every Ray worker; its options live under reward.mig. Each step's
# r_k lands on the step's last response token, the outcome on the answer's last token (rm_scores). Data:
# verl's GSM8K preprocessing (examples/data_preprocess/gsm8k.py) with extra_info.question, which the
# manager uses as the question (else it decodes the prompt).
set -euo pipefail
MIG_URL="${MIG_SERVICE_URL:-http://127.0.0.1:8000}"

python -m verl.trainer.main_ppo --config-path "$(dirname "$0")" --config-name verl_mig_grpo \
    "+reward.mig.base_url=${MIG_URL}" "$@"
