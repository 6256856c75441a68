"""FollowPolicy (the verl recipe's step -> probe version rule) against a real service that reloads.

Tiny random Llama checkpoints in verl's layout (``global_step_N/actor/huggingface``) and a live service
on the first one; no verl needed (the reward-loop side runs in ``make test-verl``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mig_annotator.client import AsyncMigClient, MigServiceError
from mig_annotator.client.verl_follow import FollowPolicy, checkpoint_folder, sample_global_step
from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.engine.probe.transformers_probe import TransformersProbe
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.long_context import tiny_long_context_model
from tests.service.support import live_server

EVERY = 2


def test_each_step_needs_the_version_of_its_newest_checkpoint_and_never_an_older_one(tmp_path: Path) -> None:
    initial = tiny_long_context_model(tmp_path / "initial", 2048, seed=0)
    for step, seed in ((2, 2), (4, 4)):
        tiny_long_context_model(checkpoint_folder(tmp_path, step), 2048, seed=seed)
    settings = ServiceSettings(audit_enabled=False, api_keys={"admin": "admin-key"}, admin_key_ids=["admin"])
    probe = TransformersProbe(TransformersProbeSettings(model=str(initial), threads=1))

    async def scenario(url: str) -> list[object]:
        async with AsyncMigClient(url, api_key="admin-key") as client:
            follow = FollowPolicy(tmp_path, EVERY, client.reload)
            seen: list[object] = [await follow.min_version(None), await follow.min_version(1)]
            # the samples of step 2 arrive together: one reload, every one of them waits for its answer
            seen.append(await asyncio.gather(*(follow.min_version(2) for _ in range(4))))
            seen.append(await follow.min_version(3))  # newest checkpoint: still step 2's
            seen.append(await follow.min_version(5))  # step 4's
            seen.append(await follow.min_version(2))  # a straggler of step 2: its known version
            seen.append([step for step, _ in follow.reloads])
            with pytest.raises(MigServiceError) as refused:
                await follow.min_version(6)  # no global_step_6 saved
            seen.append(refused.value.status)
            return seen

    with live_server(create_app(settings, probe=probe)) as url:
        seen = asyncio.run(scenario(url))
    assert seen == [None, None, [2, 2, 2, 2], 2, 3, 2, [2, 4], 422]


def test_the_checkpoint_folder_is_fsdps_unless_megatrons_exists(tmp_path: Path) -> None:
    assert checkpoint_folder(tmp_path, 4) == tmp_path / "global_step_4" / "actor" / "huggingface"
    megatron = tmp_path / "global_step_4" / "actor" / "model" / "huggingface"
    megatron.mkdir(parents=True)
    assert checkpoint_folder(tmp_path, 4) == megatron


def test_the_step_comes_from_the_rollout_servers_extra_fields_or_the_row() -> None:
    assert sample_global_step({"tool_extra_fields": {"global_steps": 7}}) == 7
    assert sample_global_step({"tool_extra_fields": {}, "global_steps": 3}) == 3
    assert sample_global_step({"extra_info": {}}) is None
    with pytest.raises(ValueError, match=r"trainer\.save_freq"):
        FollowPolicy("ckpt", 0, lambda folder: None)  # type: ignore[arg-type,return-value]
