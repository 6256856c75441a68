"""`docs reference`: the configuration reference (docs/reference/configuration.md), generated from the models.

Every setting is described once, in its ``Field(description=...)``; the command-line help
(:mod:`cli.options`) and these tables both come from there. A table row per setting: its name (dotted where
nested), the option that sets it, the service's environment variable (pydantic-settings: ``MIG_`` and ``__``
between nested names), its type, its default and its description. tests/cli/test_reference.py regenerates the
page and compares it with the committed one.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from mig_annotator.builder.columns import ColumnMapping
from mig_annotator.builder.settings import BuildSettings
from mig_annotator.cli import build, serve  # noqa: F401  (their options enter FIELD_OPTIONS)
from mig_annotator.cli.console import console
from mig_annotator.cli.options import FIELD_OPTIONS, PROBE_ARG_FIELDS, field_description
from mig_annotator.engine.probe.registry import BACKEND_DESCRIPTION, BACKENDS, DEFAULT_BACKEND
from mig_annotator.schemas.config import PromptTemplate, ScoringConfig
from mig_annotator.schemas.trace_images import ImageLimits
from mig_annotator.service.settings import ServiceSettings

REFERENCE_PATH = Path("docs/reference/configuration.md")
REGENERATE = "mig-annotator docs reference"
ENV_PREFIX = ServiceSettings.model_config.get("env_prefix", "")
ENV_NESTING = ServiceSettings.model_config.get("env_nested_delimiter") or "__"
_HEADER = ("Setting", "Option", "Variable", "Type", "Default", "Description")

docs_app = typer.Typer(help="The documentation's generated pages.", no_args_is_help=True)


def _type_name(annotation: Any) -> str:
    """A field's type in words: ``int or None``, ``packed, packed-single or naive``, ``list[str]``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        names = [f"`{value}`" for value in args]
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(arg) for arg in args)}]"
    if annotation is type(None):
        return "None"
    if annotation is SecretStr:
        return "str (secret)"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, Path):
        value = str(value)
    return f"`{value!r}`"


def _cell(text: str) -> str:
    """Text fit for one table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _rows(
    model: type[BaseModel],
    *,
    env_path: tuple[str, ...] | None,
    name_path: tuple[str, ...] = (),
    expand: tuple[type[BaseModel], ...] = (),
    skip: tuple[str, ...] = (),
    above: tuple[str, ...] = (),
    probe_args: bool = False,
) -> Iterator[tuple[str, ...]]:
    """One row per field of ``model``; a field whose type is in ``expand`` gives its own fields' rows, one
    in ``above`` (a group with its own section) only its description."""
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        if name in above:
            description = _cell(field_description(model, name))
            yield (f"`{'.'.join((*name_path, name))}`", "", "", "see above", "", description)
            continue
        env = None if env_path is None else (*env_path, name)
        if field.annotation in expand:
            nested: Any = field.annotation
            description = _cell(field_description(model, name))
            yield (f"`{'.'.join((*name_path, name))}`", "", "", nested.__name__, "", description)
            yield from _rows(nested, env_path=env, name_path=(*name_path, name), expand=expand)
            continue
        option = FIELD_OPTIONS.get((model, name))
        if option is None and probe_args and name in PROBE_ARG_FIELDS:
            option = f"--probe-arg {name}=…"
        variable = None if env is None else ENV_PREFIX + ENV_NESTING.join(env).upper()
        yield (
            f"`{'.'.join((*name_path, name))}`",
            f"`{option}`" if option else "",
            f"`{variable}`" if variable else "",
            _cell(_type_name(field.annotation)),
            _cell(_default(field)),
            _cell(field_description(model, name)),
        )


def _table(rows: Iterator[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def _first_line(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())


def render_reference() -> str:
    """The configuration reference page, as markdown."""
    probe_env = ("probe",)
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated by `{REGENERATE}` from the settings models: do not edit. Change a setting's "
        "Field(description=...) and run the command again. -->",
        "",
        "Every setting is described once, in its settings model; `--help` and these tables both come from "
        f"there (`{REGENERATE}` writes this page). *Option*: the command-line option that sets it "
        "(`score`, `serve` and `build` share the probe and scoring options). *Variable*: the environment "
        f"variable `mig-annotator serve` reads it from (prefix `{ENV_PREFIX}`, `{ENV_NESTING}` between "
        "nested names); options given to `serve` override the variables.",
        "",
        "## Probe",
        "",
        f"`backend` (`--backend`, `{ENV_PREFIX}PROBE{ENV_NESTING}BACKEND`, default `{DEFAULT_BACKEND}`): "
        f"{BACKEND_DESCRIPTION}. Each backend has its own settings; a setting another backend has is "
        "refused. The settings without an option of their own are set with `--probe-arg KEY=VALUE`.",
        "",
    ]
    for name, backend in BACKENDS.items():
        lines += [f"### {name}", "", f"{_first_line(backend.settings)}.".replace("..", "."), ""]
        lines += _table(_rows(backend.settings, env_path=probe_env, skip=("backend",), probe_args=True))
    lines += [
        "## Scoring",
        "",
        f"{_first_line(ScoringConfig)} The service's are the defaults a request may override.",
        "",
        *_table(_rows(ScoringConfig, env_path=("scoring",), expand=(PromptTemplate,))),
        "## Service (`mig-annotator serve`)",
        "",
        f"{_first_line(ServiceSettings)} The probe (`{ENV_PREFIX}PROBE{ENV_NESTING}*`) and the scoring "
        f"defaults (`{ENV_PREFIX}SCORING{ENV_NESTING}*`) are above.",
        "",
        *_table(_rows(ServiceSettings, env_path=(), expand=(ImageLimits,), above=("probe", "scoring"))),
        "## Build (`mig-annotator build`)",
        "",
        f"{_first_line(BuildSettings)} The probe and scoring options are above.",
        "",
        *_table(_rows(BuildSettings, env_path=None, expand=(ColumnMapping,), above=("scoring",))),
    ]
    return "\n".join(lines).rstrip() + "\n"


@docs_app.command("reference")
def reference(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the page is written.")] = REFERENCE_PATH,
) -> None:
    """Write the configuration reference (every setting, from the settings models) as markdown tables."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_reference(), encoding="utf-8")
    console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add `docs reference`."""
    app.add_typer(docs_app, name="docs")
