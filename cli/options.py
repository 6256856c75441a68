"""The probe and scoring options, derived once from the settings models and shared by `score`, `serve` and
`build`; and :func:`field_option`, the option of any other settings field.

Each named option takes its name, type, default, bounds and help from its settings field (the probe settings
classes of :mod:`engine.probe.settings`, :class:`ScoringConfig`): a setting is described once, in its
``Field(description=...)``. Every other probe field is reachable through ``--probe-arg KEY=VALUE``. A command
gets all of them by :func:`with_settings_options`: its parameter ``settings_options: SettingsOptions`` becomes
these options on the command line and arrives as one object. ``None`` always means "not given":
:func:`probe_options` and :func:`scoring_options` turn the given values into the dicts the settings models
validate (nothing the user did not give, so a model's own defaults, or the service's ``MIG_*`` environment,
decide the rest), and :func:`probe_and_scoring` validates both. :func:`validate_probe_settings` is the one
place a probe settings dict becomes a settings object. :data:`FIELD_OPTIONS` records which option sets which
field (the configuration reference reads it).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import json
import os
import types
from collections.abc import Callable
from typing import Annotated, Any, Optional, TypeVar, Union, get_args, get_origin

import annotated_types
import typer
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from mig_annotator.engine.probe.registry import (
    BACKEND_DESCRIPTION,
    BACKENDS,
    DEFAULT_BACKEND,
    SETTINGS_CLASSES,
    ProbeBackend,
    ProbeSettings,
    parse_probe_settings,
)
from mig_annotator.engine.probe.settings import API_KEY_ENV
from mig_annotator.schemas import PromptTemplate, ScoringConfig

PROBE_PANEL = "Probe"
SCORING_PANEL = "Scoring"
PROBE_ARG = "probe_arg"
CHAT_TEMPLATE = "chat_template"  # the option of the prompt's chat flag (ScoringConfig.prompt.chat)

FIELD_OPTIONS: dict[tuple[type[BaseModel], str], str] = {}
"""(settings model, field) -> the command-line option that sets it, for every option made from a field."""


def field_description(model: type[BaseModel], name: str) -> str:
    """The description of ``model``'s field ``name``: the one text of that setting (TypeError: none)."""
    description = model.model_fields[name].description
    if not description:
        raise TypeError(f"{model.__name__}.{name} has no Field(description=...)")
    return description


def field_option(model: type[BaseModel], name: str, *param_decls: str, **options: Any) -> Any:
    """The Typer option that sets ``model``'s field ``name``: its help is the field's description.

    ``param_decls`` as for ``typer.Option`` (default: the parameter's name, ``--name-with-dashes``).
    """
    flag = next((decl.split("/")[0] for decl in param_decls if decl.startswith("--")), None)
    FIELD_OPTIONS[(model, name)] = flag or "--" + name.replace("_", "-")
    return typer.Option(*param_decls, help=field_description(model, name), **options)


def field_argument(model: type[BaseModel], name: str, **options: Any) -> Any:
    """The Typer argument that sets ``model``'s field ``name``: its help is the field's description."""
    FIELD_OPTIONS[(model, name)] = name.upper() + "..."
    return typer.Argument(help=field_description(model, name), **options)


# The probe fields with a named option; ``--probe-arg`` sets the others.
_PROBE_FLAGS = (
    "backend",
    "model",
    "mode",
    "dtype",
    "device",
    "threads",
    "forward_batch_tokens",
    "vllm_path",
    "base_url",
    "api_key",
)
# The scoring fields with a named option: every ScoringConfig field; the prompt's chat flag stands for prompt.
_SCORING_FIELDS = tuple(name for name in ScoringConfig.model_fields if name != "prompt")
_REAL_BACKENDS = tuple(name for name in BACKENDS if name != "fake")  # the fake probe is for tests


def _probe_fields(name: str) -> list[tuple[str, FieldInfo]]:
    """(backend, field) of every backend's settings that have the field ``name``."""
    return [
        (backend, cls.model_fields[name])
        for backend, cls in SETTINGS_CLASSES.items()
        if name in cls.model_fields
    ]


PROBE_FIELDS: tuple[str, ...] = tuple(
    dict.fromkeys(name for cls in SETTINGS_CLASSES.values() for name in cls.model_fields if name != "backend")
)
"""Every probe settings field of any backend (``backend`` aside): what ``--probe-arg`` may set."""
PROBE_ARG_FIELDS: tuple[str, ...] = tuple(name for name in PROBE_FIELDS if name not in _PROBE_FLAGS)
"""The probe fields without a named option: ``--probe-arg`` sets them."""


