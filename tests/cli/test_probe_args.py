"""`--probe-arg KEY=VALUE`: every probe field without its own option, settable from `score`, `serve` and
`build` alike, and reaching the real probe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mig_annotator.cli.app import app
from mig_annotator.cli.options import PROBE_ARG_FIELDS, PROBE_FIELDS, OptionError, parse_probe_args
from mig_annotator.engine.probe import registry
from mig_annotator.engine.probe.base import Probe
from mig_annotator.engine.probe.registry import SETTINGS_CLASSES

PROBE_ARGS = ["--probe-arg", "chunk_tokens=32", "--probe-arg", "group-prefixes=false"]
ONE_TRACE = {
    "id": "t1",
    "question": "What is 1 + 2?",
    "completion": "1 + 2 = 3.\nA: 3",
    "reference_answer": "3",
}


def test_every_probe_field_of_every_backend_is_settable() -> None:
    every_field = {name for cls in SETTINGS_CLASSES.values() for name in cls.model_fields} - {"backend"}
    assert set(PROBE_FIELDS) == every_field
    assert {"chunk_tokens", "group_prefixes", "max_model_len", "max_concurrency"} <= set(PROBE_ARG_FIELDS)
    assert not {"mode", "model", "backend", "threads"} & set(PROBE_ARG_FIELDS)  # those have their own option


def test_values_are_json_where_they_parse_and_text_fields_stay_text() -> None:
    parsed = parse_probe_args(
        ["chunk_tokens=null", "group_prefixes=false", 'engine_args={"seed": 1}', "tokenizer=123"]
    )
    assert parsed == {
        "chunk_tokens": None,
        "group_prefixes": False,
        "engine_args": {"seed": 1},
        "tokenizer": "123",
    }


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "chunk_token=8",
            "--probe-arg chunk_token: no probe setting of that name; did you mean chunk_tokens?",
        ),
        ("mode=naive", "--probe-arg mode: use its own option, --mode"),
        ("chunk_tokens", "--probe-arg chunk_tokens: write KEY=VALUE"),
    ],
)
def test_a_bad_entry_is_named(entry: str, message: str) -> None:
    with pytest.raises(OptionError, match=message.replace("?", r"\?")):
        parse_probe_args([entry])


def test_a_bad_value_names_the_probe_arg() -> None:
    result = CliRunner().invoke(
        app,
        ["score", "--question", "q", "--completion", "c", "--answer", "1", "--probe-arg", "chunk_tokens=4"],
    )
    assert result.exit_code == 2
    assert "--probe-arg chunk_tokens: Input should be greater than or equal to 16" in " ".join(
        result.output.split()
    )


def test_a_setting_of_another_backend_is_refused() -> None:
    result = CliRunner().invoke(
        app,
        [
            "score",
            "--question",
            "q",
            "--completion",
            "c",
            "--answer",
            "1",
            "--probe-arg",
            "max_concurrency=2",
        ],
    )
    assert result.exit_code == 2
    assert "--probe-arg max_concurrency: does not apply to this backend" in " ".join(result.output.split())


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Probe]:
    """The real probes the commands open."""
    probes: list[Probe] = []
    real_open = registry.open_probe

    def open_and_keep(settings: Any) -> Probe:
        probes.append(real_open(settings))
        return probes[-1]

    monkeypatch.setattr(registry, "open_probe", open_and_keep)
    return probes


def reached(probe: Probe) -> tuple[object, object]:
    settings = probe.settings
    return settings.chunk_tokens, settings.group_prefixes  # type: ignore[union-attr]


def test_score_sets_them(opened: list[Probe]) -> None:
    args = ["score", "--question", ONE_TRACE["question"], "--completion", ONE_TRACE["completion"]]
    result = CliRunner().invoke(app, [*args, "--answer", "3", *PROBE_ARGS])
    assert result.exit_code == 0, result.output
    assert [reached(probe) for probe in opened] == [(32, False)]


def test_build_sets_them(opened: list[Probe], tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(ONE_TRACE) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["build", str(source), "--out", str(tmp_path / "out"), "--no-progress", *PROBE_ARGS]
    )
    assert result.exit_code == 0, result.output
    assert [reached(probe) for probe in opened] == [(32, False)]
    assert (tmp_path / "out" / "_SUCCESS").is_file()


def test_serve_sets_them_over_the_environment(opened: list[Probe], monkeypatch: pytest.MonkeyPatch) -> None:
    from mig_annotator.service.settings import ServiceSettings

    def start(settings: ServiceSettings) -> None:
        registry.open_probe(settings.probe)  # what the service does at start-up

    monkeypatch.setattr("mig_annotator.service.server.serve", start)
    env = {"MIG_PROBE__CHUNK_TOKENS": "64", "MIG_PROBE__THREADS": "1"}
    result = CliRunner().invoke(app, ["serve", *PROBE_ARGS], env=env)
    assert result.exit_code == 0, result.output
    [probe] = opened
    assert reached(probe) == (32, False) and probe.settings.threads == 1  # type: ignore[union-attr]
