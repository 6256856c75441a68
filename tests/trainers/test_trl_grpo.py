"""TRL's GRPOTrainer takes our rewards, end to end on the CPU.

A real uvicorn service on 127.0.0.1 with the embedded SmolLM2 probe and its audit log; the policy is the
converted SmolLM2-135M-Instruct; 4 GSM8K prompts (tests/fixtures/gsm8k_prompts.jsonl), 4 generations each,
2 optimizer steps. Two reward functions run side by side: the sync one (mixed) and the async one (outcome),
each with its own API key so the audit log tells their calls apart. About 80 s on 2 idle CPU cores
(7.5 min measured while other test suites shared them); `-s` prints what TRL received.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mig_annotator.client import MigClient
from mig_annotator.client.trl import async_trl_reward_function, trl_reward_function
from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.schemas import Trace
from mig_annotator.service.annotation_service import trace_sha256
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server
from tests.trainers.support import audit_requests, cpu_grpo_config

pytestmark = [pytest.mark.trainers, pytest.mark.model]

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "gsm8k_prompts.jsonl"
KEYS = {"trl-sync": "sk-trl-sync-0123456789", "trl-async": "sk-trl-async-0123456789"}
STEPS = 2


def recording_sync(func: Callable[..., list[float]], seen: list[list[tuple[str, str, str]]]) -> Any:
    """``func``, noting the (question, completion, answer) of every batch TRL passes it."""

    def recorded(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        seen.append(batch_texts(prompts, completions, kwargs["answer"]))
        return func(prompts=prompts, completions=completions, **kwargs)

    recorded.__name__ = func.__name__
    return recorded


def recording_async(
    func: Callable[..., Awaitable[list[float]]], seen: list[list[tuple[str, str, str]]]
) -> Any:
    async def recorded(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        seen.append(batch_texts(prompts, completions, kwargs["answer"]))
        return await func(prompts=prompts, completions=completions, **kwargs)

    recorded.__name__ = func.__name__
    return recorded


def batch_texts(prompts: list[Any], completions: list[Any], answers: list[str]) -> list[tuple[str, str, str]]:
    return [
        (prompt[-1]["content"], completion[-1]["content"], answer)
        for prompt, completion, answer in zip(prompts, completions, answers, strict=True)
    ]


def sha_of(question: str, completion: str, answer: str) -> str:
    return trace_sha256(Trace(id="x", question=question, completion=completion, reference_answer=answer))


def test_grpo_trainer_trains_two_steps_on_the_service_rewards(
    tmp_path: Path, default_model_path: Path
) -> None:
    from datasets import Dataset
    from trl import GRPOTrainer

    rows = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": row["prompt"]}], "answer": row["answer"]} for row in rows]
    )
    audit_dir = tmp_path / "audit"
    settings = ServiceSettings(
        audit_dir=audit_dir, api_keys=KEYS, probe=TransformersProbeSettings(threads=1), audit_flush_s=0.2
    )
    seen_sync: list[list[tuple[str, str, str]]] = []
    seen_async: list[list[tuple[str, str, str]]] = []
    with live_server(create_app(settings)) as url, MigClient(url, api_key=KEYS["trl-sync"]) as client:
        sync_reward = recording_sync(trl_reward_function(client, reward="mixed"), seen_sync)
        async_client = {"base_url": url, "api_key": KEYS["trl-async"]}
        async_reward = recording_async(
            async_trl_reward_function(reward="outcome", client_options=async_client), seen_async
        )
        config = cpu_grpo_config(tmp_path / "grpo", STEPS)
        trainer = GRPOTrainer(
            model=str(default_model_path),
            reward_funcs=[sync_reward, async_reward],
            args=config,
            train_dataset=dataset,
        )
        trainer.train()
        last_logged = {name: list(values) for name, values in trainer._logs["rewards"].items()}
        last_completions = [c[-1]["content"] for c in trainer._logs["completion"]]
    # the server has stopped: its audit log is sealed into Parquet segments

    assert trainer.state.global_step == STEPS
    logged = [entry for entry in trainer.state.log_history if "rewards/mig_mixed/mean" in entry]
    assert len(logged) == STEPS
    for key_id, seen, name, scalar in (
        ("trl-sync", seen_sync, "mig_mixed", lambda row: row["outcome"] + row["process_reward"]),
        ("trl-async", seen_async, "mig_outcome_async", lambda row: float(row["outcome"])),
    ):
        requests = audit_requests(audit_dir, key_id)
        # one request per step, holding exactly the completions the trainer generated, in order
        assert len(requests) == len(seen) == STEPS
        for batch, request in zip(seen, requests, strict=True):
            assert len(batch) == 8
            assert [row["trace_sha256"] for row in request] == [sha_of(*texts) for texts in batch]
        # what TRL logged is what the service computed: the per-step means, and each of the last step's
        for entry, request in zip(logged, requests, strict=True):
            expected = sum(scalar(row) for row in request) / len(request)
            assert entry[f"rewards/{name}/mean"] == pytest.approx(expected, abs=1e-5)
        assert last_logged[name] == pytest.approx([scalar(row) for row in requests[-1]], abs=1e-5)
        assert last_completions == [texts[1] for texts in seen[-1]]
        means = [entry[f"rewards/{name}/mean"] for entry in logged]
        print(f"TRL {name}: per-step means {means}, last step {last_logged[name]}")
    all_shas = Counter(sha for batch in seen_sync for sha in (sha_of(*t) for t in batch))
    assert all_shas == Counter(sha for batch in seen_async for sha in (sha_of(*t) for t in batch))
