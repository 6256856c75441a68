"""The probe and scoring options, derived once from the settings models and shared by `score`, `serve` and
`build`.

Each named option takes its name, type, default and bounds from its settings field (the probe settings
classes of :mod:`engine.probe.settings`, :class:`ScoringConfig`); only its help text is written here. Every
other probe field is reachable through ``--probe-arg KEY=VALUE``. A command gets all of them by
:func:`with_settings_options`: its parameter ``settings_options: SettingsOptions`` becomes these options on
the command line and arrives as one object. ``None`` always means "not given": :func:`probe_options` and
:func:`scoring_options` turn the given values into the dicts the settings models validate (nothing the user
did not give, so a model's own defaults, or the service's ``MIG_*`` environment, decide the rest), and
:func:`probe_and_scoring` validates both. :func:`validate_probe_settings` is the one place a probe settings
dict becomes a settings object.
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
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo

from mig_annotator.engine.probe.settings import (
    API_KEY_ENV,
    DEFAULT_BACKEND,
    RENAMED_TRANSFORMERS_FIELDS,
    SETTINGS_CLASSES,
    ProbeSettings,
    TransformersProbeSettings,
    parse_probe_settings,
)
from mig_annotator.schemas import ScoringConfig
from mig_annotator.schemas.probe import ProbeBackend

PROBE_PANEL = "Probe"
SCORING_PANEL = "Scoring"
PROBE_ARG = "probe_arg"
_BACKENDS = frozenset(get_args(ProbeBackend))


@dataclasses.dataclass(frozen=True, slots=True)
class _Flag:
    """What a named option adds to its settings field: the help text, and where the field says too little,
    the default shown and the type."""

    help: str
    show_default: str | bool | None = None  # None: the field's default (when it has one)
    type: Any = None  # None: the field's own type


# The named probe options, by the settings field each one sets. The backends holding a field prefix its help
# (``transformers: ...``) unless every real backend has it.
_PROBE_FLAGS: dict[str, _Flag] = {
    "backend": _Flag(
        "What runs the probe: transformers (embedded, PyTorch), vllm-server (a vLLM server over HTTP) "
        "or vllm (vllm.LLM in this process). See docs/vllm.md.",
        show_default=DEFAULT_BACKEND,
        type=ProbeBackend,
    ),
    "model": _Flag(
        "A local Hugging Face model folder; vllm-server: the folder of the served model's tokenizer.",
        show_default="SmolLM2-135M-Instruct, prepared by `model prepare`",
    ),
    "mode": _Flag(
        "packed (one pass over the trace, then the answer probes over its KV cache), packed-single (one "
        "packed sequence per trace) or naive (one forward pass per prefix)."
    ),
    "dtype": _Flag("weight dtype."),
    "device": _Flag("auto | cpu | cuda | cuda:N."),
    "threads": _Flag("CPU threads for torch.", show_default="torch's default"),
    "forward_batch_tokens": _Flag("padded tokens per forward pass (formerly --max-batch-tokens)."),
    "vllm_path": _Flag("the scoring path; auto takes the fastest one the server supports."),
    "base_url": _Flag("the server's URL."),
    "api_key": _Flag(
        f"the key the server was started with (its --api-key); default: ${API_KEY_ENV}. "
        "Prefer the variable: a command line is visible to other users.",
        show_default=False,
    ),
}
# The named scoring options, by ScoringConfig field; chat_template (the prompt's chat flag) is declared below.
_SCORING_FLAGS: dict[str, _Flag | None] = {
    "segmenter": _Flag("How a raw completion is split into steps."),
    "step_regex": _Flag("The step pattern for --segmenter regex."),
    "min_step_chars": _Flag(
        "Prose splitting: pieces cut from an over-long line are packed into steps of at least this many "
        "characters (whole lines are never merged)."
    ),
    "max_step_chars": _Flag(
        "A line longer than this is split at sentence ends into steps of at most this many characters."
    ),
    "max_steps": _Flag(
        "At most this many steps per trace: adjacent steps are merged (shortest merged span first)."
    ),
    "aggregation": _Flag("v_k: mean or sum of the answer tokens' log-probs."),
    "watermark": _Flag("level: reward v_k over the best v so far; gain: mig_k over the best gain so far."),
    "chat_template": None,
    "sft_threshold": _Flag(
        "SFT gate: a correct outcome and the gate statistic (--sft-statistic) over this threshold."
    ),
    "sft_statistic": _Flag(
        "The SFT gate's statistic: max (max_k r_k, as the method states) or sum (sum_k r_k)."
    ),
    "context_limit": _Flag(
        "A trace over the probe's context: error, truncate_steps (score the leading steps that fit), or "
        "window (score every step on the most recent tokens that fit; approximate)."
    ),
}
_REAL_BACKENDS = tuple(name for name in SETTINGS_CLASSES if name != "fake")


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


def _option(name: str, flag: _Flag, field: FieldInfo, panel: str, backends: tuple[str, ...] = ()) -> Any:
    """The ``Annotated`` alias of one named option, from its settings field and its help."""
    shown = flag.show_default
    if shown is None and field.default is not None and not field.is_required():
        shown = str(field.default)
    prefix = f"{', '.join(sorted(backends))}: " if backends and set(_REAL_BACKENDS) - set(backends) else ""
    option = typer.Option(
        "--" + name.replace("_", "-"),
        help=prefix + flag.help,
        show_default=shown if shown is not None else True,
        min=_lower_bound(field),
        rich_help_panel=panel,
    )
    return Annotated[Optional[flag.type or _option_type(field)], option]  # noqa: UP045


def _probe_option(name: str, flag: _Flag) -> Any:
    holders = _probe_fields(name)
    backends = tuple(backend for backend, _ in holders if backend in _REAL_BACKENDS)
    return _option(name, flag, holders[0][1], PROBE_PANEL, () if name == "backend" else backends)


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
    typer.Option(
        "--chat-template/--no-chat-template",
        help="Wrap the question in the probe model's chat template.",
        show_default="no",
        rich_help_panel=SCORING_PANEL,
    ),
]

# Renamed probe options: old field -> its hidden flag, still accepted; the settings move the old field to the
# new one with a deprecation note (mig.probe.settings.RENAMED_TRANSFORMERS_FIELDS).
_RENAMED_PROBE_FLAGS: dict[str, Any] = {
    old: Annotated[
        Optional[_option_type(TransformersProbeSettings.model_fields[new])],  # noqa: UP045
        typer.Option("--" + old.replace("_", "-"), hidden=True, rich_help_panel=PROBE_PANEL),
    ]
    for old, (new, _) in RENAMED_TRANSFORMERS_FIELDS.items()
}
# The options of each group, by parameter name (the settings field each one sets, except chat_template and
# probe_arg).
PROBE_OPTIONS: dict[str, Any] = {
    **{name: _probe_option(name, flag) for name, flag in _PROBE_FLAGS.items()},
    **_RENAMED_PROBE_FLAGS,
    PROBE_ARG: ProbeArgOption,
}
BackendOption = PROBE_OPTIONS["backend"]  # the backends a command offers (tests read its Literal)
SCORING_OPTIONS: dict[str, Any] = {
    name: ChatTemplateOption
    if flag is None
    else _option(name, flag, ScoringConfig.model_fields[name], SCORING_PANEL)
    for name, flag in _SCORING_FLAGS.items()
}
_SCORING_FIELDS = tuple(name for name, flag in _SCORING_FLAGS.items() if flag is not None)
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
    ``$MIG_PROBE__API_KEY`` when the backend is vllm-server (the only one that takes a key), so a key
    exported for a server does not make other backends refuse their settings.
    """
    named = (*_PROBE_FLAGS, *_RENAMED_PROBE_FLAGS)
    given = {name: getattr(values, name) for name in named if getattr(values, name) is not None}
    given |= parse_probe_args(getattr(values, PROBE_ARG) or ())
    if "backend" not in given and default_backend is not None:
        given["backend"] = default_backend
    if "api_key" not in given and given.get("backend") == "vllm-server" and os.environ.get(API_KEY_ENV):
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
        if key in RENAMED_TRANSFORMERS_FIELDS:
            new = RENAMED_TRANSFORMERS_FIELDS[key][0]
            raise OptionError(f"--probe-arg {key}: now {new}; use its own option, {_OPTION_OF_FIELD[new]}")
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
    if values.chat_template is not None:
        given["prompt"] = {"chat": values.chat_template}
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
        path = [str(part) for part in issue["loc"] if part not in _BACKENDS]
        fields = [part for part in path if part in _OPTION_OF_FIELD]
        names = [_OPTION_OF_FIELD[fields[-1]]] if fields else []
        if env_prefix is not None and path:
            names.append(env_prefix + "__".join(path).upper())
        elif not names and path:
            names.append(".".join(path))
        message = "does not apply to this backend" if issue["type"] == "extra_forbidden" else issue["msg"]
        lines.append(f"{' or '.join(names)}: {message}" if names else message)
    return "; ".join(lines)
