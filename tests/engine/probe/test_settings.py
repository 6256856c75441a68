"""Probe settings: one class per backend behind a discriminated union, opened through a lazy registry."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from mig_annotator.engine.probe import (
    FakeProbeSettings,
    Probe,
    TransformersProbeSettings,
    VLLMProbeSettings,
    VLLMServerProbeSettings,
    parse_probe_settings,
)
from mig_annotator.engine.probe.registry import BACKENDS, probe_class
from mig_annotator.engine.probe.settings import parse_base_urls


def test_a_dict_without_backend_means_the_transformers_probe() -> None:
    assert parse_probe_settings({}) == TransformersProbeSettings()
    settings = parse_probe_settings({"model": "/models/x", "threads": 2})
    assert isinstance(settings, TransformersProbeSettings)
    assert (settings.model, settings.threads, settings.mode) == ("/models/x", 2, "packed")


@pytest.mark.parametrize(
    ("backend", "settings_class"),
    [
        ("transformers", TransformersProbeSettings),
        ("vllm-server", VLLMServerProbeSettings),
        ("vllm", VLLMProbeSettings),
        ("fake", FakeProbeSettings),
    ],
)
def test_the_backend_picks_the_settings_class(backend: str, settings_class: type) -> None:
    settings = parse_probe_settings({"backend": backend})
    assert type(settings) is settings_class and settings.backend == backend
    assert parse_probe_settings(settings) is settings


def test_an_unknown_backend_or_another_backends_field_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match=r"'onnx'.*'transformers', 'vllm-server', 'vllm', 'fake'"):
        parse_probe_settings({"backend": "onnx"})
    with pytest.raises(ValidationError, match=r"transformers\.base_url\n  Extra inputs are not permitted"):
        parse_probe_settings({"base_url": "http://x"})


def test_the_server_settings_keep_the_api_key_secret() -> None:
    settings = parse_probe_settings(
        {"backend": "vllm-server", "api_key": "sk-1", "vllm_path": "prefix-cached"}
    )
    assert isinstance(settings, VLLMServerProbeSettings)
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "sk-1"
    assert "sk-1" not in repr(settings)


def test_every_registered_backend_names_its_probe_class() -> None:
    for backend in BACKENDS:
        probe_type = probe_class(backend)
        assert issubclass(probe_type, Probe) and probe_type.backend == backend
    with pytest.raises(ValueError, match="backend 'x'"):
        probe_class("x")


def test_importing_the_probe_package_and_settings_loads_no_backend() -> None:
    code = (
        "import sys; import mig_annotator.engine.probe, mig_annotator.engine.probe.settings; "
        "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'httpx') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_base_urls_parse_from_one_url_a_comma_list_or_json() -> None:
    assert parse_base_urls("http://a:8000/") == ["http://a:8000"]
    assert parse_base_urls("http://a:8000, http://b:8000") == ["http://a:8000", "http://b:8000"]
    assert parse_base_urls('["http://a:8000", "https://b"]') == ["http://a:8000", "https://b"]
    with pytest.raises(ValueError, match="base_url: 'a:8000' is not an http"):
        parse_base_urls("a:8000")
    with pytest.raises(ValueError, match="given more than once"):
        parse_base_urls("http://a,http://a/")
    with pytest.raises(ValueError, match="no server URL"):
        parse_base_urls(" , ")
