"""The probe and scoring options: one declaration each, shared by `score`, `serve` and `build`."""

from __future__ import annotations

import typing
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from mig_annotator.cli import options
from mig_annotator.cli.app import app
from mig_annotator.cli.build import build
from mig_annotator.cli.options import (
    OptionError,
    ProbeOptionValues,
    ScoringOptionValues,
    probe_and_scoring,
    probe_options,
    scoring_options,
)
from mig_annotator.cli.score import score
from mig_annotator.cli.serve import serve
from mig_annotator.engine.probe.registry import ProbeSettings
from mig_annotator.engine.probe.settings import VLLMServerProbeSettings
from mig_annotator.schemas import PromptTemplate, ScoringConfig

SHARED = {**options.PROBE_OPTIONS, **options.SCORING_OPTIONS}
COMMANDS = {"score": score, "serve": serve, "build": build}


def option_info(annotated: object) -> typer.models.OptionInfo:
    [info] = [extra for extra in typing.get_args(annotated)[1:] if isinstance(extra, typer.models.OptionInfo)]
    return info


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_shared_option_is_the_one_declared_object(command: str) -> None:
    hints = typing.get_type_hints(COMMANDS[command], include_extras=True)
    for name, declared in SHARED.items():
        assert option_info(hints[name]) is option_info(declared), f"{command} --{name}"


def click_params(command: str) -> dict[str, click.Parameter]:
    root = typer.main.get_command(app)
    return {param.name: param for param in root.commands[command].params}  # type: ignore[attr-defined]


def test_the_three_commands_parse_the_shared_options_alike() -> None:
    described = {
        command: {
            name: (
                tuple(param.opts),
                tuple(param.secondary_opts),
                param.metavar,
                param.envvar,
                param.help,
            )
            for name, param in click_params(command).items()
            if name in SHARED
        }
        for command in COMMANDS
    }
    assert set(described["score"]) == set(SHARED)
    assert described["score"] == described["serve"] == described["build"]
    assert "MIG_PROBE__API_KEY" in described["score"]["api_key"][4]


def test_only_given_options_reach_the_settings_plus_the_backend() -> None:
    assert probe_options(ProbeOptionValues(mode="naive"), default_backend="transformers") == {
        "backend": "transformers",
        "mode": "naive",
    }
    assert probe_options(ProbeOptionValues(), default_backend=None) == {}
    assert scoring_options(ScoringOptionValues(watermark="gain", chat_template=False)) == {
        "watermark": "gain",
        "prompt": {"chat": False},
    }
    probe, config = probe_and_scoring(
        ProbeOptionValues(backend="vllm-server", base_url="http://gpu:8000", api_key="k"),
        ScoringOptionValues(segmenter="regex", step_regex=r"\n\n", chat_template=True),
    )
    assert probe == VLLMServerProbeSettings(base_url="http://gpu:8000", api_key="k")
    assert config == ScoringConfig(segmenter="regex", step_regex=r"\n\n", prompt=PromptTemplate(chat=True))


def test_invalid_settings_name_the_options() -> None:
    with pytest.raises(OptionError, match="--threads: Input should be greater than or equal to 1"):
        probe_and_scoring(ProbeOptionValues(threads=0), ScoringOptionValues())
    with pytest.raises(OptionError, match=r"step_regex is required when segmenter=.regex.$"):
        probe_and_scoring(ProbeOptionValues(), ScoringOptionValues(segmenter="regex"))


