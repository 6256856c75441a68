"""What the verl tests share: GSM8K rollouts as verl's rollout hands them over, the reward loop as verl runs
it, and the annotations the service gives for them (torch, verl and omegaconf are imported where used:
the fixtures load this module in any venv)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mig_annotator.client import MigClient
from mig_annotator.schemas import Trace, TraceAnnotation

if TYPE_CHECKING:
    from verl import DataProto

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "gsm8k_rollouts_small.jsonl"
MODEL = Path(os.environ.get("MIG_CACHE_DIR", Path.home() / ".cache" / "mig-annotator")) / "models"
TOKENIZER_PATH = MODEL / "SmolLM2-135M-Instruct"
LOOP_MODULE = "pkg://mig_annotator.client.verl_reward_loop"


def main_python() -> str:
    """The main venv's Python (it has the engine); the reward service runs there, not in verl's venv."""
    return os.environ.get("MIG_SERVICE_PYTHON", str(ROOT / ".venv" / "bin" / "python"))


def main_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


@contextmanager
def piped_service(command: list[str]) -> Iterator[str]:
    """A service started by ``command`` (a module that prints its URL, then serves until its stdin closes):
    yields the URL, and stops the service by closing its stdin."""
    process = subprocess.Popen(
        command, cwd=ROOT, env=main_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdin is not None
    url = process.stdout.readline().strip()
    try:
        assert url.startswith("http://127.0.0.1:"), f"the service did not start: {url!r}"
        yield url
    finally:
        process.stdin.close()
        process.wait(timeout=60)


def rollouts() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


def gsm8k_batch(tokenizer: Any, rows: list[dict[str, Any]], response_width: int = 256) -> DataProto:
    """A batch as verl's rollout hands it over: left-padded prompts (chat template), right-padded responses
    ending in EOS, the attention mask over both, the dataset's non-tensor fields and GRPO's ``uid`` (the
    same for the rollouts of one question)."""
    import torch
    from verl import DataProto

    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": row["question"]}], add_generation_prompt=True, tokenize=True
        )
        for row in rows
    ]
    prompts = [
        list(p["input_ids"]) if isinstance(p, dict) or hasattr(p, "keys") else list(p) for p in prompts
    ]
    responses = [
        [*tokenizer.encode(row["completion"], add_special_tokens=False), tokenizer.eos_token_id]
        for row in rows
    ]
    assert max(len(r) for r in responses) <= response_width
    prompt_width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompt_ids = torch.tensor([[pad] * (prompt_width - len(p)) + p for p in prompts])
    response_ids = torch.tensor([r + [pad] * (response_width - len(r)) for r in responses])
    prompt_mask = torch.tensor([[0] * (prompt_width - len(p)) + [1] * len(p) for p in prompts])
    response_mask = torch.tensor([[1] * len(r) + [0] * (response_width - len(r)) for r in responses])
    return DataProto.from_dict(
        tensors={
            "prompts": prompt_ids,
            "responses": response_ids,
            "input_ids": torch.cat([prompt_ids, response_ids], dim=1),
            "attention_mask": torch.cat([prompt_mask, response_mask], dim=1),
            "response_mask": response_mask,
        },
        non_tensors={
            "data_source": np.array(["openai/gsm8k"] * len(rows), dtype=object),
            "reward_model": np.array(
                [{"ground_truth": row["reference_answer"], "style": "rule"} for row in rows], dtype=object
            ),
            "extra_info": np.array(
                [{"question": row["question"], "index": i} for i, row in enumerate(rows)], dtype=object
            ),
            "uid": np.array([f"uid-{row['question_id']}" for row in rows], dtype=object),  # one per prompt
        },
    )


def loop_config(url: str, estimator: str | None = None, **mig: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.create(
        {
            **({"algorithm": {"adv_estimator": estimator}} if estimator else {}),
            "reward": {
                "reward_manager": {
                    "source": "importlib",
                    "name": "MigRewardLoopManager",
                    "module": {"path": LOOP_MODULE},
                },
                "custom_reward_function": {"path": None, "name": "compute_score"},
                "mig": {"base_url": url, **mig},
            },
        }
    )


def reward_loop(manager_cls: Any, manager: Any, data: DataProto) -> tuple[Any, list[dict[str, Any]]]:
    """What verl's RewardLoopWorker.compute_score_batch and RewardLoopManager.compute_rm_score do: one
    concurrent run_single per sample, then the class's assemble_rm_scores over their reward_score."""

    async def batch() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(manager.run_single(data[i : i + 1]) for i in range(len(data)))))

    outputs = asyncio.run(batch())
    return manager_cls.assemble_rm_scores(data, [out["reward_score"] for out in outputs]), outputs


def expected_annotations(
    url: str, rows: list[dict[str, Any]], tokenizer: Any, data: DataProto
) -> list[TraceAnnotation]:
    traces = []
    for i, row in enumerate(rows):
        width = data.batch["prompts"].shape[1]
        length = int(data.batch["attention_mask"][i, width:].sum())
        completion = tokenizer.decode(data.batch["responses"][i, :length].tolist(), skip_special_tokens=True)
        traces.append(
            Trace(
                id=f"e{i}",
                question=row["question"],
                completion=completion,
                reference_answer=row["reference_answer"],
            )
        )
    with MigClient(url) as client:
        return client.annotate(traces)


def run_launcher(*overrides: str) -> subprocess.CompletedProcess[str]:
    """``python -m mig_annotator.trainer.verl_main`` on the shipped example, dry run (prints the config)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "MIG_VERL_DRY_RUN": "1"}
    env.pop("VERL_USE_EXTERNAL_MODULES", None)
    command = [sys.executable, "-m", "mig_annotator.trainer.verl_main"]
    command += ["--config-path", str(ROOT / "examples"), "--config-name", "verl_mig_grpo", *overrides]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
