"""`build`: annotate rollout files into a trainer-ready Parquet dataset (resumable).

Thin: parse options into settings, call the builder, print. Heavy imports (torch, polars, duckdb) happen
on use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from mig_annotator.builder.columns import ColumnMapping, DuplicatePolicy, PresetName
from mig_annotator.builder.settings import DEFAULT_MAX_ROW_BYTES, BuildSettings
from mig_annotator.cli.console import console, errors, fail
from mig_annotator.cli.options import (
    OptionError,
    SettingsOptions,
    field_argument,
    field_option,
    with_settings_options,
)
from mig_annotator.cli.render import step_table

if TYPE_CHECKING:
    from mig_annotator.builder.entry import PreparedBuild

INTERRUPTED = 130


InputsArgument = Annotated[list[str], field_argument(BuildSettings, "inputs")]
OutOption = Annotated[Path, field_option(BuildSettings, "out", "--out", "-o")]
PresetOption = Annotated[PresetName, field_option(BuildSettings, "preset")]
IdColOption = Annotated[str | None, field_option(ColumnMapping, "id", "--id-col")]
QuestionColOption = Annotated[str | None, field_option(ColumnMapping, "question", "--question-col")]
CompletionColOption = Annotated[str | None, field_option(ColumnMapping, "completion", "--completion-col")]
StepsColOption = Annotated[str | None, field_option(ColumnMapping, "steps", "--steps-col")]
AnswerColOption = Annotated[str | None, field_option(ColumnMapping, "answer", "--answer-col")]
GroupColOption = Annotated[str | None, field_option(ColumnMapping, "group_id", "--group-col")]
ImagesColOption = Annotated[str | None, field_option(ColumnMapping, "images", "--images-col")]
KeepColsOption = Annotated[str | None, field_option(BuildSettings, "keep_columns", "--keep-cols")]
LimitOption = Annotated[int | None, field_option(BuildSettings, "limit")]
DryRunOption = Annotated[bool, typer.Option(help="Check the mapping and print three annotated rows.")]
OverwriteOption = Annotated[bool, field_option(BuildSettings, "overwrite")]
FailOnRejectOption = Annotated[bool, field_option(BuildSettings, "fail_on_reject")]
MaxRowBytesOption = Annotated[int, field_option(BuildSettings, "max_row_bytes")]
OnDuplicateIdOption = Annotated[DuplicatePolicy, field_option(BuildSettings, "on_duplicate_id")]
PolicyTokenizerOption = Annotated[Path | None, field_option(BuildSettings, "policy_tokenizer")]
ShardRowsOption = Annotated[int, field_option(BuildSettings, "shard_rows")]
WindowRowsOption = Annotated[int, field_option(BuildSettings, "window_rows")]
GroupRowsOption = Annotated[int, field_option(BuildSettings, "group_rows")]
RowGroupRowsOption = Annotated[int, field_option(BuildSettings, "row_group_rows")]
ProgressOption = Annotated[
    bool, typer.Option(help="Draw a progress bar (off a terminal: plain lines on stderr at an interval).")
]
ProgressIntervalOption = Annotated[
    float, typer.Option(min=0, help="Off a terminal: seconds between progress lines (0: every group).")
]
EngineOption = Annotated[
    str, typer.Option(help="local (this process) | ray (Ray Data, one probe per actor; docs/ray.md)")
]
NumProbesOption = Annotated[int, typer.Option(help="--engine ray: probe actors (one probe each).")]
RayAddressOption = Annotated[
    str | None,
    typer.Option(help="--engine ray: a running cluster (auto, ray://host:10001); default: a local Ray."),
]
ActorResourcesOption = Annotated[
    str, typer.Option(help="--engine ray: each probe actor's resources: num_gpus=1, num_cpus=0.5 or JSON.")
]


@with_settings_options
def build(
    inputs: InputsArgument,
    out: OutOption,
    preset: PresetOption = "default",
    id_col: IdColOption = None,
    question_col: QuestionColOption = None,
    completion_col: CompletionColOption = None,
    steps_col: StepsColOption = None,
    answer_col: AnswerColOption = None,
    group_col: GroupColOption = None,
    images_col: ImagesColOption = None,
    keep_cols: KeepColsOption = None,
    limit: LimitOption = None,
    dry_run: DryRunOption = False,
    overwrite: OverwriteOption = False,
    fail_on_reject: FailOnRejectOption = False,
    on_duplicate_id: OnDuplicateIdOption = "keep",
    max_row_bytes: MaxRowBytesOption = DEFAULT_MAX_ROW_BYTES,
    policy_tokenizer: PolicyTokenizerOption = None,
    shard_rows: ShardRowsOption = 16384,
    window_rows: WindowRowsOption = 1024,
    group_rows: GroupRowsOption = 64,
    row_group_rows: RowGroupRowsOption = 2048,
    progress: ProgressOption = True,
    progress_interval: ProgressIntervalOption = 30.0,
    engine: EngineOption = "local",
    num_probes: NumProbesOption = 1,
    ray_address: RayAddressOption = None,
    actor_resources: ActorResourcesOption = "num_cpus=1",
    *,
    settings_options: SettingsOptions,
) -> None:
    """Annotate rollout files into a trainer-ready Parquet dataset (resumable)."""
    from pydantic import ValidationError

    from mig_annotator.builder.columns import resolve_mapping
    from mig_annotator.builder.entry import prepare_build
    from mig_annotator.builder.errors import BuildError
    from mig_annotator.builder.settings import BuildSettings
    from mig_annotator.engine.model_store import ModelStoreError
    from mig_annotator.engine.probe.base import ProbeError

    try:
        ray_options = _ray_options(engine, num_probes, ray_address, actor_resources)
        probe_settings, scoring = settings_options.settings()
        columns = dict(id_col=id_col, question_col=question_col, completion_col=completion_col)
        columns |= dict(
            steps_col=steps_col, answer_col=answer_col, group_col=group_col, images_col=images_col
        )
        settings = BuildSettings(
            **dict(inputs=inputs, out=out, preset=preset, columns=resolve_mapping(preset, **columns)),
            **dict(keep_columns=_keep_list(keep_cols), limit=limit, scoring=scoring),
            **dict(policy_tokenizer=policy_tokenizer, shard_rows=shard_rows, window_rows=window_rows),
            **dict(group_rows=group_rows, row_group_rows=row_group_rows, fail_on_reject=fail_on_reject),
            **dict(overwrite=overwrite, on_duplicate_id=on_duplicate_id, max_row_bytes=max_row_bytes),
        )
        if dry_run:
            _dry_run(settings, probe_settings)
            return
        prepared = _warn_duplicates(prepare_build(settings, probe_settings, ray=ray_options), on_duplicate_id)
    except (OptionError, ValidationError, BuildError, ModelStoreError, ProbeError, ValueError) as error:
        fail(str(error))
    run_prepared(prepared, out, progress, progress_interval_s=progress_interval)


def _warn_duplicates(prepared: PreparedBuild, on_duplicate_id: str) -> PreparedBuild:
    if prepared.plan.duplicates.count:
        errors.print(f"warning: {prepared.plan.duplicates.message(on_duplicate_id)}", markup=False)
    return prepared


def run_prepared(
    prepared: Any,
    out: Path,
    progress: bool,
    *,
    show_config_hash: bool = False,
    progress_interval_s: float = 30.0,
) -> None:
    """Run a prepared build or rescore (unless finished already; anything with ``finished`` and
    ``run(observer)``) and report it; an interruption or failure says that rerunning resumes. Progress is
    a bar on a terminal, else plain lines on stderr every ``progress_interval_s`` seconds."""
    from mig_annotator.builder.errors import BuildError
    from mig_annotator.builder.progress import PlainBuildProgress, RichBuildProgress, summary
    from mig_annotator.engine.probe.base import ProbeError

    if prepared.finished is not None:
        console.print(f"already complete: {out}")
        console.print(summary(prepared.finished))
        return
    observer: RichBuildProgress | PlainBuildProgress
    if progress and not console.is_terminal:  # a log file: a bar would print nothing until the end
        observer = PlainBuildProgress(console, errors, progress_interval_s)
    else:
        observer = RichBuildProgress(console if progress else Console(quiet=True))
    try:
        result = prepared.run(observer)
    except KeyboardInterrupt:
        observer.close()
        fail("interrupted; committed work is kept: run the same command again to resume", INTERRUPTED)
    except (BuildError, ProbeError) as error:
        observer.close()
        fail(f"{error}\ncommitted work is kept: fix the cause and run the same command again to resume", 1)
    if not progress:
        console.print(summary(result.manifest))
    counts = result.manifest.counts
    rows = f"{counts.annotated if counts else 0:,} rows"
    if show_config_hash:
        rows += f", config_hash {result.manifest.identity.config_hash}"
    console.print(f"wrote {out} ({rows})")


def _ray_options(engine: str, num_probes: int, address: str | None, resources: str) -> Any:
    """The Ray engine's options (None for --engine local); BuildError for another engine."""
    from mig_annotator.builder.errors import BuildError

    if engine not in ("local", "ray"):
        raise BuildError(f"--engine {engine}: choose local or ray")
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


def _dry_run(settings: BuildSettings, probe_settings: Any) -> None:
    from mig_annotator.builder.dry_run import dry_run
    from mig_annotator.engine.probe.registry import open_probe

    result = dry_run(settings, open_probe(probe_settings))
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
