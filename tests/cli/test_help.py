"""Help texts: every command group is there, the shared options are documented, and the docs they point to
exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mig_annotator.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def help_text(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_the_module_runs_as_the_console_script_and_lists_every_command_group() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mig_annotator.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **WIDE},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"^│ (\w+) ", result.stdout, flags=re.MULTILINE))
    assert {"score", "serve", "build", "rescore", "export", "audit", "report", "eval", "model"} <= listed


@pytest.mark.parametrize("command", ["score", "serve", "build"])
def test_the_probe_and_scoring_options_are_documented_alike(command: str) -> None:
    text = help_text(command)
    for option in (
        "--backend",
        "--model",
        "--mode",
        "--dtype",
        "--device",
        "--threads",
        "--forward-batch-tokens",
    ):
        assert option in text
    for option in ("--vllm-path", "--base-url", "--api-key", "--segmenter", "--watermark", "--context-limit"):
        assert option in text
    assert "<packed|packed-single|naive>" in text and "<transformers|vllm-server|vllm|fake>" in text
    assert "$MIG_PROBE__API_KEY" in text and "MIG_VLLM_API_KEY" not in text


def test_rescore_offers_the_scoring_options_and_no_probe_options() -> None:
    text = help_text("rescore")
    for option in ("--watermark", "--aggregation", "--sft-threshold", "--sft-statistic", "--overwrite"):
        assert option in text
    for option in ("--backend", "--model", "--probe-arg", "--mode"):
        assert option not in text


def test_serve_help_points_to_the_service_docs_and_they_exist() -> None:
    assert "docs/service.md" in help_text("serve")
    assert (ROOT / "docs" / "service.md").is_file()


def test_score_help_states_the_exit_statuses_and_the_streaming_options() -> None:
    text = help_text("score")
    assert "Exit status 0 when every row was annotated, 1 when any row failed" in text
    for option in ("--input", "--out", "--batch-size", "--strict", "--format", "--progress"):
        assert option in text


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"mig-annotator((?:\s+[a-z][a-z-]*)+)(.*)")
SHELL_BREAK = re.compile(r"\s(?:\||>|&&|;|&|#)(?:\s|$)")


def documented_commands() -> list[tuple[str, list[str], list[str]]]:
    """(doc, command words, --flags) of every `mig-annotator ...` line in the docs' code blocks."""
    found = []
    for doc in DOCS:
        blocks = re.findall(r"```[a-z]*\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.DOTALL)
        for block in blocks:
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                for part in SHELL_BREAK.split(line):  # each command of a pipeline; comments dropped
                    match = COMMAND.search(part)
                    if match:
                        words = match.group(1).split()
                        flags = re.findall(r"(?<![\w-])--[a-z][a-z-]*", match.group(2))
                        found.append((doc.name, words, flags))
    return found


def test_every_documented_command_line_names_real_commands_and_options() -> None:
    root = typer.main.get_command(app)
    checked = 0
    for doc, words, flags in documented_commands():
        command = root
        for word in words:  # descend while the word names a subcommand; the rest are arguments
            sub = getattr(command, "commands", {}).get(word)
            if sub is None:
                break
            command = sub
        assert command is not root, f"{doc}: mig-annotator {' '.join(words)}: no such command"
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for flag in flags:
            assert flag in known, f"{doc}: mig-annotator {' '.join(words)}: no option {flag}"
        checked += 1
    assert checked >= 20  # the docs do show the commands


def test_the_cli_loads_without_the_serve_and_build_extras() -> None:
    """`score` is in the engine extra: loading the app (and mapping rows) must not need polars, pyarrow,
    duckdb or fastapi, which only the build and serve extras install."""
    code = (
        "import sys\n"
        "from mig_annotator.cli.app import app\n"
        "from mig_annotator.cli.trace_input import single_row\n"
        "single_row('q?', 'a', '1')\n"
        "print(sorted(m for m in ('polars', 'pyarrow', 'duckdb', 'fastapi', 'torch') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120, env=os.environ
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
