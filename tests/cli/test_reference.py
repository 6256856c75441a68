"""`docs reference`: the configuration reference is generated from the settings models, and the committed
page is the one the models give today."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from mig_annotator.builder.settings import BuildSettings
from mig_annotator.cli.app import app
from mig_annotator.cli.reference import REFERENCE_PATH, REGENERATE, render_reference
from mig_annotator.engine.probe.registry import BACKEND_DESCRIPTION, BACKENDS
from mig_annotator.schemas.config import PromptTemplate, ScoringConfig
from mig_annotator.service.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_configuration_reference_is_what_the_models_give() -> None:
    committed = (ROOT / REFERENCE_PATH).read_text(encoding="utf-8")
    assert committed == render_reference(), f"{REFERENCE_PATH} is stale: run `{REGENERATE}` and commit it"


def test_the_command_writes_the_page(tmp_path: Path) -> None:
    out = tmp_path / "reference" / "configuration.md"
    result = CliRunner().invoke(app, ["docs", "reference", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == render_reference()


def test_every_setting_has_a_row_with_its_description_variable_and_option() -> None:
    page = render_reference()
    models = [ScoringConfig, PromptTemplate, ServiceSettings, BuildSettings]
    probe_classes = [backend.settings for backend in BACKENDS.values()]
    models += probe_classes
    for model in models:
        for name, field in model.model_fields.items():
            if model in probe_classes and name == "backend":
                continue  # the registry describes the backends: BACKEND_DESCRIPTION, below
            assert field.description, f"{model.__name__}.{name} has no description"
            assert " ".join(field.description.split()).replace("|", "\\|") in page, f"{model.__name__}.{name}"
    rows = {line.split(" | ")[0]: line for line in page.splitlines() if line.startswith("| `")}
    assert "`--watermark` | `MIG_SCORING__WATERMARK` | `level` or `gain` | `'level'`" in rows["| `watermark`"]
    assert "| `MIG_SCORING__PROMPT__CHAT` |" in rows["| `prompt.chat`"]
    assert (
        "`--probe-arg chunk_tokens=…` | `MIG_PROBE__CHUNK_TOKENS` | int or None | `None`"
        in rows["| `chunk_tokens`"]
    )
    assert "| `MIG_IMAGE_LIMITS__MAX_IMAGES` | int | `8` |" in rows["| `image_limits.max_images`"]
    assert "| `--shard-rows` |  | int | `16384` |" in rows["| `shard_rows`"]
    assert BACKEND_DESCRIPTION in page
    for backend in BACKENDS:
        assert f"### {backend}\n" in page
