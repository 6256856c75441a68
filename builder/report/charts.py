"""The report's Plotly figures (drawn by the plotly.js inlined once in the page)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mig_annotator.builder.evaluation.ranking import RocCurve
from mig_annotator.builder.report.data import OUTCOME_CURVE, Histogram, TraceView

CORRECT = "#15803d"
WRONG = "#b91c1c"
PALETTE = ("#1d4ed8", "#c2410c", "#7c3aed", "#0f766e", "#be185d", "#4d7c0f", "#0369a1", "#a16207")
LAYOUT = {"template": "plotly_white", "margin": {"l": 50, "r": 20, "t": 40, "b": 45}, "height": 340}


def _bars(figure: go.Figure, histogram: Histogram, col: int | None = None, show_legend: bool = True) -> None:
    edges = np.asarray(histogram.edges)
    centers, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    for name, counts, color in (("correct", histogram.correct, CORRECT), ("wrong", histogram.wrong, WRONG)):
        bar = go.Bar(
            x=centers,
            y=counts,
            width=widths,
            name=name,
            marker_color=color,
            opacity=0.6,
            legendgroup=name,
            showlegend=show_legend,
            hovertemplate=f"{name}: %{{y}} traces<br>bin centre %{{x:.3f}}<extra></extra>",
        )
        if col is None:
            figure.add_trace(bar)
        else:
            figure.add_trace(bar, row=1, col=col)


def distributions(process_reward: Histogram, v_final: Histogram) -> go.Figure:
    figure = make_subplots(rows=1, cols=2, subplot_titles=("process reward  Σ r_k", "v_K"))
    _bars(figure, process_reward, 1)
    _bars(figure, v_final, 2, show_legend=False)
    figure.update_layout(barmode="overlay", **LAYOUT)
    figure.update_yaxes(title_text="traces", row=1, col=1)
    return figure


def trajectories(traces: list[TraceView]) -> go.Figure:
    """v_k (solid) and the level watermark W_k = max(v_0..v_k) (dotted) for the sampled traces."""
    figure = make_subplots(
        rows=1, cols=2, shared_yaxes=True, subplot_titles=("correct (outcome 1)", "wrong (outcome 0)")
    )
    for side, outcome in ((1, 1), (2, 0)):
        shown = [
            trace
            for trace in traces
            if trace.outcome == outcome and all(s.v is not None for s in trace.steps)
        ]
        for index, trace in enumerate(shown):
            values = [trace.v0, *[float(step.v) for step in trace.steps]]  # type: ignore[arg-type]
            k = list(range(len(values)))
            color = PALETTE[index % len(PALETTE)]
            name = f"{trace.trace_id}"
            figure.add_trace(
                go.Scatter(
                    x=k,
                    y=values,
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    line={"color": color},
                    hovertemplate="k=%{x}<br>v_k=%{y:.4f}<extra>" + name + "</extra>",
                ),
                row=1,
                col=side,
            )
            figure.add_trace(
                go.Scatter(
                    x=k,
                    y=np.maximum.accumulate(values).tolist(),
                    mode="lines",
                    name=f"{name} W",
                    legendgroup=name,
                    showlegend=False,
                    line={"color": color, "dash": "dot"},
                    hovertemplate="k=%{x}<br>W_k=%{y:.4f}<extra>" + name + "</extra>",
                ),
                row=1,
                col=side,
            )
    figure.update_layout(**(LAYOUT | {"height": 380}), legend={"font": {"size": 10}})
    figure.update_xaxes(title_text="step k")
    figure.update_yaxes(title_text="v_k (solid), W_k (dotted)", row=1, col=1)
    return figure


def max_position(histogram: Histogram) -> go.Figure:
    figure = go.Figure()
    _bars(figure, histogram)
    figure.update_layout(barmode="overlay", **LAYOUT)
    figure.update_xaxes(title_text="position of the max-reward step: k* / K", range=[0, 1])
    figure.update_yaxes(title_text="traces")
    return figure


def roc(curves: dict[str, RocCurve], label: str) -> go.Figure:
    """One ROC curve per score; the outcome's own curve (the free baseline) is drawn dashed in black."""
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"color": "#9ca3af", "dash": "dash"})
    )
    for index, (name, curve) in enumerate(curves.items()):
        line = {"color": PALETTE[index % len(PALETTE)]}
        if name == OUTCOME_CURVE:
            line = {"color": "#111827", "dash": "dash"}
        figure.add_trace(
            go.Scatter(
                x=curve.false_positive_rate,
                y=curve.true_positive_rate,
                mode="lines",
                name=f"{name} (AUROC {curve.auroc:.3f})",
                line=line,
            )
        )
    figure.update_layout(
        **(LAYOUT | {"height": 420}), title={"text": f"against {label}", "font": {"size": 13}}
    )
    # a square plot: the axes keep their 0..1 ranges and the plot area shrinks to fit (constrain="domain");
    # with the default constrain="range" Plotly widens the x range (to about -1..2 on a wide page) instead
    figure.update_xaxes(title_text="false positive rate", range=[0, 1], constrain="domain")
    figure.update_yaxes(title_text="true positive rate", range=[0, 1], scaleanchor="x", constrain="domain")
    return figure
