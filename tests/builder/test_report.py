"""The HTML report's content, checked in its text (the browser test checks that it renders)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mig_annotator.builder.errors import DatasetError
from mig_annotator.builder.report import MAX_REPORT_BYTES, ReportOptions, write_report
from mig_annotator.builder.report.heatmap import shade
from tests.builder.report_support import build_arithmetic_dataset, write_audit_log, write_labelled_dataset

STEP = re.compile(
    r'<span class="step" data-k="(\d+)" data-reward="([^"]+)" style="background-color: ([^"]+)"'
)


def trace_ids(html: str) -> list[str]:
    return re.findall(r'<div class="trace"><div class="trace-head">.*?<code>([^<]+)</code>', html)


@pytest.fixture(scope="module")
def arithmetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_arithmetic_dataset(tmp_path_factory.mktemp("report") / "arith")


def test_the_report_of_the_worked_example_shows_its_numbers(tmp_path: Path) -> None:
    dataset = write_labelled_dataset(tmp_path / "labelled")
    result = write_report([dataset], tmp_path / "r.html")
    html = result.path.read_text(encoding="utf-8")
    assert result.bytes == len(html.encode()) <= MAX_REPORT_BYTES
    cards = dict(re.findall(r'<div class="name">([^<]+)</div><div class="value[^"]*">([^<]+)</div>', html))
    assert cards["rows"] == "4" and cards["outcome rate"] == "50.0%"
    assert cards["mean process reward"] == "0.5750"  # (1 + 1 + 0 + .3) / 4
    assert cards["SFT-gate rate"] == "50.0%" and cards["zero-reward rate"] == "25.0%"
    assert cards["probe model"] == "probe-1" and cards["rejects"] == "n/a (no build)"
    # every trace is sampled (4 < 6 per outcome); the steps carry their rewards, shaded monotonically
    assert sorted(trace_ids(html)) == ["A", "B", "C", "D"]
    steps = [(int(k), float(r), color) for k, r, color in STEP.findall(html)]
    assert len(steps) == 10 and sorted(r for _, r, _ in steps) == pytest.approx(
        sorted([0.5, 0.5, 0.5, 0.0, 0.5, 0.0, 0.0, 0.2, 0.0, 0.1])
    )
    assert all(color == shade(r, 0.5) for _, r, color in steps)
    assert html.count('<mark class="answer"') == 4 + 1  # one per trace, one in the legend
    assert 'title="step 2: v_k = -1.0000, mig_k = +0.5000, W_k = -1.0000, r_k = 0.5000"' in html
    assert "v_K (AUROC 0.875)" in html and "sum r_k (AUROC 0.625)" in html
    for chart in ("dist", "traj", "maxpos", "roc"):
        assert f'data-chart="{chart}"' in html


def test_shading_is_monotone_in_the_reward() -> None:
    alphas = [shade(r, 2.0) for r in (0.0, 0.01, 0.5, 1.0, 2.0, 3.0)]
    assert alphas[0] == "transparent"
    values = [float(a.rsplit(",", 1)[1].rstrip(")")) for a in alphas[1:]]
    assert values == sorted(values) and values[-1] == values[-2] == 0.9


def test_the_page_is_self_contained(tmp_path: Path, arithmetic: Path) -> None:
    html = write_report([arithmetic], tmp_path / "r.html").path.read_text(encoding="utf-8")
    assert "<script src" not in html.lower() and "<link" not in html.lower()
    assert html.count("<script") >= 2 and "Plotly.newPlot" in html
    assert html.count("* plotly.js v") == 1  # plotly.js inlined once, for every chart


def test_the_sample_is_seeded(tmp_path: Path, arithmetic: Path) -> None:
    def sample(seed: int) -> list[str]:
        out = tmp_path / f"r{seed}.html"
        write_report([arithmetic], out, ReportOptions(sample=2, seed=seed))
        return trace_ids(out.read_text(encoding="utf-8"))

    first = sample(0)
    assert len(first) == 4 and first == sample(0)
    assert len({tuple(sample(seed)) for seed in range(1, 5)} | {tuple(first)}) > 1


def test_group_tables_by_generator_and_by_a_named_column(tmp_path: Path, arithmetic: Path) -> None:
    html = write_report(
        [arithmetic], tmp_path / "r.html", ReportOptions(by=("question_id",))
    ).path.read_text()
    assert "<h3>by generator</h3>" in html and "<h3>by question_id</h3>" in html
    assert "<h3>by source_file</h3>" in html
    with pytest.raises(DatasetError, match="--by nope: no such column"):
        write_report([arithmetic], tmp_path / "r.html", ReportOptions(by=("nope",)))


def test_the_size_bound_shrinks_the_sample_and_is_enforced(tmp_path: Path, arithmetic: Path) -> None:
    full = write_report([arithmetic], tmp_path / "full.html", ReportOptions(sample=6))
    none = write_report([arithmetic], tmp_path / "none.html", ReportOptions(sample=0))
    bound = (full.bytes + none.bytes) // 2
    trimmed = write_report([arithmetic], tmp_path / "trim.html", ReportOptions(sample=6, max_bytes=bound))
    assert trimmed.bytes <= bound and trimmed.sample_per_outcome < 6
    assert any(f"over {bound} bytes" in note for note in trimmed.notes)
    with pytest.raises(DatasetError, match="without any sampled trace"):
        write_report([arithmetic], tmp_path / "tiny.html", ReportOptions(max_bytes=none.bytes - 1))


def test_the_audit_log_report_says_what_it_lacks(tmp_path: Path) -> None:
    log = write_audit_log(tmp_path / "log", {"t1": [-2.0, -1.5, -1.6, -1.3], "t2": [-1.0, -1.2]})
    result = write_report([log], tmp_path / "r.html")
    html = result.path.read_text(encoding="utf-8")
    assert "What this input lacks" in html and "step texts, v_k, mig_k, W_k" in html
    assert 'data-chart="traj"' not in html and 'data-chart="roc"' not in html
    steps = sorted((int(k), round(float(r), 9)) for k, r, _ in STEP.findall(html))
    assert steps == [(1, 0.0), (1, 0.5), (2, 0.0), (3, 0.2)]  # t1: r = .5, 0, .2; t2: r = 0
    assert 'title="step 1: v_k = n/a, mig_k = n/a, W_k = n/a, r_k = 0.5000"' in html


def test_a_built_dataset_and_an_audit_log_in_one_report(tmp_path: Path) -> None:
    dataset = write_labelled_dataset(tmp_path / "labelled")
    log = write_audit_log(tmp_path / "log", {"L1": [-2.0, -1.0]}, outcome=0)
    html = write_report([dataset, log], tmp_path / "r.html", ReportOptions(sample=6)).path.read_text()
    assert sorted(trace_ids(html)) == ["A", "B", "C", "D", "L1"]
    assert "the audit-log rows lack the step texts" in html and "<h3>by dataset</h3>" in html
    assert 'title="step 1: v_k = n/a, mig_k = n/a, W_k = n/a, r_k = 1.0000"' in html  # the log's one step
    assert 'data-chart="traj"' in html  # the dataset's traces still have trajectories


def test_the_roc_shows_the_outcomes_own_curve_beside_the_scores(tmp_path: Path) -> None:
    html = write_report([write_labelled_dataset(tmp_path / "labelled")], tmp_path / "r.html").path.read_text()
    # the worked example's outcome equals is_correct: the free baseline is perfect
    assert "outcome (baseline) (AUROC 1.000)" in html and "v_K (AUROC 0.875)" in html


def test_the_roc_axes_keep_their_unit_range() -> None:
    from mig_annotator.builder.evaluation.ranking import roc_curve
    from mig_annotator.builder.report.charts import roc

    curve = roc_curve([True, False, True, False], [0.9, 0.1, 0.4, 0.6])
    assert curve is not None
    layout = roc({"v_K": curve}, "is_correct").layout
    # square by scaleanchor; the plot area shrinks, the 0..1 ranges stay (constrain="range" widens x)
    assert tuple(layout.xaxis.range) == (0, 1) and layout.xaxis.constrain == "domain"
    assert tuple(layout.yaxis.range) == (0, 1) and layout.yaxis.constrain == "domain"


def test_group_tables_scroll_and_wrap_inside_the_page(tmp_path: Path, arithmetic: Path) -> None:
    html = write_report([arithmetic], tmp_path / "r.html").path.read_text(encoding="utf-8")
    assert '<h3>by source_file</h3><div class="table-scroll"><table class="groups">' in html
    assert ".table-scroll { max-width: 100%; overflow-x: auto; }" in html
