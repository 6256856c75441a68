"""Long ids in the report are shown shortened with a hash; the page keeps its sampled traces."""

from __future__ import annotations

import hashlib
import resource
import time
from pathlib import Path

from mig_annotator.builder.report import ReportOptions, write_report
from tests.builder.report_support import write_labelled_dataset


def test_twelve_rows_with_long_ids_give_a_small_page_with_sampled_traces(tmp_path: Path) -> None:
    ids = [f"{i:02d}" + "x" * 900_000 for i in range(12)]
    spec = {trace_id: (i % 2 == 0, i % 2, [-2.0, -1.5 - 0.1 * i, -1.0], -1) for i, trace_id in enumerate(ids)}
    dataset = write_labelled_dataset(tmp_path / "long", spec)
    out = tmp_path / "report.html"
    started = time.monotonic()
    result = write_report([dataset], out, ReportOptions(sample=3, by=("trace_id",)))
    elapsed = time.monotonic() - started
    page = out.read_text(encoding="utf-8")
    assert result.sampled_traces == 6 and result.sample_per_outcome == 3
    assert len(page) < 6_000_000  # the ids alone are 10.8 MB; the inlined Plotly about 4.5 MB
    shown = ids[0][:66] + "…#" + hashlib.md5(ids[0].encode()).hexdigest()[:12]
    assert shown in page and ids[0][:1000] not in page
    assert elapsed < 30
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 < 2048  # MB
