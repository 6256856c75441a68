"""The build's progress: a bar (traces/s, tokens/s, ETA) drawn with rich on a terminal, plain lines at an
interval off a terminal (a log file), and the end-of-build summary."""

from __future__ import annotations

import threading
import time

from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.table import Table
from rich.text import Text

from mig_annotator.builder.manifest import Manifest
from mig_annotator.builder.pipeline import BuildResult
from mig_annotator.builder.plan import BuildPlan


class _SessionRates(ProgressColumn):
    """traces/s and tokens/s over this run, and the time left at that pace."""

    def render(self, task: Task) -> Text:
        elapsed = time.perf_counter() - task.fields["session_started"]
        rows, tokens = task.fields["session_rows"], task.fields["session_tokens"]
        if rows == 0 or elapsed <= 0:
            return Text("-- traces/s  -- tokens/s  ETA --", style="progress.remaining")
        rate = rows / elapsed
        remaining = (task.total or 0) - task.completed
        eta = time.strftime("%H:%M:%S", time.gmtime(remaining / rate)) if rate > 0 else "--"
        return Text(
            f"{rate:.2f} traces/s  {tokens / elapsed:,.0f} tokens/s  ETA {eta}", style="progress.remaining"
        )


class RichBuildProgress:
    """A :class:`builder.pipeline.BuildObserver` that draws a progress bar on ``console``."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress: Progress | None = None
        self._task = 0
        self._annotated = 0
        self._rejected = 0

    def on_start(self, plan: BuildPlan, done_rows: int) -> None:
        if done_rows:
            self._console.print(f"resuming: {done_rows:,} of {plan.total_rows:,} rows already done")
        else:
            self._console.print(f"starting: {plan.total_rows:,} rows into {plan.layout.root}")
        self._progress = Progress(
            TextColumn("[bold]annotating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rejected]} rejected"),
            _SessionRates(),
            console=self._console,
            transient=False,
        )
        self._task = self._progress.add_task(
            "build",
            total=plan.total_rows,
            completed=done_rows,
            rejected=0,
            session_rows=0,
            session_tokens=0,
            session_started=time.perf_counter(),
        )
        self._progress.start()

    def on_rows(self, rows: int, annotated: int, rejected: int, tokens: int) -> None:
        self._annotated += annotated
        self._rejected += rejected
        if self._progress is None:
            return
        task = self._progress.tasks[self._task]
        self._progress.update(
            self._task,
            advance=rows,
            rejected=self._rejected,
            session_rows=task.fields["session_rows"] + rows,
            session_tokens=task.fields["session_tokens"] + tokens,
        )

    def on_finish(self, result: BuildResult) -> None:
        if self._progress is not None:
            self._progress.stop()
        if result.already_complete:
            self._console.print("already complete: nothing to do")
        self._console.print(summary(result.manifest))

    def close(self) -> None:
        """Stop drawing (after an error)."""
        if self._progress is not None:
            self._progress.stop()


class PlainBuildProgress:
    """A :class:`builder.pipeline.BuildObserver` for a console that is no terminal (``build > log 2>&1``):
    a plain line (rows done of all, rejects, traces/s and tokens/s over this run, ETA) at most every
    ``interval_s`` seconds as rows finish, and at least that often while a long group is scored; a last
    line at the end. The lines go to ``lines``; the start and the summary to ``console``, as the bar's do.
    ``interval_s`` 0: a line for every committed group."""

    def __init__(self, console: Console, lines: Console, interval_s: float = 30.0) -> None:
        self._console = console
        self._lines = lines
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._ticker: threading.Thread | None = None
        self._total = self._done = self._rejected = self._session_rows = self._session_tokens = 0
        self._started = self._last_line = time.monotonic()

    def on_start(self, plan: BuildPlan, done_rows: int) -> None:
        if done_rows:
            self._console.print(f"resuming: {done_rows:,} of {plan.total_rows:,} rows already done")
        else:
            self._console.print(f"starting: {plan.total_rows:,} rows into {plan.layout.root}")
        with self._lock:
            self._total, self._done = plan.total_rows, done_rows
            self._started = self._last_line = time.monotonic()
        if self._interval_s > 0:
            self._ticker = threading.Thread(target=self._tick, name="mig-build-progress", daemon=True)
            self._ticker.start()

    def on_rows(self, rows: int, annotated: int, rejected: int, tokens: int) -> None:
        with self._lock:
            self._done += rows
            self._rejected += rejected
            self._session_rows += rows
            self._session_tokens += tokens
            due = time.monotonic() - self._last_line >= self._interval_s
        if due:
            self._print_line()

    def on_finish(self, result: BuildResult) -> None:
        self.close()
        if not result.already_complete:
            self._print_line()
        else:
            self._console.print("already complete: nothing to do")
        self._console.print(summary(result.manifest))

    def close(self) -> None:
        """Stop the interval lines (after an error, or at the end)."""
        self._stopped.set()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join()

    def line(self) -> str:
        """The current progress as one plain line."""
        with self._lock:
            total, done, rejected = self._total, self._done, self._rejected
            rows, tokens = self._session_rows, self._session_tokens
            elapsed = time.monotonic() - self._started
        share = f" ({100.0 * done / total:.1f}%)" if total else ""
        text = f"progress: {done:,}/{total:,} rows{share}, {rejected:,} rejected"
        if rows == 0 or elapsed <= 0:
            return f"{text}, -- traces/s, ETA --"
        rate = rows / elapsed
        eta = time.strftime("%H:%M:%S", time.gmtime(max(total - done, 0) / rate))
        return f"{text}, {rate:.2f} traces/s, {tokens / elapsed:,.0f} tokens/s, ETA {eta}"

    def _print_line(self) -> None:
        text = self.line()
        with self._lock:
            self._last_line = time.monotonic()
        self._lines.print(text, markup=False, highlight=False)

    def _tick(self) -> None:
        while not self._stopped.wait(self._interval_s):
            with self._lock:
                due = time.monotonic() - self._last_line >= self._interval_s
            if due:
                self._print_line()


def summary(manifest: Manifest) -> Group:
    """Counts, rejects, speed and reward statistics of a finished build."""
    counts, timings, stats = manifest.counts, manifest.timings, manifest.reward_stats or {}
    table = Table(title="build summary", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    if counts is not None:
        table.add_row("input rows", f"{counts.input_rows:,}")
        table.add_row("annotated", f"{counts.annotated:,}")
        rejects = ", ".join(f"{stage} {n:,}" for stage, n in counts.rejects_by_stage.items())
        table.add_row("rejected", f"{counts.rejected:,}" + (f" ({rejects})" if rejects else ""))
        table.add_row("shards", str(counts.shards))
    if timings is not None:
        table.add_row("traces/s", f"{timings.traces_per_second:.2f}")
        table.add_row("probe tokens/s", f"{timings.tokens_per_second:,.0f}")
        table.add_row("runs (1 + resumes)", str(timings.sessions))
    rewards = Table(title="rewards", title_justify="left", show_header=False)
    rewards.add_column("statistic")
    rewards.add_column("value", justify="right")
    for key, value in stats.items():
        rewards.add_row(key, f"{value:.4f}" if isinstance(value, float) else f"{value:,}")
    return Group(table, rewards)
