"""The service's probe follows the policy through verl's checkpoints (``reward.mig.follow_policy``).

A real service (the main venv, the transformers probe on SmolLM2-135M) and verl's checkpoint layout written
here the way verl 0.9.1 writes it (``global_step_N/actor/huggingface``: ``save_pretrained`` of the model and
the tokenizer, with verl's transformers); the reward loop as verl runs it, over batches whose rollouts carry
the global step of the weights that generated them (``tool_extra_fields["global_steps"]``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

verl = pytest.importorskip("verl", reason="verl runs in its own venv: make test-verl")
torch = pytest.importorskip("torch")

from omegaconf import OmegaConf  # noqa: E402

from mig_annotator.client import MigServiceError  # noqa: E402
from mig_annotator.client.verl_follow import checkpoint_folder  # noqa: E402
from mig_annotator.client.verl_reward_loop import MigRewardLoopManager  # noqa: E402
from mig_annotator.schemas import Trace  # noqa: E402
from tests.verl.support import (  # noqa: E402
    ROOT,
    TOKENIZER_PATH,
    gsm8k_batch,
    loop_config,
    main_env,
    main_python,
    piped_service,
    rollouts,
    run_launcher,
)

SAVE_FREQ = 2


@pytest.fixture(scope="module")
def real_service() -> Iterator[str]:
    """The service over the real SmolLM2 probe, with an admin key (it may reload)."""
    if not TOKENIZER_PATH.is_dir():
        pytest.skip(f"{TOKENIZER_PATH} is missing: run `make model`")
    command = [main_python(), "-m", "tests.verl.real_service", "serve", str(TOKENIZER_PATH)]
    with piped_service(command) as url:
        yield url


def _save_like_verl(folder: Path, seed: int) -> None:
    """The policy after some steps, where verl's FSDP checkpoint manager puts its Hugging Face copy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(TOKENIZER_PATH, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 5e-3)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(TOKENIZER_PATH).save_pretrained(folder)


def _batch(tokenizer: Any, rows: list[dict[str, Any]], step: int) -> Any:
    data = gsm8k_batch(tokenizer, rows)
    extra = np.empty(len(rows), dtype=object)
    extra[:] = [{"global_steps": step, "turn_scores": [], "tool_rewards": []} for _ in rows]
    data.non_tensor_batch["tool_extra_fields"] = extra
    return data


def _engine_process_rewards(
    folder: Path, tokenizer: Any, rows: list[dict[str, Any]], data: Any
) -> list[float]:
    """The engine alone on ``folder`` (main venv), on the traces the manager sends."""
    width = data.batch["prompts"].shape[1]
    lines = []
    for i, row in enumerate(rows):
        length = int(data.batch["attention_mask"][i, width:].sum())
        completion = tokenizer.decode(data.batch["responses"][i, :length].tolist(), skip_special_tokens=True)
        answer = row["reference_answer"]
        trace = Trace(id=f"e{i}", question=row["question"], completion=completion, reference_answer=answer)
        lines.append(trace.model_dump_json())
    out = subprocess.run(
        [main_python(), "-m", "tests.verl.real_service", "score", str(folder)],
        cwd=ROOT,
        env=main_env(),
        input="\n".join(lines),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line)["process_reward"] for line in out.stdout.splitlines()]


def _reward_loop(loop: asyncio.AbstractEventLoop, manager: MigRewardLoopManager, data: Any) -> list[Any]:
    """verl's RewardLoopWorker.compute_score_batch on the worker's one event loop: a run_single per sample."""

    async def batch() -> list[Any]:
        return list(await asyncio.gather(*(manager.run_single(data[i : i + 1]) for i in range(len(data)))))

    return loop.run_until_complete(batch())


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _manager(url: str, tokenizer: Any, checkpoints: Path) -> MigRewardLoopManager:
    config = OmegaConf.merge(
        loop_config(url, follow_policy=True, api_key="admin-key"),
        {"trainer": {"default_local_dir": str(checkpoints), "save_freq": SAVE_FREQ}},
    )
    return MigRewardLoopManager(config, tokenizer)


def test_the_reward_loop_reloads_the_service_from_verls_checkpoint_of_the_weights_that_generated(
    real_service: str, tokenizer: Any, tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    rows = [rollouts()[i] for i in (3, 4, 7)]  # rollouts with a step that raises the answer's likelihood
    _save_like_verl(checkpoint_folder(tmp_path, SAVE_FREQ), seed=1)
    worker = _manager(real_service, tokenizer, tmp_path)

    # step 1: the initial weights, which the service runs already: no reload, version 1
    first = _reward_loop(loop, worker, _batch(tokenizer, rows, step=1))
    assert [out["reward_extra_info"]["probe_version"] for out in first] == [1.0] * 3
    assert [out["reward_extra_info"]["global_step"] for out in first] == [1.0] * 3
    assert worker.follow is not None and worker.follow.reloads == []

    # step 2 (a save step): one reload of global_step_2 for the whole batch, every sample scored on it
    second_data = _batch(tokenizer, rows, step=SAVE_FREQ)
    second = _reward_loop(loop, worker, second_data)
    assert [step for step, _ in worker.follow.reloads] == [SAVE_FREQ]
    version = worker.follow.reloads[0][1].probe_version
    assert version == 2
    assert [out["reward_extra_info"]["probe_version"] for out in second] == [2.0] * 3
    expected = _engine_process_rewards(checkpoint_folder(tmp_path, SAVE_FREQ), tokenizer, rows, second_data)
    got = [out["reward_extra_info"]["process_reward"] for out in second]
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) <= 1e-5, (got, expected)
    before = [out["reward_extra_info"]["process_reward"] for out in first]
    assert max(abs(a - b) for a, b in zip(before, got, strict=True)) > 1e-4  # other weights, other values

    # another reward worker at step 3 (newest save step 2) asks for the same folder: the service keeps it
    other = _manager(real_service, tokenizer, tmp_path)
    third = _reward_loop(loop, other, _batch(tokenizer, rows, step=SAVE_FREQ + 1))
    assert [(step, answer.probe_version) for step, answer in other.follow.reloads] == [(SAVE_FREQ, 2)]
    assert [out["reward_extra_info"]["probe_version"] for out in third] == [2.0] * 3
    # the same weights and traces; the batcher may coalesce them into other batch shapes, whose float sums
    # differ within the bound the README states for batching (2e-5 per token in fp32)
    assert [out["reward_extra_info"]["process_reward"] for out in third] == pytest.approx(got, abs=2e-5)

    # step 4 without its checkpoint (verl saved no hf_model): a clear error naming the folder
    with pytest.raises(MigServiceError) as refused:
        _reward_loop(loop, worker, _batch(tokenizer, rows[:1], step=2 * SAVE_FREQ))
    assert refused.value.status == 422 and f"global_step_{2 * SAVE_FREQ}" in refused.value.message


def test_the_launcher_saves_hugging_face_folders_where_the_reward_workers_look() -> None:
    follow = ("+reward.mig.follow_policy=true", "trainer.save_freq=5", "trainer.default_local_dir=ckpt")
    out = run_launcher(*follow)
    assert out.returncode == 0, out.stderr[-3000:]
    shown = json.loads(out.stdout[out.stdout.index("{") :])
    assert "hf_model" in shown["save_contents"]
    assert shown["reward_mig"]["follow_policy"] is True
    assert shown["reward_mig"]["checkpoint_dir"] == str(Path.cwd() / "ckpt")
    no_saves = run_launcher("+reward.mig.follow_policy=true")  # verl's default save_freq is -1
    assert no_saves.returncode != 0 and "trainer.save_freq" in no_saves.stderr