def test_the_old_build_key_variable_is_gone_and_the_service_one_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`build` read MIG_VLLM_API_KEY; every command now reads MIG_PROBE__API_KEY, as the service does."""
    seen: list[ProbeSettings] = []

    def capture(settings: ProbeSettings) -> None:
        seen.append(settings)
        raise SystemExit(7)  # stop before any model work

    monkeypatch.setattr("mig_annotator.engine.probe.registry.open_probe", capture)
    runner = CliRunner()
    args = ["score", "--backend", "vllm-server", "--question", "q", "--completion", "c", "--answer", "1"]
    runner.invoke(app, args, env={"MIG_VLLM_API_KEY": "old", "MIG_PROBE__API_KEY": ""})
    runner.invoke(app, args, env={"MIG_PROBE__API_KEY": "new"})
    keys = [None if s.api_key is None else s.api_key.get_secret_value() for s in seen]
    assert keys == [None, "new"]


def test_an_exported_server_key_does_not_reach_other_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[ProbeSettings] = []

    def capture(settings: ProbeSettings) -> None:
        seen.append(settings)
        raise SystemExit(7)

    monkeypatch.setattr("mig_annotator.engine.probe.registry.open_probe", capture)
    result = CliRunner().invoke(
        app,
        ["score", "--question", "q", "--completion", "c", "--answer", "1"],
        env={"MIG_PROBE__API_KEY": "k"},
    )
    assert result.exit_code == 7 and seen[0].backend == "transformers"
    assert "api_key" not in type(seen[0]).model_fields  # the transformers settings have no key at all


def test_serve_merges_its_options_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mig_annotator.service.settings import ServiceSettings

    served: list[ServiceSettings] = []
    monkeypatch.setattr("mig_annotator.service.server.serve", served.append)
    env = {
        "MIG_PROBE__MODEL": str(tmp_path),
        "MIG_PROBE__THREADS": "3",
        "MIG_SCORING__WATERMARK": "gain",
        "MIG_PORT": "9001",
    }
    result = CliRunner().invoke(app, ["serve", "--mode", "naive", "--chat-template", "--port", "0"], env=env)
    assert result.exit_code == 0, result.output
    [settings] = served
    assert (settings.probe.model, settings.probe.threads, settings.probe.mode) == (str(tmp_path), 3, "naive")
    assert settings.scoring.watermark == "gain" and settings.scoring.prompt.chat is True
    assert settings.port == 0


def test_serve_names_the_option_or_variable_of_a_bad_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mig_annotator.service.server.serve", lambda settings: None)
    result = CliRunner().invoke(app, ["serve"], env={"MIG_PROBE__THREADS": "0"})
    assert result.exit_code == 2
    assert "--threads or MIG_PROBE__THREADS: Input should be greater than or equal to 1" in " ".join(
        result.output.split()
    )


def test_every_scoring_field_has_its_shared_option() -> None:
    """A new ScoringConfig field needs an option here, or score/serve/build silently cannot set it."""
    fields = set(ScoringConfig.model_fields) - {"prompt"}
    assert fields == set(options.SCORING_OPTIONS) - {"chat_template"}


def test_every_option_made_from_a_setting_shows_its_field_description() -> None:
    """The help of an option that sets a settings field is that field's description, the setting's one text
    (a probe field only some real backends have is introduced by their names)."""
    from mig_annotator.builder.columns import ColumnMapping
    from mig_annotator.builder.settings import BuildSettings
    from mig_annotator.cli.options import FIELD_OPTIONS
    from mig_annotator.engine.probe.registry import BACKEND_DESCRIPTION, SETTINGS_CLASSES
    from mig_annotator.service.settings import ServiceSettings

    real = {name for name in SETTINGS_CLASSES if name != "fake"}
    by_flag: dict[tuple[str, str], click.Parameter] = {}
    for command in COMMANDS:  # the commands whose options come from settings fields
        for param in click_params(command).values():
            argument = [] if param.opts[0].startswith("-") else [f"{param.name.upper()}..."]
            by_flag |= {(command, flag): param for flag in [*param.opts, *argument]}
    own_command = {BuildSettings: ["build"], ColumnMapping: ["build"], ServiceSettings: ["serve"]}
    checked = 0
    for (model, name), flag in FIELD_OPTIONS.items():
        if model is SETTINGS_CLASSES["fake"]:
            continue  # a test probe: the options describe the real backends' fields
        holders = sorted(b for b, cls in SETTINGS_CLASSES.items() if name in cls.model_fields and b in real)
        description = model.model_fields[name].description
        if name == "backend":
            expected = BACKEND_DESCRIPTION
        elif model in SETTINGS_CLASSES.values() and set(holders) != real:
            expected = f"{', '.join(holders)}: {description}"
        else:
            expected = description
        for command in own_command.get(model, COMMANDS):
            help_text = by_flag[command, flag].help  # type: ignore[attr-defined]
            assert help_text == expected, f"{command} {flag}: {help_text!r}"
            checked += 1
    assert checked >= 3 * 21 + 20  # the shared options of score, serve and build, and build's own


def test_a_probe_setting_of_several_backends_is_declared_once() -> None:
    from mig_annotator.engine.probe.registry import SETTINGS_CLASSES

    real = [cls for name, cls in SETTINGS_CLASSES.items() if name != "fake"]
    for name in {field for cls in real for field in cls.model_fields} - {"backend"}:
        infos = [cls.model_fields[name] for cls in real if name in cls.model_fields]
        assert len({info.description for info in infos}) == 1, name
