"""Per-step heatmaps: a trace's completion with each step's background shaded by r_k.

Shading: green with opacity ``0.1 + 0.8 * r_k / r_max`` (r_max: the largest r_k among the shown traces),
none for r_k = 0, so a larger reward is always a darker step. Each step carries ``data-k`` and
``data-reward`` and a tooltip (``title``) with v_k, mig_k, W_k and r_k; the extracted answer is a
``<mark class="answer">``. Audit-log traces have no text: they show one cell per step.
"""

from __future__ import annotations

import base64
from html import escape

from mig_annotator.builder.report.data import StepView, TraceView

SHADE_RGB = (22, 163, 74)
MAX_TEXT_CHARS = 6000


def shade(reward: float, r_max: float) -> str:
    """The CSS background of a step with reward ``reward`` (monotone in the reward)."""
    if reward <= 0 or r_max <= 0:
        return "transparent"
    alpha = 0.1 + 0.8 * min(reward / r_max, 1.0)
    return f"rgba({SHADE_RGB[0]}, {SHADE_RGB[1]}, {SHADE_RGB[2]}, {alpha:.3f})"


def _number(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if sign else f"{value:.4f}"


def tooltip(step: StepView) -> str:
    return (
        f"step {step.k}: v_k = {_number(step.v)}, mig_k = {_number(step.mig, sign=True)}, "
        f"W_k = {_number(step.watermark)}, r_k = {_number(step.reward)}"
    )


def _text(completion: str, start: int, end: int, answer: tuple[int, int] | None) -> str:
    """Escaped ``completion[start:end]`` with the part inside the answer span marked."""
    if answer is None or answer[1] <= start or answer[0] >= end:
        return escape(completion[start:end])
    a, b = max(answer[0], start), min(answer[1], end)
    return (
        escape(completion[start:a])
        + f'<mark class="answer" title="extracted answer">{escape(completion[a:b])}</mark>'
        + escape(completion[b:end])
    )


def _step_span(step: StepView, inner: str, r_max: float) -> str:
    return (
        f'<span class="step" data-k="{step.k}" data-reward="{step.reward!r}" '
        f'style="background-color: {shade(step.reward, r_max)}" '
        f'title="{escape(tooltip(step))}">{inner}</span>'
    )


def _thumbnails(trace: TraceView) -> str:
    """The question's images as inline PNGs (the report loads nothing from outside)."""
    return "".join(
        f'<img class="thumb" alt="question image {index}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}"> '
        for index, png in enumerate(trace.thumbnails, start=1)
    )


def trace_heatmap(trace: TraceView, r_max: float) -> str:
    verdict = "correct" if trace.outcome == 1 else "wrong"
    answer = ""
    if trace.answer is not None or trace.reference_answer is not None:
        answer = f" · answer {escape(repr(trace.answer))} (reference {escape(repr(trace.reference_answer))})"
    head = (
        f'<div class="trace-head">{_thumbnails(trace)}<span class="badge {verdict}">{verdict}</span> '
        f"<code>{escape(trace.trace_id)}</code> · {escape(trace.dataset)} · "
        f"Σ r_k = {trace.process_reward:.4f} · v_0 = {trace.v0:.4f} → v_K = {trace.v_final:.4f}{answer}</div>"
    )
    with_text = trace.completion is not None and all(s.start is not None for s in trace.steps)
    if not with_text:
        cells = "".join(_step_span(step, f"k={step.k}", r_max) for step in trace.steps) or "(no steps)"
        return f'<div class="trace">{head}<div class="cells">{cells}</div></div>'
    completion = trace.completion or ""
    limit = min(len(completion), MAX_TEXT_CHARS)
    parts, cursor = [], 0
    for step in trace.steps:
        start, end = int(step.start or 0), int(step.end or 0)  # type: ignore[arg-type]
        if start >= limit:
            break
        parts.append(_text(completion, cursor, start, trace.answer_span))
        parts.append(_step_span(step, _text(completion, start, min(end, limit), trace.answer_span), r_max))
        cursor = min(end, limit)
    parts.append(_text(completion, cursor, limit, trace.answer_span))
    if limit < len(completion):
        parts.append(f'<span class="cut"> … ({len(completion) - limit} more characters not shown)</span>')
    return f'<div class="trace">{head}<pre class="completion">{"".join(parts)}</pre></div>'


def heatmaps(traces: list[TraceView]) -> str:
    r_max = max((step.reward for trace in traces for step in trace.steps), default=0.0)
    columns = []
    for outcome, title in ((1, "correct (outcome 1)"), (0, "wrong (outcome 0)")):
        shown = [trace_heatmap(trace, r_max) for trace in traces if trace.outcome == outcome]
        body = "".join(shown) or '<p class="empty">no sampled traces</p>'
        columns.append(f'<div class="heat-col"><h3>{title}</h3>{body}</div>')
    legend = (
        f'<p class="legend">Background: r_k, from none (r_k = 0) to <span class="swatch" '
        f'style="background-color: {shade(r_max, r_max)}"></span> r_k = {r_max:.4f} (the largest shown). '
        "Hover a step for v_k, mig_k, W_k, r_k; "
        '<mark class="answer">the extracted answer</mark> is outlined.</p>'
    )
    return legend + f'<div class="heat-grid">{"".join(columns)}</div>'
