"""docker-compose.yml and the Dockerfile agree with the code: env var names, ports, commands, start order.

There is no Docker engine here; these tests parse the files and check them against the settings classes and
the CLI that the containers run.
"""

from __future__ import annotations

import re
import shlex
import tomllib
import typing
from pathlib import Path

import pytest
import typer
import yaml
from pydantic import BaseModel

from mig_annotator.cli.app import app
from mig_annotator.service.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
MODEL_STORE_VARIABLES = {"MIG_CACHE_DIR"}  # read by mig.model_store, not by a settings class


def _environment(service: dict) -> dict[str, str]:
    return {name: str(value) for name, value in (service.get("environment") or {}).items()}


def _dockerfile_env() -> dict[str, str]:
    block = re.search(r"^ENV (.*?)(?:\n\n|\nWORKDIR)", DOCKERFILE, flags=re.S | re.M)
    assert block is not None
    return dict(pair.split("=", 1) for pair in shlex.split(block.group(1).replace("\\\n", " ")))


def _setting_exists(variable: str) -> bool:
    """Whether ServiceSettings (prefix MIG_, nested groups split by __) reads ``variable``."""
    if variable in MODEL_STORE_VARIABLES:
        return True
    if not variable.startswith("MIG_"):
        return False
    models: list[type[BaseModel]] = [ServiceSettings]
    parts = variable.removeprefix("MIG_").lower().split("__")
    for depth, part in enumerate(parts):
        fields = [model.model_fields[part] for model in models if part in model.model_fields]
        if not fields:
            return False
        if depth < len(parts) - 1:
            models = [found for field in fields for found in _models_in(field.annotation)]
            if not models:
                return False
    return True


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The pydantic models a field holds: itself, or the members of a (discriminated) union."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for member in typing.get_args(annotation) for model in _models_in(member)]


def _cli_commands() -> set[tuple[str, ...]]:
    root = typer.main.get_command(app)
    found: set[tuple[str, ...]] = set()
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        found.add((name,))
        for sub in getattr(command, "commands", {}):
            found.add((name, sub))
    return found


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_mig_variable_in_compose_is_read_by_the_settings(name: str) -> None:
    for variable in _environment(SERVICES[name]):
        if variable.startswith("MIG_"):
            assert _setting_exists(variable), f"{name}: {variable} is not a setting the code reads"


def test_the_dockerfile_environment_is_read_by_the_settings() -> None:
    for variable in _dockerfile_env():
        if variable.startswith("MIG_"):
            assert _setting_exists(variable), variable


@pytest.mark.parametrize("name", ["annotator", "annotator-cpu"])
def test_the_annotator_environment_validates_as_service_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in [v for v in __import__("os").environ if v.startswith("MIG_")]:
        monkeypatch.delenv(variable)
    environment = _environment(SERVICES[name])
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value.replace("${MIG_VLLM_MODEL:-", "").rstrip("}"))
    settings = ServiceSettings()
    assert settings.host == "0.0.0.0"
    assert [f"{settings.port}:{settings.port}"] == SERVICES[name]["ports"]
    assert settings.probe.backend == environment["MIG_PROBE__BACKEND"]


def test_the_annotator_talks_to_the_vllm_service_on_its_port_after_it_is_healthy() -> None:
    annotator, vllm = SERVICES["annotator"], SERVICES["vllm"]
    environment = _environment(annotator)
    command = vllm["command"]
    port = command[command.index("--port") + 1]
    assert environment["MIG_PROBE__BASE_URL"] == f"http://vllm:{port}"
    assert annotator["depends_on"]["vllm"]["condition"] == "service_healthy"
    assert f"localhost:{port}/health" in " ".join(vllm["healthcheck"]["test"])
    # the routes and response fields the prefix-reusing paths need (mig.probe.vllm_server)
    assert {"--enable-prefix-caching", "--enable-scale-out", "--enable-prompt-tokens-details"} <= set(command)
    # the annotator checks its tokenizer against the server's: both read the same model folder
    assert environment["MIG_PROBE__MODEL"] == command[command.index("--model") + 1]


def test_the_gpu_service_reserves_a_gpu_and_the_cpu_profile_needs_none() -> None:
    devices = SERVICES["vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    cpu_services = [name for name, service in SERVICES.items() if "cpu" in service.get("profiles", [])]
    assert "annotator-cpu" in cpu_services
    assert all("deploy" not in SERVICES[name] for name in cpu_services)


def test_every_container_command_is_a_cli_command() -> None:
    commands = _cli_commands()
    for name, service in SERVICES.items():
        command = service.get("command")
        if command and command[0] == "mig-annotator":
            words = tuple(word for word in command[1:3] if not word.startswith(("-", "/")))
            assert words in commands, f"{name}: {command}"
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE, flags=re.M)
    assert cmd is not None and yaml.safe_load(cmd.group(1)) == ["mig-annotator", "serve"]


def test_the_dockerfile_exposes_the_port_the_service_binds() -> None:
    environment = _dockerfile_env()
    exposed = re.search(r"^EXPOSE (\d+)$", DOCKERFILE, flags=re.M)
    assert exposed is not None and exposed.group(1) == environment["MIG_PORT"]
    assert environment["HF_HUB_OFFLINE"] == "1"


def test_the_builder_is_a_one_shot_job() -> None:
    builder = SERVICES["builder"]
    assert builder["restart"] == "no" and builder["profiles"] == ["builder"]
    assert builder["command"][:2] == ["mig-annotator", "build"] and "--out" in builder["command"]


def test_the_image_copies_every_layer_folder_the_package_installs() -> None:
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    layers = sorted(set(package_dir.values()))
    assert {"mig_annotator", "cli", "client", "engine", "schemas", "service", "builder", "trainer"} == set(
        layers
    )
    missing = [layer for layer in layers if f"COPY {layer} ./{layer}" not in DOCKERFILE]
    assert not missing, f"the Dockerfile does not copy {missing}: the installed package would lack them"
