"""The service reads its probe from MIG_PROBE__* variables, whichever backend they name."""

from __future__ import annotations

import pytest

from mig_annotator.engine.probe import (
    FakeProbeSettings,
    TransformersProbeSettings,
    VLLMProbeSettings,
    VLLMServerProbeSettings,
)
from mig_annotator.service.settings import ServiceSettings


def test_no_probe_variables_give_the_default_transformers_probe() -> None:
    assert ServiceSettings().probe == TransformersProbeSettings()


def test_only_the_model_variable_still_gives_the_transformers_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIG_PROBE__MODEL", "/models/probe")
    monkeypatch.setenv("MIG_PROBE__THREADS", "3")
    assert ServiceSettings().probe == TransformersProbeSettings(model="/models/probe", threads=3)


def test_the_backend_variable_selects_the_vllm_server_with_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIG_PROBE__BACKEND", "vllm-server")
    monkeypatch.setenv("MIG_PROBE__MODEL", "/models/probe")
    monkeypatch.setenv("MIG_PROBE__BASE_URL", "http://vllm:8000")
    monkeypatch.setenv("MIG_PROBE__API_KEY", "sk-vllm")
    monkeypatch.setenv("MIG_PROBE__VLLM_PATH", "prefix-cached")
    probe = ServiceSettings().probe
    assert isinstance(probe, VLLMServerProbeSettings)
    assert (probe.model, probe.base_url, probe.vllm_path) == (
        "/models/probe",
        "http://vllm:8000",
        "prefix-cached",
    )
    assert probe.api_key is not None and probe.api_key.get_secret_value() == "sk-vllm"
    assert ServiceSettings().exact is False


def test_the_in_process_vllm_and_fake_backends_parse_their_own_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MIG_PROBE__BACKEND", "vllm")
    monkeypatch.setenv("MIG_PROBE__ENGINE_ARGS", '{"seed": 1}')
    monkeypatch.setenv("MIG_PROBE__MAX_MODEL_LEN", "2048")
    assert ServiceSettings().probe == VLLMProbeSettings(engine_args={"seed": 1}, max_model_len=2048)
    monkeypatch.delenv("MIG_PROBE__ENGINE_ARGS")
    monkeypatch.delenv("MIG_PROBE__MAX_MODEL_LEN")
    monkeypatch.setenv("MIG_PROBE__BACKEND", "fake")
    monkeypatch.setenv("MIG_PROBE__SEED", "7")
    assert ServiceSettings().probe == FakeProbeSettings(seed=7)


def test_a_field_the_backend_does_not_have_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIG_PROBE__BACKEND", "vllm-server")
    monkeypatch.setenv("MIG_PROBE__THREADS", "2")
    with pytest.raises(ValueError, match=r"probe\.vllm-server\.threads\n  Extra inputs are not permitted"):
        ServiceSettings()


@pytest.mark.parametrize(
    ("variable", "budgets"),
    [("MIG_MICRO_BATCH_TOKENS", (512, 4096)), ("MIG_PROBE__FORWARD_BATCH_TOKENS", (16384, 512))],
)
def test_the_two_batch_budgets_are_read_from_their_own_variables(
    variable: str, budgets: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "512")
    settings = ServiceSettings()
    micro, forward = settings.micro_batch_tokens, settings.probe.forward_batch_tokens  # type: ignore[union-attr]
    assert (micro, forward) == budgets
