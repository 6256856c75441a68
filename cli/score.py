"""`score`: annotate traces with per-step MIG rewards, streaming.

``--input FILE`` is read lazily and annotated in batches; each batch's annotations are written (one JSON
line per trace, in input order) as soon as it finishes. Bad rows are reported on stderr with their file,
line and field, and skipped (``--strict``: stop at the first). Exit status: 0 when every row was annotated,
1 when any row failed or the probe failed, 2 when the options or the input file are unusable (nothing ran).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from mig_annotator.cli.console import console, errors, fail
from mig_annotator.cli.options import OptionError, SettingsOptions, with_settings_options
from mig_annotator.cli.render import step_table
from mig_annotator.cli.score_stream import BadRow, Tally, score_stream
from mig_annotator.cli.trace_input import STDIN, InputFileError, InputRow, input_size, read_rows, single_row
from mig_annotator.schemas import TraceAnnotation

IO_PANEL = "Input and output"
ROWS_FAILED = 1
INTERRUPTED = 130
OutputFormat = Literal["jsonl", "table"]


InputOption = Annotated[
    str | None,
    typer.Option(
        "--input",
        "-i",
        help="JSON Lines of traces, '-' for stdin: id, question (text or chat messages), completion "
        "(text or chat messages) or steps (a list), reference_answer. Read lazily.",
        rich_help_panel=IO_PANEL,
    ),
]
QuestionOption = Annotated[
    str | None, typer.Option(help="One trace: the question.", rich_help_panel=IO_PANEL)
]
CompletionOption = Annotated[
    str | None, typer.Option(help="One trace: the completion.", rich_help_panel=IO_PANEL)
]
AnswerOption = Annotated[
    str | None, typer.Option(help="One trace: the reference answer.", rich_help_panel=IO_PANEL)
]
OutOption = Annotated[
    Path | None, typer.Option("--out", "-o", help="Write here instead of stdout.", rich_help_panel=IO_PANEL)
]
FormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        help="jsonl: one TraceAnnotation JSON per line; table: a per-step table per trace.",
        rich_help_panel=IO_PANEL,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", hidden=True, help="Deprecated: JSON lines are the default format.")
]
BatchSizeOption = Annotated[
    int, typer.Option(min=1, help="Traces per probe call (and per write).", rich_help_panel=IO_PANEL)
]
StrictOption = Annotated[
    bool,
    typer.Option(
        help="Stop at the first bad row (rows before it are written). Default: report it and go on.",
        rich_help_panel=IO_PANEL,
    ),
]
ProgressOption = Annotated[
    bool,
    typer.Option(
        help="A progress bar on stderr (drawn when the results do not go to the same terminal).",
        rich_help_panel=IO_PANEL,
    ),
]


@with_settings_options
def score(
    input_file: InputOption = None,
    question: QuestionOption = None,
    completion: CompletionOption = None,
    answer: AnswerOption = None,
    out: OutOption = None,
    output_format: FormatOption = "jsonl",
    as_json: JsonOption = False,
    batch_size: BatchSizeOption = 32,
    strict: StrictOption = False,
    progress: ProgressOption = True,
    *,
    settings_options: SettingsOptions,
) -> None:
    """Annotate traces with per-step MIG rewards: a JSONL file streamed batch by batch, or one trace.

    Exit status 0 when every row was annotated, 1 when any row failed (each reported on stderr with its
    file, line and field) or the probe failed, 2 for unusable options or input.
    """
    from mig_annotator.engine.annotator import Annotator
    from mig_annotator.engine.model_store import ModelStoreError
    from mig_annotator.engine.probe.base import ProbeError
    from mig_annotator.engine.probe.registry import open_probe

    try:
        _check_input(input_file, (question, completion, answer), as_json, output_format)
        probe_settings, config = settings_options.settings()
        total_bytes = input_size(input_file) if input_file is not None else None
        probe = open_probe(probe_settings)
    except (OptionError, InputFileError, ModelStoreError, ProbeError) as error:
        fail(str(error))

    rows = read_rows(input_file) if input_file is not None else _one_row(question, completion, answer)
    with ExitStack() as stack:
        target = stack.enter_context(out.open("w", encoding="utf-8")) if out is not None else sys.stdout
        draw = progress and input_file is not None and (out is not None or not sys.stdout.isatty())
        sink = _Sink(target, output_format, input_file or "", total_bytes, draw)
        stack.enter_context(sink)
        annotator = stack.enter_context(Annotator(probe, config))
        try:
            tally = score_stream(rows, annotator.annotate_many, sink, batch_size=batch_size, strict=strict)
        except ProbeError as error:
            sink.close()
            fail(f"the probe failed: {error}; the rows of finished batches are written", ROWS_FAILED)
        except KeyboardInterrupt:
            sink.close()
            fail("interrupted; the rows of finished batches are written", INTERRUPTED)
    _summary(tally, out)
    if tally.failed:
        raise typer.Exit(code=ROWS_FAILED)


class _Sink:
    """Writes finished batches to the output, bad rows and progress to stderr (a context manager)."""

    def __init__(
        self, target: IO[str], output_format: OutputFormat, source: str, total_bytes: int | None, draw: bool
    ) -> None:
        self._target = target
        self._format = output_format
        self._tables = console if target is sys.stdout else Console(file=target, width=120)
        self._progress: Progress | None = None
        self._task = 0
        if draw:
            self._progress = Progress(
                TextColumn("[bold]scoring[/] {task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[scored]} scored, {task.fields[failed]} failed"),
                TimeElapsedColumn(),
                console=errors,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._task = self._progress.add_task(
                escape(Path(source).name if source != STDIN else "stdin"),
                total=total_bytes,
                scored=0,
                failed=0,
            )

    def __enter__(self) -> _Sink:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def annotated(self, annotations: Sequence[TraceAnnotation]) -> None:
        if self._format == "table":
            for annotation in annotations:
                self._tables.print(step_table(annotation))
        else:
            self._target.write("".join(annotation.model_dump_json() + "\n" for annotation in annotations))
        self._target.flush()

    def bad_row(self, row: BadRow) -> None:
        errors.print(f"[bold red]bad row:[/] {escape(str(row))}", highlight=False)

    def progress(self, end_byte: int, tally: Tally) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=end_byte, scored=tally.scored, failed=tally.failed)


def _check_input(
    input_file: str | None, single: tuple[str | None, ...], as_json: bool, output_format: OutputFormat
) -> None:
    """:class:`OptionError` when the input options contradict each other or are missing."""
    if as_json and output_format != "jsonl":
        raise OptionError("--json (deprecated: JSON lines are the default) contradicts --format table")
    if input_file is not None and any(value is not None for value in single):
        raise OptionError("give either --input or --question/--completion/--answer, not both")
    if input_file is None and any(value is None for value in single):
        raise OptionError("give --input FILE, or all of --question, --completion and --answer")


def _one_row(question: str | None, completion: str | None, answer: str | None) -> Iterator[InputRow]:
    assert question is not None and completion is not None and answer is not None  # checked by score()
    yield single_row(question, completion, answer)


def _summary(tally: Tally, out: Path | None) -> None:
    where = f" to {out}" if out is not None else ""
    bad = "stopped at the first bad row (--strict)" if tally.stopped else f"{tally.failed} bad row(s) skipped"
    errors.print(f"scored {tally.scored} trace(s){where}; {bad}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `score`."""
    app.command("score")(score)
