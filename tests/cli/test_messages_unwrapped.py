"""Errors and one-line messages reach a pipe on one line, whatever the length of the path they name.

rich wraps at 80 columns when the output is not a terminal, so the break used to fall wherever a path's length
put it (a test passed or failed with the length of pytest's temp folder). Every length below crosses 80
columns at a different place in the message; none may split it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mig_annotator.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
LENGTHS = (8, 41, 77, 93, 160, 300)  # of the padding folder's name: the message crosses 80 columns anywhere


def _long_path(tmp_path: Path, length: int) -> Path:
    folder = tmp_path.joinpath(*("p" * min(100, length - i) for i in range(0, length, 100)))
    folder.mkdir(parents=True)
    return folder / "missing"


def _plain_env() -> dict[str, str]:
    """The environment of a script or CI job: no terminal width, no forced terminal."""
    env = {
        key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES", "TTY_COMPATIBLE")
    }
    return {**env, "HF_HUB_OFFLINE": "1", "TERM": "dumb"}


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize(
    ("command", "suffix", "expected"),
    [
        ("report", "", "not a built dataset folder, an audit-log folder or a .parquet file"),
        ("eval", "", "not a built dataset folder, an audit-log folder or a .parquet file"),
        ("audit", "", "not a built dataset folder, an audit-log folder or a .parquet file"),
        ("score", ".jsonl", "no such file"),
    ],
)
def test_an_error_naming_a_long_path_is_one_line(
    tmp_path: Path, length: int, command: str, suffix: str, expected: str
) -> None:
    path = f"{_long_path(tmp_path, length)}{suffix}"
    args = [command, "--input", path] if command == "score" else [command, path]
    done = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert done.exit_code == 2, done.output
    assert f"error: {path}: {expected}\n" in done.output


@pytest.mark.parametrize("length", (41, 160))
def test_the_console_script_prints_errors_and_usage_errors_unwrapped(tmp_path: Path, length: int) -> None:
    path = str(_long_path(tmp_path, length))
    run = [sys.executable, "-m", "mig_annotator.cli"]
    options = {"capture_output": True, "text": True, "env": _plain_env(), "cwd": ROOT, "timeout": 300}
    done = subprocess.run([*run, "report", path], check=False, **options)
    assert done.returncode == 2
    assert (
        f"error: {path}: not a built dataset folder, an audit-log folder or a .parquet file\n" in done.stderr
    )
    # a usage error found by the option parser: click's plain message, no framed panel cut at 80 columns
    mode = "m" * length
    done = subprocess.run([*run, "score", "--mode", mode], check=False, **options)
    assert done.returncode == 2
    [message] = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert message.startswith("Error: Invalid value for '--mode'") and f"'{mode}'" in message
    assert "╭" not in done.stderr
