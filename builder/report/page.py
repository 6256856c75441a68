"""Assemble the self-contained HTML page: plotly.js inlined once, no network access of any kind."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape
from typing import Any

import plotly.io as pio
from plotly.offline import get_plotlyjs

from mig_annotator.builder.report import charts
from mig_annotator.builder.report.data import GroupTable, ReportData
from mig_annotator.builder.report.heatmap import heatmaps

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #111827;
       background: #f9fafb; }
main { max-width: 1280px; margin: 0 auto; padding: 24px; }
h1 { font-size: 1.5rem; margin: 0 0 4px; } h2 { font-size: 1.15rem; margin: 28px 0 8px; }
h3 { font-size: 0.95rem; margin: 8px 0; } .sub { color: #6b7280; margin: 0 0 16px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px; }
.card { background: white; border: 1px solid #e5e7eb; border-radius: 8px; padding: 10px 12px; }
.card .name { color: #6b7280; font-size: 0.78rem; } .card .value { font-size: 1.2rem; font-weight: 600;
  overflow-wrap: anywhere; }
.card .value.small { font-size: 0.85rem; font-weight: 500; }
.notes { background: #fffbeb; border: 1px solid #fcd34d; border-radius: 8px; padding: 8px 12px 8px 28px; }
.chart { background: white; border: 1px solid #e5e7eb; border-radius: 8px; padding: 4px; }
.heat-grid { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
.trace { background: white; border: 1px solid #e5e7eb; border-radius: 8px; padding: 8px 10px;
  margin-bottom: 10px; }
.trace-head { font-size: 0.8rem; color: #374151; margin-bottom: 6px; }
.thumb { max-width: 96px; max-height: 96px; vertical-align: middle; margin-right: 6px;
  border: 1px solid #d1d5db; }
.completion { white-space: pre-wrap; font-family: ui-monospace, Menlo, monospace; font-size: 0.78rem;
  margin: 0; line-height: 1.55; }
.step { border-radius: 3px; outline: 1px solid #d1d5db; cursor: help; }
.cells .step { display: inline-block; padding: 2px 6px; margin: 2px; font-size: 0.75rem; }
mark.answer { background: transparent; outline: 2px solid #f59e0b; border-radius: 3px; font-weight: 700; }
.badge { font-size: 0.7rem; padding: 1px 6px; border-radius: 9px; color: white; }
.badge.correct { background: #15803d; } .badge.wrong { background: #b91c1c; }
.swatch { display: inline-block; width: 14px; height: 10px; border-radius: 2px; }
.legend, .empty, .cut { color: #6b7280; font-size: 0.8rem; }
table.groups { border-collapse: collapse; background: white; font-size: 0.8rem; margin-bottom: 12px; }
table.groups th, table.groups td { border: 1px solid #e5e7eb; padding: 3px 8px; text-align: right; }
table.groups th:first-child, table.groups td:first-child { text-align: left; }
table.groups td:first-child { max-width: 28rem; overflow-wrap: anywhere; }
.table-scroll { max-width: 100%; overflow-x: auto; }
footer { color: #9ca3af; font-size: 0.75rem; margin-top: 28px; }
"""
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.1%}" if percent else f"{value:.4f}"
    return escape(str(value))


def _cards(data: ReportData) -> str:
    s = data.summary
    cards = [
        ("rows", _fmt(s["rows"]), False),
        ("outcome rate", _fmt(s["outcome_rate"], True), False),
        ("mean process reward", _fmt(s["process_reward_mean"]), False),
        ("SFT-gate rate", _fmt(s["sft_rate"], True), False),
        ("zero-reward rate", _fmt(s["zero_reward_rate"], True), False),
        ("truncated rows", _fmt(s["truncated"]), False),
        ("rejects", _fmt(s["rejects"]) if s["rejects"] is not None else "n/a (no build)", False),
        ("mean steps", "n/a" if s["steps_mean"] is None else f"{s['steps_mean']:.2f}", False),
        ("probe model", _fmt(s["probe_model"]), True),
        ("config hash", _fmt(s["config_hash"]), True),
    ]
    body = "".join(
        f'<div class="card"><div class="name">{name}</div>'
        f'<div class="value{" small" if small else ""}">{value}</div></div>'
        for name, value, small in cards
    )
    return f'<div class="cards" id="summary">{body}</div>'


def _group_table(table: GroupTable) -> str:
    rates = {"outcome_rate", "sft_rate", "zero_reward_rate", "label_rate"}
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{_fmt(v, h in rates)}</td>" for h, v in zip(table.headers, row, strict=True))
        + "</tr>"
        for row in table.rows
    )
    more = f'<p class="legend">… and {table.more} more groups</p>' if table.more else ""
    return (
        f'<h3>by {escape(table.column)}</h3><div class="table-scroll"><table class="groups">'
        f"<tr>{head}</tr>{rows}</table></div>{more}"
    )


def _chart(figure: Any, chart_id: str) -> str:
    div = pio.to_html(
        figure, include_plotlyjs=False, full_html=False, div_id=chart_id, config=PLOT_CONFIG, validate=True
    )
    return f'<div class="chart" data-chart="{chart_id}">{div}</div>'


def render_page(data: ReportData, title: str) -> str:
    """The whole report as one HTML document."""
    sections = [f"<h2>Summary</h2>{_cards(data)}"]
    if data.notes:
        sections.append(
            '<h2>What this input lacks</h2><ul class="notes">'
            + "".join(f"<li>{escape(note)}</li>" for note in data.notes)
            + "</ul>"
        )
    sections.append(
        "<h2>Distributions by outcome</h2>"
        + _chart(charts.distributions(data.process_reward, data.v_final), "dist")
    )
    if data.has_step_detail and data.traces:
        sections.append(
            "<h2>Value trajectories of sampled traces</h2>" + _chart(charts.trajectories(data.traces), "traj")
        )
    sections.append("<h2>Per-step heatmaps</h2>" + heatmaps(data.traces))
    sections.append(
        "<h2>Where credit falls</h2>"
        '<p class="legend">Relative position k*/K of the step with the largest r_k, '
        "for traces with any reward "
        f"({data.zero_reward_traces} traces with no reward or no steps are not shown).</p>"
        + _chart(charts.max_position(data.max_position), "maxpos")
    )
    sections.append("<h2>By group</h2>" + "".join(_group_table(table) for table in data.groups))
    if data.roc:
        sections.append(
            "<h2>ROC against the labels</h2>" + _chart(charts.roc(data.roc, data.label or "label"), "roc")
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body><main>'
        f"<h1>{escape(title)}</h1>"
        f'<p class="sub">{escape(", ".join(data.sources))} ({escape(", ".join(data.kinds))}) · '
        f"{len(data.traces)} sampled traces</p>"
        + "".join(sections)
        + f"<footer>mig-annotator report · {stamp} · charts: Plotly (inlined, works offline)</footer>"
        "</main></body></html>"
    )
