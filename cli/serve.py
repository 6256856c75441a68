"""`serve`: the reward service under uvicorn.

Settings come from ``MIG_*`` environment variables (docs/service.md); the options given here override them,
field by field (``--mode naive`` keeps ``MIG_PROBE__MODEL``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mig_annotator.cli.console import fail
from mig_annotator.cli.options import (
    AggregationOption,
    APIKeyOption,
    BackendOption,
    BaseURLOption,
    ChatTemplateOption,
    ContextLimitOption,
    DeviceOption,
    DTypeOption,
    MaxBatchTokensOption,
    MaxStepCharsOption,
    MaxStepsOption,
    MinStepCharsOption,
    ModelOption,
    ModeOption,
    ProbeOptionValues,
    ScoringOptionValues,
    SegmenterOption,
    SFTStatisticOption,
    SFTThresholdOption,
    StepRegexOption,
    ThreadsOption,
    VLLMPathOption,
    WatermarkOption,
    describe_validation_error,
    probe_options,
    scoring_options,
)

ENV_PREFIX = "MIG_"


def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address ($MIG_HOST).", show_default="127.0.0.1")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port ($MIG_PORT).", show_default="8000")] = None,
    backend: BackendOption = None,
    model: ModelOption = None,
    mode: ModeOption = None,
    dtype: DTypeOption = None,
    device: DeviceOption = None,
    threads: ThreadsOption = None,
    max_batch_tokens: MaxBatchTokensOption = None,
    vllm_path: VLLMPathOption = None,
    base_url: BaseURLOption = None,
    api_key: APIKeyOption = None,
    segmenter: SegmenterOption = None,
    step_regex: StepRegexOption = None,
    min_step_chars: MinStepCharsOption = None,
    max_step_chars: MaxStepCharsOption = None,
    max_steps: MaxStepsOption = None,
    aggregation: AggregationOption = None,
    watermark: WatermarkOption = None,
    chat_template: ChatTemplateOption = None,
    sft_threshold: SFTThresholdOption = None,
    sft_statistic: SFTStatisticOption = None,
    context_limit: ContextLimitOption = None,
) -> None:
    """Run the reward service (HTTP API for trainers).

    Every setting has an MIG_* environment variable (MIG_PROBE__BACKEND, MIG_SCORING__WATERMARK,
    MIG_API_KEYS, MIG_AUDIT_DIR, ...): see docs/service.md for the endpoints, settings, errors, auth, limits
    and the audit log. The probe and scoring options here override their variables; scoring options are
    the defaults a request may override.
    """
    from pydantic import ValidationError

    from mig_annotator.service.server import serve as run_server
    from mig_annotator.service.settings import ServiceSettings

    overrides: dict[str, Any] = {
        name: value for name, value in (("host", host), ("port", port)) if value is not None
    }
    probe = probe_options(
        ProbeOptionValues(
            backend=backend,
            model=model,
            mode=mode,
            dtype=dtype,
            device=device,
            threads=threads,
            max_batch_tokens=max_batch_tokens,
            vllm_path=vllm_path,
            base_url=base_url,
            api_key=api_key,
        ),
        default_backend=None,  # the environment's, else the settings' default
    )
    scoring = scoring_options(
        ScoringOptionValues(
            segmenter=segmenter,
            step_regex=step_regex,
            min_step_chars=min_step_chars,
            max_step_chars=max_step_chars,
            max_steps=max_steps,
            aggregation=aggregation,
            watermark=watermark,
            chat_template=chat_template,
            sft_threshold=sft_threshold,
            sft_statistic=sft_statistic,
            context_limit=context_limit,
        )
    )
    if probe:
        overrides["probe"] = probe
    if scoring:
        overrides["scoring"] = scoring
    try:
        settings = ServiceSettings(**overrides)  # the environment, with these merged over it field by field
    except ValidationError as error:
        fail(describe_validation_error(error, env_prefix=ENV_PREFIX))
    run_server(settings)


def register(app: typer.Typer) -> None:
    """Add `serve`."""
    app.command("serve")(serve)
