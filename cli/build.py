"""`build`: annotate rollout files into a trainer-ready Parquet dataset (resumable).

Thin: parse options into settings, call the builder, print. Heavy imports (torch, polars, duckdb) happen
on use.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from mig_annotator.builder.columns import PresetName
from mig_annotator.cli.console import console, fail
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
    OptionError,
    ProbeOptionValues,
    ScoringOptionValues,
    SegmenterOption,
    SFTStatisticOption,
    SFTThresholdOption,
    StepRegexOption,
    ThreadsOption,
    VLLMPathOption,
    WatermarkOption,
    probe_and_scoring,
)
from mig_annotator.cli.render import step_table

if TYPE_CHECKING:
    from mig_annotator.builder.settings import BuildSettings
    from mig_annotator.mig.probe.base import Probe

INTERRUPTED = 130


def build(
    inputs: Annotated[list[str], typer.Argument(help="JSONL, JSONL.gz or Parquet files, folders or globs.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The output folder.")],
    preset: Annotated[PresetName, typer.Option(help="Column layout. Column flags override it.")] = "default",
    id_col: Annotated[str | None, typer.Option(help="The id column (default: id, else row-<n>).")] = None,
    question_col: Annotated[str | None, typer.Option(help="The question (text or chat messages).")] = None,
    completion_col: Annotated[str | None, typer.Option(help="The raw completion column.")] = None,
    steps_col: Annotated[
        str | None, typer.Option(help="A column of pre-segmented steps (list of text).")
    ] = None,
    answer_col: Annotated[
        str | None, typer.Option(help="The reference answer (dots reach into structs).")
    ] = None,
    group_col: Annotated[
        str | None,
        typer.Option(help="The GRPO group of a row (e.g. question_id, verl's uid); optional, still copied."),
    ] = None,
    keep_cols: Annotated[
        str | None,
        typer.Option(help="Comma-separated input columns to copy (default: all unmapped; 'none')."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N input rows.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Check the mapping and print three annotated rows.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Discard a different build found in --out.")] = False,
    fail_on_reject: Annotated[
        bool, typer.Option(help="Stop at the first row that cannot be annotated.")
    ] = False,
    policy_tokenizer: Annotated[
        Path | None,
        typer.Option(
            help="Local tokenizer folder: adds token_rewards and the cot, answer and completion masks."
        ),
    ] = None,
    shard_rows: Annotated[int, typer.Option(help="Input rows per output Parquet file.")] = 16384,
    window_rows: Annotated[int, typer.Option(help="Rows sorted together by length for the probe.")] = 1024,
    group_rows: Annotated[int, typer.Option(help="Traces per probe call and per checkpoint.")] = 64,
    row_group_rows: Annotated[int, typer.Option(help="Rows per Parquet row group.")] = 2048,
    progress: Annotated[bool, typer.Option(help="Draw a progress bar.")] = True,
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
    engine: Annotated[
        str, typer.Option(help="local (this process) | ray (Ray Data, one probe per actor; docs/ray.md)")
    ] = "local",
    num_probes: Annotated[int, typer.Option(help="--engine ray: probe actors (one probe each).")] = 1,
    ray_address: Annotated[
        str | None,
        typer.Option(help="--engine ray: a running cluster (auto, ray://host:10001); default: a local Ray."),
    ] = None,
    actor_resources: Annotated[
        str,
        typer.Option(help="--engine ray: each probe actor's resources: num_gpus=1, num_cpus=0.5 or JSON."),
    ] = "num_cpus=1",
) -> None:
    """Annotate rollout files into a trainer-ready Parquet dataset (resumable)."""
    from pydantic import ValidationError

    from mig_annotator.builder.columns import resolve_mapping
    from mig_annotator.builder.errors import BuildError
    from mig_annotator.builder.pipeline import claim_output, finished_manifest, run_build
    from mig_annotator.builder.plan import plan_build
    from mig_annotator.builder.settings import BuildSettings
    from mig_annotator.mig.model_store import ModelStoreError
    from mig_annotator.mig.probe.base import ProbeError
    from mig_annotator.mig.probe.registry import expected_identity, open_probe

    try:
        if engine not in ("local", "ray"):
            raise BuildError(f"--engine {engine}: choose local or ray")
        ray_options = _ray_options(engine, num_probes, ray_address, actor_resources)
        probe_settings, scoring = probe_and_scoring(
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
            ),
        )
        settings = BuildSettings(
            inputs=inputs,
            out=out,
            preset=preset,
            columns=resolve_mapping(
                preset,
                id_col=id_col,
                question_col=question_col,
                completion_col=completion_col,
                steps_col=steps_col,
                answer_col=answer_col,
                group_col=group_col,
            ),
            keep_columns=_keep_list(keep_cols),
            limit=limit,
            scoring=scoring,
            policy_tokenizer=policy_tokenizer,
            shard_rows=shard_rows,
            window_rows=window_rows,
            group_rows=group_rows,
            row_group_rows=row_group_rows,
            fail_on_reject=fail_on_reject,
            overwrite=overwrite,
        )
        if dry_run:
            _dry_run(settings, open_probe(probe_settings))
            return
        probe = None
        identity = expected_identity(probe_settings)  # the weights' digest, without loading them
        if identity is None:  # vllm-server: the served model comes from the server
            probe = open_probe(probe_settings)
            identity = probe.identity()
        plan = plan_build(settings, identity)
        claim_output(plan)  # refuse a conflicting folder before loading the model
        finished = None if overwrite else finished_manifest(plan)
        if finished is None and probe is None and ray_options is None:  # Ray actors open their own
            probe = open_probe(probe_settings)
    except (OptionError, ValidationError, BuildError, ModelStoreError, ProbeError, ValueError) as error:
        fail(str(error))
    from mig_annotator.builder.progress import RichBuildProgress, summary

    if finished is not None:
        console.print(f"already complete: {out}")
        console.print(summary(finished))
        return
    observer = RichBuildProgress(console if progress else Console(quiet=True))
    try:
        if ray_options is not None:
            from mig_annotator.builder.ray_engine import run_ray_build

            result = run_ray_build(plan, functools.partial(open_probe, probe_settings), ray_options, observer)
        else:
            assert probe is not None
            result = run_build(plan, probe, observer)
    except KeyboardInterrupt:
        observer.close()
        fail("interrupted; committed work is kept: run the same command again to resume", INTERRUPTED)
    except (BuildError, ProbeError) as error:
        observer.close()
        fail(f"{error}\ncommitted work is kept: fix the cause and run the same command again to resume", 1)
    if not progress:
        console.print(summary(result.manifest))
    console.print(f"wrote {out} ({result.manifest.counts.annotated if result.manifest.counts else 0:,} rows)")


def _ray_options(engine: str, num_probes: int, address: str | None, resources: str) -> Any:
    """The Ray engine's options (None for --engine local)."""
    if engine != "ray":
        return None
    from mig_annotator.builder.ray_engine import RayOptions, parse_actor_resources

    actor = parse_actor_resources(resources)
    return RayOptions(address=address, num_probes=num_probes, actor_resources=actor)