def _option_type(field: FieldInfo) -> Any:
    """The command-line type of a field: its type without None, a secret as plain text."""
    annotation = field.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = Union[tuple(arg for arg in get_args(annotation) if arg is not type(None))]  # noqa: UP007
    return str if annotation is SecretStr else annotation


def _lower_bound(field: FieldInfo) -> Any:
    bounds = [item.ge for item in field.metadata if isinstance(item, annotated_types.Ge)]
    return bounds[0] if bounds else None


def probe_field_help(name: str) -> str:
    """The help of the probe option ``name``: its field's description (one for every backend that has the
    field), after the backends that have it unless every real backend does."""
    if name == "backend":
        return BACKEND_DESCRIPTION
    holders = [(backend, field) for backend, field in _probe_fields(name) if backend in _REAL_BACKENDS]
    descriptions = {field.description for _, field in holders}
    if len(descriptions) != 1 or None in descriptions:
        raise TypeError(f"probe setting {name}: declare its Field once for every backend that has it")
    backends = sorted(backend for backend, _ in holders)
    prefix = "" if set(backends) == set(_REAL_BACKENDS) else f"{', '.join(backends)}: "
    return prefix + descriptions.pop()


def _shown_default(field: FieldInfo) -> str | bool:
    """The default ``--help`` shows: the field's, unless it has none, it is None or it is secret."""
    if field.is_required() or field.default is None or field.annotation in (SecretStr, SecretStr | None):
        return False
    return str(field.default)


def _option(name: str, field: FieldInfo, help_text: str, panel: str, option_type: Any = None) -> Any:
    """The ``Annotated`` alias of one named option, from its settings field and help."""
    option = typer.Option(
        "--" + name.replace("_", "-"),
        help=help_text,
        show_default=_shown_default(field),
        min=_lower_bound(field),
        rich_help_panel=panel,
    )
    return Annotated[Optional[option_type or _option_type(field)], option]  # noqa: UP045


def _probe_option(name: str) -> Any:
    holders = _probe_fields(name)
    for backend, _ in holders:
        FIELD_OPTIONS[(SETTINGS_CLASSES[backend], name)] = "--" + name.replace("_", "-")
    field = SETTINGS_CLASSES[DEFAULT_BACKEND].model_fields.get(name, holders[0][1])
    option_type = ProbeBackend if name == "backend" else None
    return _option(name, field, probe_field_help(name), PROBE_PANEL, option_type)


def _scoring_option(name: str) -> Any:
    FIELD_OPTIONS[(ScoringConfig, name)] = "--" + name.replace("_", "-")
    return _option(
        name, ScoringConfig.model_fields[name], field_description(ScoringConfig, name), SCORING_PANEL
    )


ProbeArgOption = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option(
        "--probe-arg",
        metavar="KEY=VALUE",
        help="Any other probe setting, repeatable (e.g. --probe-arg chunk_tokens=1024): "
        + ", ".join(PROBE_ARG_FIELDS)
        + ". VALUE is JSON where it parses (1024, false, null, {...}), else text.",
        show_default=False,
        rich_help_panel=PROBE_PANEL,
    ),
]
ChatTemplateOption = Annotated[
    Optional[bool],  # noqa: UP045
    field_option(
        PromptTemplate,
        "chat",
        "--chat-template/--no-chat-template",
        show_default="no",
        rich_help_panel=SCORING_PANEL,
    ),
]

# The options of each group, by parameter name (the settings field each one sets, except chat_template and
# probe_arg).
PROBE_OPTIONS: dict[str, Any] = {
    **{name: _probe_option(name) for name in _PROBE_FLAGS},
    PROBE_ARG: ProbeArgOption,
}
BackendOption = PROBE_OPTIONS["backend"]  # the backends a command offers (tests read its Literal)
SCORING_OPTIONS: dict[str, Any] = {name: _scoring_option(name) for name in _SCORING_FIELDS}
SCORING_OPTIONS[CHAT_TEMPLATE] = ChatTemplateOption
# settings field -> the option that sets it, for error messages
_OPTION_OF_FIELD = {name: "--" + name.replace("_", "-") for name in (*_PROBE_FLAGS, *_SCORING_FIELDS)}
_OPTION_OF_FIELD |= {f: f"--probe-arg {f}" for f in PROBE_ARG_FIELDS if f not in _OPTION_OF_FIELD}
_OPTION_OF_FIELD["chat"] = "--chat-template"

