"""Human-readable views of annotations: the per-step table (`score --format table`, `build --dry-run`)."""

from __future__ import annotations

from rich.table import Table

from mig_annotator.schemas import TraceAnnotation

STEP_TEXT_WIDTH = 90


def step_table(annotation: TraceAnnotation) -> Table:
    """The per-step table: v, gain, watermark and reward of every step, after a row for the question alone."""
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
        text = step.text if len(step.text) <= STEP_TEXT_WIDTH else step.text[: STEP_TEXT_WIDTH - 3] + "..."
        reward = f"[bold green]{step.reward:.4f}[/]" if step.reward > 0 else f"{step.reward:.4f}"
        table.add_row(
            str(step.index), text, f"{step.v:.4f}", f"{step.mig:+.4f}", f"{step.watermark:.4f}", reward
        )
    return table
