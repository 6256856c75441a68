"""The service's probe follows the policy: 2 real TRL steps, a checkpoint and a reload after each step.

A live service (127.0.0.1, the embedded SmolLM2 probe) with an admin key; MigGRPOTrainer scores through
it, and ServiceFollowsPolicy saves the policy after every step and reloads the service's probe from the
folder. Batch 1 is scored by the probe the service started with (version 1), batch 2 by the policy's
weights after step 1 (version 2, the reload's fingerprint).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mig_annotator.client import MigClient
from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server
from tests.trainers.support import cpu_grpo_config, gate_open_dataset

pytestmark = [pytest.mark.trainers, pytest.mark.model]

KEYS = {"trainer-admin": "sk-trainer-admin-0123456789"}


def test_the_service_scores_each_batch_with_the_policy_saved_after_the_step_before(
    tmp_path: Path, default_model_path: Path
) -> None:
    from mig_annotator.trainer.trl import MigGRPOTrainer
    from mig_annotator.trainer.trl_reload import ServiceFollowsPolicy

    dataset = gate_open_dataset()
    service = ServiceSettings(
        api_keys=KEYS, admin_key_ids=["trainer-admin"], probe=TransformersProbeSettings(threads=1)
    )
    with live_server(create_app(service)) as url, MigClient(url, api_key=KEYS["trainer-admin"]) as client:
        follow = ServiceFollowsPolicy(client, tmp_path / "checkpoints", every_n_steps=1, keep=1)
        trainer = MigGRPOTrainer(
            model=str(default_model_path),
            args=cpu_grpo_config(tmp_path / "grpo", 2),
            train_dataset=dataset,
            client=client,
            callbacks=[follow],
        )
        trainer.train()
        serving = client.info().probe.fingerprint
    assert [(step, answer.probe_version) for step, answer in follow.reloads] == [(1, 2), (2, 3)]
    first, second = trainer.mig_annotations
    assert {a.probe_version for a in first if a is not None} == {1}
    assert {a.probe_version for a in second if a is not None} == {2}
    assert {a.probe_identity for a in second if a is not None} == {follow.reloads[0][1].fingerprint}
    assert serving == follow.reloads[1][1].fingerprint
    assert follow.reloads[0][1].digest != follow.reloads[1][1].digest  # the step changed the weights
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-2"]  # keep=1