ProbeOptionValues = dataclasses.make_dataclass(
    "ProbeOptionValues", [(name, Any, None) for name in PROBE_OPTIONS], frozen=True, slots=True
)
ProbeOptionValues.__doc__ = "The probe options as a command received them (None: not given)."
ScoringOptionValues = dataclasses.make_dataclass(
    "ScoringOptionValues", [(name, Any, None) for name in SCORING_OPTIONS], frozen=True, slots=True
)
ScoringOptionValues.__doc__ = "The scoring options as a command received them (None: not given)."


class OptionError(ValueError):
    """Options that do not make valid settings; the message names the options."""


@dataclasses.dataclass(frozen=True, slots=True)
class SettingsOptions:
    """Every probe and scoring option of one command line (see :func:`with_settings_options`)."""

    probe: Any  # ProbeOptionValues
    scoring: Any  # ScoringOptionValues

    def settings(self) -> tuple[ProbeSettings, ScoringConfig]:
        """The probe settings and scoring config (backend default: transformers); :class:`OptionError`."""
        return probe_and_scoring(self.probe, self.scoring)


Command = TypeVar("Command", bound=Callable[..., Any])
SETTINGS_PARAMETER = "settings_options"
SCORING_PARAMETER = "scoring_options"


def with_settings_options(command: Command) -> Command:
    """``command`` with every shared option in place of its parameter ``settings_options``.

    Typer reads the returned function's signature: the shared options stand where ``settings_options`` stood
    (each parameter keyword-only, as Typer passes them), and the function receives them as one
    :class:`SettingsOptions`.
    """

    def collect(given: dict[str, Any]) -> SettingsOptions:
        probe = ProbeOptionValues(**{name: given.pop(name) for name in PROBE_OPTIONS})
        return SettingsOptions(
            probe, ScoringOptionValues(**{name: given.pop(name) for name in SCORING_OPTIONS})
        )

    return _with_options(command, SETTINGS_PARAMETER, {**PROBE_OPTIONS, **SCORING_OPTIONS}, collect)


def with_scoring_options(command: Command) -> Command:
    """``command`` with the scoring options only (no probe options), in place of its parameter
    ``scoring_options``, which receives them as one ``ScoringOptionValues`` (for commands that run no probe,
    such as `rescore`)."""

    def collect(given: dict[str, Any]) -> Any:
        return ScoringOptionValues(**{name: given.pop(name) for name in SCORING_OPTIONS})

    return _with_options(command, SCORING_PARAMETER, SCORING_OPTIONS, collect)


def _with_options(
    command: Command, parameter_name: str, options: dict[str, Any], collect: Callable[[dict[str, Any]], Any]
) -> Command:
    """``command`` with ``options`` standing where its parameter ``parameter_name`` stood; ``collect``
    pops their values from the parsed keywords into the one object that parameter receives."""
    signature = inspect.signature(command, eval_str=True)
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        if parameter.name == parameter_name:
            parameters += [
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=declared)
                for name, declared in options.items()
            ]
        else:
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    if len(parameters) == len(signature.parameters):
        raise TypeError(f"{command.__name__} has no parameter {parameter_name}")

    @functools.wraps(command)
    def with_options(**given: Any) -> Any:
        collected = collect(given)
        return command(**given, **{parameter_name: collected})

    with_options.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_options.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return with_options  # type: ignore[return-value]


def probe_options(values: Any, *, default_backend: ProbeBackend | None) -> dict[str, Any]:
    """The probe settings the user gave, as a dict; ``backend`` is ``default_backend`` when not given.

    ``--probe-arg`` entries join the named options. The API key is ``--api-key``, else
    ``$MIG_PROBE__API_KEY`` when the backend's settings take a key (vllm-server), so a key exported for a
    server does not make other backends refuse their settings.
    """
    given = {name: getattr(values, name) for name in _PROBE_FLAGS if getattr(values, name) is not None}
    given |= parse_probe_args(getattr(values, PROBE_ARG) or ())
    if "backend" not in given and default_backend is not None:
        given["backend"] = default_backend
    takes_key = "api_key" in getattr(SETTINGS_CLASSES.get(given.get("backend", "")), "model_fields", {})
    if "api_key" not in given and takes_key and os.environ.get(API_KEY_ENV):
        given["api_key"] = os.environ[API_KEY_ENV]
    return given