def _keep_list(keep_cols: str | None) -> list[str] | None:
    if keep_cols is None:
        return None
    if keep_cols.strip().lower() == "none":
        return []
    return [name.strip() for name in keep_cols.split(",") if name.strip()]


def _dry_run(settings: BuildSettings, probe: Probe) -> None:
    from mig_annotator.builder.dry_run import dry_run

    result = dry_run(settings, probe)
    mapping = settings.columns.mapped()
    console.print(
        f"inputs: {len(result.files)} file(s); columns: "
        + ", ".join(f"{k} <- {v}" for k, v in mapping.items())
    )
    if not result.id_present:
        console.print("ids: generated (row-<n>): the inputs have no id column")
    console.print(f"kept input columns: {', '.join(result.kept_columns) or '(none)'}")
    for row in result.rows:
        console.print(f"[bold]{row.trace_id}[/] ({row.source_file} row {row.source_row})")
        console.print(f"question: {row.question[:200]!r}  reference answer: {row.reference_answer!r}")
        console.print(step_table(row))
    for reject in result.rejects:
        console.print(
            f"[yellow]reject[/] {reject['source_file']} row {reject['source_row']}: "
            f"{reject['stage']}: {reject['reason']}"
        )
    console.print(
        f"dry run: {len(result.rows)} annotated, {len(result.rejects)} rejected "
        f"of {result.rows_read} rows read"
    )


def register(app: typer.Typer) -> None:
    """Add `build`."""
    app.command("build")(build)
