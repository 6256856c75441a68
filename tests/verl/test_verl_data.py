"""The data-preparation command's parquet goes through verl's reward loop as the service expects it.

The shared rollouts' format (tests/fixtures/gsm8k_rollouts_small.jsonl) is converted by
``python -m mig_annotator.trainer.verl_data``; a verl batch is built from the parquet's rows as verl's
dataset hands them over (the prompt with its instruction, ``reward_model``, ``extra_info``), the fixture's
completions as the responses; the reward loop's per-token rewards must be those of the service's
annotations of the fixture's own question and reference answer (run in .venv-verl: `make test-verl`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

verl = pytest.importorskip("verl", reason="verl runs in its own venv: make test-verl")
torch = pytest.importorskip("torch")
pq = pytest.importorskip("pyarrow.parquet")

from mig_annotator.client.verl import token_rewards  # noqa: E402
from tests.verl.support import (  # noqa: E402
    FIXTURE,
    ROOT,
    expected_annotations,
    gsm8k_batch,
    loop_config,
    main_env,
    reward_loop,
    rollouts,
)


def test_the_prepared_parquet_carries_question_and_reference_through_the_reward_loop(
    service_url: str, tokenizer: Any, tmp_path: Path
) -> None:
    from verl.trainer.ppo.reward import load_reward_manager, resolve_reward_manager_cls

    target = tmp_path / "train.parquet"
    command = [sys.executable, "-m", "mig_annotator.trainer.verl_data", str(FIXTURE), str(target)]
    done = subprocess.run(command, cwd=ROOT, env=main_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    prepared = pq.read_table(target).to_pylist()
    rows = rollouts()
    assert len(prepared) == len({row["question_id"] for row in rows})  # one row per question
    by_question = {row["extra_info"]["question"]: row for row in prepared}

    # the batch as verl's dataset hands it over: the parquet's prompt (question + instruction) tokenised,
    # its reward_model and extra_info as the non-tensor fields
    samples = [by_question[row["question"]] for row in rows]
    policy_view = [
        {**row, "question": sample["prompt"][0]["content"]} for row, sample in zip(rows, samples, strict=True)
    ]
    data = gsm8k_batch(tokenizer, policy_view)
    for field in ("reward_model", "extra_info", "data_source"):
        data.non_tensor_batch[field] = np.array([sample[field] for sample in samples], dtype=object)

    config = loop_config(service_url)
    rm_scores, outputs = reward_loop(
        resolve_reward_manager_cls(config), load_reward_manager(config, tokenizer), data
    )
    annotations = expected_annotations(service_url, rows, tokenizer, data)  # the raw question, the reference
    width = data.batch["prompts"].shape[1]
    for i, (row, annotation) in enumerate(zip(rows, annotations, strict=True)):
        length = int(data.batch["attention_mask"][i, width:].sum())
        ids = data.batch["responses"][i, :length].tolist()
        expected = token_rewards(tokenizer, ids, annotation)
        assert rm_scores[i, :length].tolist() == pytest.approx(expected.tolist(), abs=1e-6)
        assert outputs[i]["reward_extra_info"]["outcome"] == float(row["is_correct"])
        assert outputs[i]["reward_extra_info"]["failed"] == 0.0
