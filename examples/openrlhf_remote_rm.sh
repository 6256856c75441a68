#!/usr/bin/env bash
# OpenRLHF with the MIG service as its remote reward model. OpenRLHF posts one sample per request right
# after generating it ({"query", "prompts", "labels"}); the service micro-batches them.
#
#   MIG_OPENRLHF_REWARD=mixed MIG_OPENRLHF_LAMBDA=1.0 MIG_OPENRLHF_FALLBACK_REWARD=0.0 \
#       mig-annotator serve --host 0.0.0.0 --port 8000 &
#   bash examples/openrlhf_remote_rm.sh
#
# A query the service cannot score gets MIG_OPENRLHF_FALLBACK_REWARD (counted in mig_fallback_rewards,
# failed=1 in extra_logs). Flag names as in OpenRLHF's openrlhf/cli/train_ppo_ray.py (2026-08); older
# releases spell them --remote_rm_url, --prompt_data, --input_key, --label_key.
set -euo pipefail
MIG_URL="${MIG_SERVICE_URL:-http://127.0.0.1:8000}"

python -m openrlhf.cli.train_ppo_ray \
    --reward.remote_url "${MIG_URL}/v1/openrlhf/reward" \
    --data.prompt_dataset openai/gsm8k --data.input_key question --data.label_key answer \
    --data.apply_chat_template \
    "$@"