def parse_probe_args(entries: Any) -> dict[str, Any]:
    """``KEY=VALUE`` entries as settings; :class:`OptionError` on a key no probe has (with a did-you-mean),
    one that has its own option, or one given twice."""
    parsed: dict[str, Any] = {}
    for entry in entries:
        key, equals, text = entry.partition("=")
        key = key.strip().replace("-", "_")
        if not equals or not key:
            raise OptionError(f"--probe-arg {entry}: write KEY=VALUE, e.g. chunk_tokens=1024")
        if key in _PROBE_FLAGS:
            raise OptionError(f"--probe-arg {key}: use its own option, {_OPTION_OF_FIELD[key]}")
        if key not in PROBE_ARG_FIELDS:
            close = difflib.get_close_matches(key, PROBE_ARG_FIELDS, n=1)
            hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(PROBE_ARG_FIELDS)}"
            raise OptionError(f"--probe-arg {key}: no probe setting of that name; {hint}")
        if key in parsed:
            raise OptionError(f"--probe-arg {key}: given twice")
        parsed[key] = _probe_arg_value(key, text)
    return parsed


def _probe_arg_value(key: str, text: str) -> Any:
    """A text field keeps the text; any other value is JSON where it parses (settings validate it)."""
    if all(_option_type(field) is str for _, field in _probe_fields(key)) and text != "null":
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def scoring_options(values: Any) -> dict[str, Any]:
    """The scoring settings the user gave, as a (possibly nested) ScoringConfig dict."""
    given: dict[str, Any] = {
        name: getattr(values, name) for name in _SCORING_FIELDS if getattr(values, name) is not None
    }
    if getattr(values, CHAT_TEMPLATE) is not None:
        given["prompt"] = {"chat": getattr(values, CHAT_TEMPLATE)}
    return given


def validate_probe_settings(values: dict[str, Any]) -> ProbeSettings:
    """The probe settings for ``values`` (a settings dict); raises :class:`OptionError` naming the options."""
    try:
        return parse_probe_settings(values)
    except ValidationError as error:
        raise OptionError(describe_validation_error(error)) from error


def scoring_changes(base: ScoringConfig, values: Any) -> ScoringConfig:
    """``base`` with the scoring options the user gave (``values``) in place; :class:`OptionError`."""
    given, merged = scoring_options(values), base.model_dump(mode="json")
    for name, value in given.items():
        merged[name] = merged[name] | value if isinstance(value, dict) else value
    return validate_scoring_config(merged)


def validate_scoring_config(values: dict[str, Any]) -> ScoringConfig:
    """The scoring config for ``values``; raises :class:`OptionError` naming the options."""
    try:
        return ScoringConfig.model_validate(values)
    except ValidationError as error:
        raise OptionError(describe_validation_error(error)) from error


def probe_and_scoring(probe: Any, scoring: Any) -> tuple[ProbeSettings, ScoringConfig]:
    """The probe settings and scoring config a command's options describe (backend default: transformers)."""
    return (
        validate_probe_settings(probe_options(probe, default_backend=DEFAULT_BACKEND)),
        validate_scoring_config(scoring_options(scoring)),
    )


def describe_validation_error(error: ValidationError, *, env_prefix: str | None = None) -> str:
    """One line per problem, each naming the option (``--mode``) rather than the settings field.

    With ``env_prefix`` (settings read from the environment too), each problem also names its variable,
    e.g. ``--mode or MIG_PROBE__MODE``.
    """
    lines = []
    for issue in error.errors():
        # a discriminated union puts the backend tag in the location: it is not a field
        path = [str(part) for part in issue["loc"] if part not in BACKENDS]
        fields = [part for part in path if part in _OPTION_OF_FIELD]
        names = [_OPTION_OF_FIELD[fields[-1]]] if fields else []
        if env_prefix is not None and path:
            names.append(env_prefix + "__".join(path).upper())
        elif not names and path:
            names.append(".".join(path))
        message = "does not apply to this backend" if issue["type"] == "extra_forbidden" else issue["msg"]
        lines.append(f"{' or '.join(names)}: {message}" if names else message)
    return "; ".join(lines)
