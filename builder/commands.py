"""The `build`, `export` and `audit` commands; registered on the `mig-annotator` app by :func:`register`.

Thin: parse flags into settings, call the builder, print. Heavy imports (torch, duckdb) happen on use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from mig_annotator.builder.columns import PRESETS, resolve_mapping
from mig_annotator.builder.errors import BuildError
from mig_annotator.builder.settings import BuildSettings
from mig_annotator.schemas import PromptTemplate, ScoringConfig

console = Console()
errors = Console(stderr=True)
export_app = typer.Typer(help="Trainer exports of a built dataset.", no_args_is_help=True)


def _fail(message: str, code: int = 2) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=code)


def build(
    inputs: Annotated[list[str], typer.Argument(help="JSONL, JSONL.gz or Parquet files, folders or globs.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The output folder.")],
    preset: Annotated[
        str, typer.Option(help=f"Column layout: {' | '.join(PRESETS)}. Column flags override it.")
    ] = "default",
    id_col: Annotated[str | None, typer.Option(help="The id column (default: id, else row-<n>).")] = None,
    question_col: Annotated[str | None, typer.Option(help="The question (text or chat messages).")] = None,
    completion_col: Annotated[str | None, typer.Option(help="The raw completion column.")] = None,
    steps_col: Annotated[
        str | None, typer.Option(help="A column of pre-segmented steps (list of text).")
    ] = None,
    answer_col: Annotated[
        str | None, typer.Option(help="The reference answer (dots reach into structs).")
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
    backend: Annotated[
        str, typer.Option(help="Probe backend: transformers | vllm | vllm-server")
    ] = "transformers",
    base_url: Annotated[str, typer.Option(help="vllm-server: the server's URL.")] = "http://127.0.0.1:8000",
    vllm_path: Annotated[
        str, typer.Option(help="vLLM scoring path: auto | token-scores | prefix-cached | prompt-logprobs")
    ] = "auto",
    api_key: Annotated[
        str | None, typer.Option(envvar="MIG_VLLM_API_KEY", help="vllm-server: the server's --api-key.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="A local HF model folder (default: SmolLM2-135M); vllm-server: its tokenizer."),
    ] = None,
    mode: Annotated[str, typer.Option(help="transformers: packed | packed-single | naive")] = "packed",
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16")] = "float32",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
    max_batch_tokens: Annotated[int, typer.Option(help="Padded tokens per forward pass.")] = 4096,
    segmenter: Annotated[str, typer.Option(help="auto | tags | lines | headers | regex")] = "auto",
    step_regex: Annotated[str | None, typer.Option(help="The step pattern for --segmenter regex.")] = None,
    aggregation: Annotated[str, typer.Option(help="mean | sum")] = "mean",
    watermark: Annotated[str, typer.Option(help="level | gain")] = "level",
    chat_template: Annotated[
        bool, typer.Option(help="Wrap the question in the probe's chat template.")
    ] = False,
    sft_threshold: Annotated[float, typer.Option(help="SFT gate threshold on sum(r_k).")] = 0.0,
    context_limit: Annotated[str, typer.Option(help="error | truncate_steps")] = "error",
    progress: Annotated[bool, typer.Option(help="Draw a progress bar.")] = True,
) -> None:
    """Annotate rollout files into a trainer-ready Parquet dataset (resumable)."""
    from mig_annotator.builder.manifest import probe_identity
    from mig_annotator.builder.pipeline import claim_output, finished_manifest, run_build
    from mig_annotator.builder.plan import plan_build
    from mig_annotator.mig.model_store import ModelStoreError, resolve_model_path
    from mig_annotator.mig.probe.base import ProbeError
    from mig_annotator.mig.probe.factory import ProbeSettings, open_probe

    try:
        if preset not in PRESETS:
            raise BuildError(f"--preset {preset}: choose one of {', '.join(PRESETS)}")
        settings = BuildSettings(
            inputs=inputs,
            out=out,
            preset=preset,  # type: ignore[arg-type]
            columns=resolve_mapping(
                preset,  # type: ignore[arg-type]
                id_col=id_col,
                question_col=question_col,
                completion_col=completion_col,
                steps_col=steps_col,
                answer_col=answer_col,
            ),
            keep_columns=_keep_list(keep_cols),
            limit=limit,
            scoring=ScoringConfig(
                segmenter=segmenter,  # type: ignore[arg-type]
                step_regex=step_regex,
                aggregation=aggregation,  # type: ignore[arg-type]
                watermark=watermark,  # type: ignore[arg-type]
                sft_threshold=sft_threshold,
                context_limit=context_limit,  # type: ignore[arg-type]
                prompt=PromptTemplate(chat=chat_template),
            ),
            policy_tokenizer=policy_tokenizer,
            shard_rows=shard_rows,
            window_rows=window_rows,
            group_rows=group_rows,
            row_group_rows=row_group_rows,
            fail_on_reject=fail_on_reject,
            overwrite=overwrite,
        )
        probe_settings = ProbeSettings(
            backend=backend,
            base_url=base_url,
            vllm_path=vllm_path,
            api_key=api_key,
            model=model,
            mode=mode,
            dtype=dtype,
            device=device,
            threads=threads,
            max_batch_tokens=max_batch_tokens,
        )  # type: ignore[arg-type]
        model_path = resolve_model_path(model)
        if dry_run:
            _dry_run(settings, open_probe(probe_settings))
            return
        probe = None
        model_id = model_path.name
        if backend == "vllm-server":  # the served model's name comes from the server
            probe = open_probe(probe_settings)
            model_id = probe.model_id
        plan = plan_build(settings, probe_identity(backend, model_id, model_path, dtype))
        claim_output(plan)  # refuse a conflicting folder before loading the model
        finished = None if overwrite else finished_manifest(plan)
        if finished is None and probe is None:
            probe = open_probe(probe_settings)
    except (ValidationError, BuildError, ModelStoreError, ProbeError, ValueError) as error:
        _fail(str(error))
    from mig_annotator.builder.progress import RichBuildProgress, summary

    if finished is not None:
        console.print(f"already complete: {out}")
        console.print(summary(finished))
        return
    observer = RichBuildProgress(console if progress else Console(quiet=True))
    assert probe is not None
    try:
        result = run_build(plan, probe, observer)
    except KeyboardInterrupt:
        observer.close()
        _fail("interrupted; committed work is kept: run the same command again to resume", code=130)
    except (BuildError, ProbeError) as error:
        observer.close()
        _fail(f"{error}\ncommitted work is kept: fix the cause and run the same command again to resume", 1)
    if not progress:
        console.print(summary(result.manifest))
    console.print(f"wrote {out} ({result.manifest.counts.annotated if result.manifest.counts else 0:,} rows)")


def _keep_list(keep_cols: str | None) -> list[str] | None:
    if keep_cols is None:
        return None
    if keep_cols.strip().lower() == "none":
        return []
    return [name.strip() for name in keep_cols.split(",") if name.strip()]


def _dry_run(settings: BuildSettings, probe: object) -> None:
    from mig_annotator.builder.dry_run import dry_run
    from mig_annotator.mig.cli import step_table

    result = dry_run(settings, probe)  # type: ignore[arg-type]
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


def _export(kind: str, dataset: Path, out: Path) -> None:
    from mig_annotator.builder.export import export

    try:
        result = export(dataset, kind, out)  # type: ignore[arg-type]
    except BuildError as error:
        _fail(str(error))
    console.print(f"wrote {result.path}: {result.rows:,} of {result.source_rows:,} rows ({kind})")


@export_app.command("sft")
def export_sft(
    dataset: Annotated[Path, typer.Argument(help="A built dataset folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The output file, .parquet or .jsonl.")],
) -> None:
    """The dual-gated SFT subset (correct outcome, process reward over the threshold): prompt, completion."""
    _export("sft", dataset, out)


@export_app.command("prm")
def export_prm(
    dataset: Annotated[Path, typer.Argument(help="A built dataset folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The output file, .parquet or .jsonl.")],
) -> None:
    """Step labels in TRL's stepwise format: prompt, completions (the steps), labels (r_k > 0)."""
    _export("prm", dataset, out)


