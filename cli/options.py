"""The probe and scoring options, declared once and shared by `score`, `serve` and `build`.

Each option is an ``Annotated`` alias holding its one ``typer.Option``; a command declares a parameter of that
type with the default ``None``, so ``None`` always means "not given". :func:`probe_options` and
:func:`scoring_options` turn the given values into the dicts the settings models validate (nothing the user
did not give, so a model's own defaults, or the service's ``MIG_*`` environment, decide the rest), and
:func:`probe_and_scoring` validates both. :func:`validate_probe_settings` is the one place a probe settings
dict becomes a settings object.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Any, get_args

import typer
from pydantic import ValidationError

from mig_annotator.mig.probe.settings import ProbeSettings, parse_probe_settings
from mig_annotator.mig.probe.transformers_probe import ProbeDType, ProbeMode
from mig_annotator.mig.probe.vllm_common import PathChoice
from mig_annotator.schemas import ScoringConfig
from mig_annotator.schemas.config import (
    Aggregation,
    ContextLimitPolicy,
    SegmenterName,
    SftStatistic,
    WatermarkKind,
)
from mig_annotator.schemas.probe import ProbeBackend

PROBE_PANEL = "Probe"
SCORING_PANEL = "Scoring"
API_KEY_ENV = "MIG_PROBE__API_KEY"
DEFAULT_BACKEND: ProbeBackend = "transformers"


def _scoring_default(field: str) -> str:
    return str(ScoringConfig.model_fields[field].default)


# ------------------------------------------------------------------------------------------- probe options

BackendOption = Annotated[
    ProbeBackend | None,
    typer.Option(
        "--backend",
        help="What runs the probe: transformers (embedded, PyTorch), vllm-server (a vLLM server over HTTP) "
        "or vllm (vllm.LLM in this process). See docs/vllm.md.",
        show_default=DEFAULT_BACKEND,
        rich_help_panel=PROBE_PANEL,
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="A local Hugging Face model folder; vllm-server: the folder of the served model's tokenizer.",
        show_default="SmolLM2-135M-Instruct, prepared by `model prepare`",
        rich_help_panel=PROBE_PANEL,
    ),
]
ModeOption = Annotated[
    ProbeMode | None,
    typer.Option(
        "--mode",
        help="transformers: packed (one pass over the trace, then the answer probes over its KV cache), "
        "packed-single (one packed sequence per trace) or naive (one forward pass per prefix).",
        show_default="packed",
        rich_help_panel=PROBE_PANEL,
    ),
]
DTypeOption = Annotated[
    ProbeDType | None,
    typer.Option(
        "--dtype",
        help="transformers, vllm: weight dtype.",
        show_default="float32",
        rich_help_panel=PROBE_PANEL,
    ),
]
DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="transformers: auto | cpu | cuda | cuda:N.",
        show_default="auto",
        rich_help_panel=PROBE_PANEL,
    ),
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="transformers: CPU threads for torch.",
        show_default="torch's default",
        rich_help_panel=PROBE_PANEL,
    ),
]
MaxBatchTokensOption = Annotated[
    int | None,
    typer.Option(
        "--max-batch-tokens",
        help="transformers: padded tokens per forward pass.",
        show_default="4096",
        rich_help_panel=PROBE_PANEL,
    ),
]
VLLMPathOption = Annotated[
    PathChoice | None,
    typer.Option(
        "--vllm-path",
        help="vllm, vllm-server: the scoring path; auto takes the fastest one the server supports.",
        show_default="auto",
        rich_help_panel=PROBE_PANEL,
    ),
]
BaseURLOption = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="vllm-server: the server's URL.",
        show_default="http://127.0.0.1:8000",
        rich_help_panel=PROBE_PANEL,
    ),
]
APIKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help=f"vllm-server: the key the server was started with (its --api-key); default: ${API_KEY_ENV}. "
        "Prefer the variable: a command line is visible to other users.",
        show_default=False,
        rich_help_panel=PROBE_PANEL,
    ),
]

# ----------------------------------------------------------------------------------------- scoring options

SegmenterOption = Annotated[
    SegmenterName | None,
    typer.Option(
        "--segmenter",
        help="How a raw completion is split into steps.",
        show_default=_scoring_default("segmenter"),
        rich_help_panel=SCORING_PANEL,
    ),
]
StepRegexOption = Annotated[
    str | None,
    typer.Option(
        "--step-regex", help="The step pattern for --segmenter regex.", rich_help_panel=SCORING_PANEL
    ),
]
MinStepCharsOption = Annotated[
    int | None,
    typer.Option(
        "--min-step-chars",
        min=0,
        help="Prose splitting: pieces cut from an over-long line are packed into steps of at least this many "
        "characters (whole lines are never merged).",
        show_default=_scoring_default("min_step_chars"),
        rich_help_panel=SCORING_PANEL,
    ),
]
MaxStepCharsOption = Annotated[
    int | None,
    typer.Option(
        "--max-step-chars",
        min=1,
        help="A line longer than this is split at sentence ends into steps of at most this many characters.",
        show_default=_scoring_default("max_step_chars"),
        rich_help_panel=SCORING_PANEL,
    ),
]
MaxStepsOption = Annotated[
    int | None,
    typer.Option(
        "--max-steps",
        min=1,
        help="At most this many steps per trace: adjacent steps are merged (shortest merged span first).",
        show_default=_scoring_default("max_steps"),
        rich_help_panel=SCORING_PANEL,
    ),
]
AggregationOption = Annotated[
    Aggregation | None,
    typer.Option(
        "--aggregation",
        help="v_k: mean or sum of the answer tokens' log-probs.",
        show_default=_scoring_default("aggregation"),
        rich_help_panel=SCORING_PANEL,
    ),
]
WatermarkOption = Annotated[
    WatermarkKind | None,
    typer.Option(
        "--watermark",
        help="level: reward v_k over the best v so far; gain: mig_k over the best gain so far.",
        show_default=_scoring_default("watermark"),
        rich_help_panel=SCORING_PANEL,
    ),
]
ChatTemplateOption = Annotated[
    bool | None,
    typer.Option(
        "--chat-template/--no-chat-template",
        help="Wrap the question in the probe model's chat template.",
        show_default="no",
        rich_help_panel=SCORING_PANEL,
    ),
]
SFTThresholdOption = Annotated[
    float | None,
    typer.Option(
        "--sft-threshold",
        help="SFT gate: a correct outcome and the gate statistic (--sft-statistic) over this threshold.",
        show_default=_scoring_default("sft_threshold"),
        rich_help_panel=SCORING_PANEL,
    ),
]
SFTStatisticOption = Annotated[
    SftStatistic | None,
    typer.Option(
        "--sft-statistic",
        help="The SFT gate's statistic: max (max_k r_k, as the method states) or sum (sum_k r_k).",
        show_default=_scoring_default("sft_statistic"),
        rich_help_panel=SCORING_PANEL,
    ),
]
ContextLimitOption = Annotated[
    ContextLimitPolicy | None,
    typer.Option(
        "--context-limit",
        help="A trace over the probe's context: error, truncate_steps (score the leading steps that fit), or "
        "window (score every step on the most recent tokens that fit; approximate).",
        show_default=_scoring_default("context_limit"),
        rich_help_panel=SCORING_PANEL,
    ),
]

# The options of each group, by parameter name (the settings field each one sets, except chat_template).
PROBE_OPTIONS: dict[str, Any] = {
    "backend": BackendOption,
    "model": ModelOption,
    "mode": ModeOption,
    "dtype": DTypeOption,
    "device": DeviceOption,
    "threads": ThreadsOption,
    "max_batch_tokens": MaxBatchTokensOption,
    "vllm_path": VLLMPathOption,
    "base_url": BaseURLOption,
    "api_key": APIKeyOption,
}
SCORING_OPTIONS: dict[str, Any] = {
    "segmenter": SegmenterOption,
    "step_regex": StepRegexOption,
    "min_step_chars": MinStepCharsOption,
    "max_step_chars": MaxStepCharsOption,
    "max_steps": MaxStepsOption,
    "aggregation": AggregationOption,
    "watermark": WatermarkOption,
    "chat_template": ChatTemplateOption,
    "sft_threshold": SFTThresholdOption,
    "sft_statistic": SFTStatisticOption,
    "context_limit": ContextLimitOption,
}
# settings field -> the option that sets it, for error messages
_OPTION_OF_FIELD = {name: "--" + name.replace("_", "-") for name in (*PROBE_OPTIONS, *SCORING_OPTIONS)}
_OPTION_OF_FIELD["chat"] = "--chat-template"
_BACKENDS = frozenset(get_args(ProbeBackend))


class OptionError(ValueError):
    """Options that do not make valid settings; the message names the options."""


@dataclass(frozen=True, slots=True)
class ProbeOptionValues:
    """The probe options as a command received them (None: not given)."""

    backend: ProbeBackend | None = None
    model: str | None = None
    mode: ProbeMode | None = None
    dtype: ProbeDType | None = None
    device: str | None = None
    threads: int | None = None
    max_batch_tokens: int | None = None
    vllm_path: PathChoice | None = None
    base_url: str | None = None
    api_key: str | None = None


@dataclass(frozen=True, slots=True)
class ScoringOptionValues:
    """The scoring options as a command received them (None: not given)."""

    segmenter: SegmenterName | None = None
    step_regex: str | None = None
    min_step_chars: int | None = None
    max_step_chars: int | None = None
    max_steps: int | None = None
    aggregation: Aggregation | None = None
    watermark: WatermarkKind | None = None
    chat_template: bool | None = None
    sft_threshold: float | None = None
    sft_statistic: SftStatistic | None = None
    context_limit: ContextLimitPolicy | None = None


def probe_options(values: ProbeOptionValues, *, default_backend: ProbeBackend | None) -> dict[str, Any]:
    """The probe settings the user gave, as a dict; ``backend`` is ``default_backend`` when not given.

    The API key is ``--api-key``, else ``$MIG_PROBE__API_KEY`` when the backend is vllm-server (the only
    one that takes a key), so a key exported for a server does not make other backends refuse their settings.
    """
    given = {name: getattr(values, name) for name in PROBE_OPTIONS if getattr(values, name) is not None}
    if "backend" not in given and default_backend is not None:
        given["backend"] = default_backend
    if "api_key" not in given and given.get("backend") == "vllm-server" and os.environ.get(API_KEY_ENV):
        given["api_key"] = os.environ[API_KEY_ENV]
    return given


def scoring_options(values: ScoringOptionValues) -> dict[str, Any]:
    """The scoring settings the user gave, as a (possibly nested) ScoringConfig dict."""
    given: dict[str, Any] = {
        name: getattr(values, name)
        for name in SCORING_OPTIONS
        if name != "chat_template" and getattr(values, name) is not None
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


def validate_scoring_config(values: dict[str, Any]) -> ScoringConfig:
    """The scoring config for ``values``; raises :class:`OptionError` naming the options."""
    try:
        return ScoringConfig.model_validate(values)
    except ValidationError as error:
        raise OptionError(describe_validation_error(error)) from error


def probe_and_scoring(
    probe: ProbeOptionValues, scoring: ScoringOptionValues
) -> tuple[ProbeSettings, ScoringConfig]:
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