def audit(
    paths: Annotated[
        list[Path], typer.Argument(help="Built dataset folders and/or audit-log folders or files.")
    ],
    report: Annotated[
        list[str] | None,
        typer.Option(
            "--report", "-r", help="distribution | lucky | hacking | top-steps | stalls | drift | labels"
        ),
    ] = None,
    sql: Annotated[
        str | None, typer.Option(help="One read-only SELECT over the views annotations, steps, rejects.")
    ] = None,
    by: Annotated[
        str | None, typer.Option(help="Group column (default: generator, model, else probe_model).")
    ] = None,
    top: Annotated[int, typer.Option(help="Rows per listing report.")] = 20,
    label_col: Annotated[str | None, typer.Option(help="Boolean label column (default: is_correct).")] = None,
    min_stall: Annotated[int, typer.Option(help="Shortest zero-reward run that counts as a stall.")] = 3,
    high_quantile: Annotated[
        float, typer.Option(help="'High' process reward: at or over this quantile.")
    ] = 0.9,
    output_format: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
) -> None:
    """Question the rewards of built datasets with DuckDB: canned reports or one read-only SQL query."""
    from mig_annotator.builder.audit.database import AuditDatabase, discover_sources
    from mig_annotator.builder.audit.render import render
    from mig_annotator.builder.audit.reports import REPORTS, Report, ReportOptions, run_reports

    if output_format not in ("table", "csv", "json"):
        _fail(f"--format {output_format}: choose table, csv or json")
    try:
        sources = discover_sources(paths)
        with AuditDatabase(sources) as db:
            for source in sources:
                if not source.complete:
                    errors.print(
                        f"note: {source.name}: the build has not finished; auditing the finished shards"
                    )
            if sql is not None:
                if report:
                    raise BuildError("give --sql or --report, not both")
                result = db.user_query(sql)
                reports = [Report("sql", sql, result.columns, result.rows)]
            else:
                options = ReportOptions(
                    by=by, top=top, label_col=label_col, min_stall=min_stall, high_quantile=high_quantile
                )
                reports = run_reports(db, list(report or REPORTS), options)
    except BuildError as error:
        _fail(str(error))
    out = console if output_format == "table" else Console(soft_wrap=True)
    render(reports, output_format, out)  # type: ignore[arg-type]


def register(app: typer.Typer) -> None:
    """Add `build`, `export sft|prm` and `audit` to the `mig-annotator` app."""
    app.command("build")(build)
    app.add_typer(export_app, name="export")
    app.command("audit")(audit)
