"""`mig-annotator report`: one self-contained HTML page about the rewards of a built dataset or an audit log.

Aggregates run in DuckDB (:mod:`.data`); figures are Plotly (:mod:`.charts`), its JavaScript inlined once;
the page stays under ``max_bytes`` (default :data:`MAX_REPORT_BYTES`) by showing fewer sampled traces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mig_annotator.builder.audit.database import AuditDatabase, discover_sources
from mig_annotator.builder.errors import DatasetError
from mig_annotator.builder.storage import write_bytes_atomic

#: The report's size bound: plotly.js is about 4.8 MB of it; the sampled traces share the rest.
MAX_REPORT_BYTES = 8_000_000


@dataclass(frozen=True)
class ReportOptions:
    by: tuple[str, ...] = ()
    sample: int = 6
    seed: int = 0
    label_col: str | None = None
    drop_bad_labels: bool = False
    max_bytes: int = MAX_REPORT_BYTES
    title: str = "MIG reward report"


@dataclass
class ReportResult:
    path: Path
    bytes: int
    sampled_traces: int
    sample_per_outcome: int
    notes: list[str] = field(default_factory=list)


def write_report(paths: Sequence[Path], out: Path, options: ReportOptions | None = None) -> ReportResult:
    """Write the report on ``paths`` (built datasets and/or audit logs) to ``out``.

    ``options.sample`` traces per outcome are shown; while the page is over ``options.max_bytes`` the sample
    is halved. A page still over the bound without any sampled trace is an error.
    """
    from mig_annotator.builder.report.data import collect
    from mig_annotator.builder.report.page import render_page

    options = options or ReportOptions()
    if options.sample < 0:
        raise DatasetError(f"--sample must be >= 0, got {options.sample}")
    sources = discover_sources(paths)
    notes = [
        f"{s.name}: the build has not finished; reporting the finished shards"
        for s in sources
        if not s.complete
    ]
    sample = options.sample
    with AuditDatabase(sources) as db:
        while True:
            data = collect(
                db,
                by=list(options.by),
                sample=sample,
                seed=options.seed,
                label_col=options.label_col,
                drop_bad_labels=options.drop_bad_labels,
            )
            page = render_page(data, options.title).encode("utf-8")
            if len(page) <= options.max_bytes:
                break
            if sample == 0:
                raise DatasetError(
                    f"the report is {len(page)} bytes without any sampled trace, "
                    f"over the {options.max_bytes} bound"
                )
            sample //= 2
            notes.append(f"the page was over {options.max_bytes} bytes: showing {sample} traces per outcome")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, page)
    return ReportResult(out, len(page), len(data.traces), sample, notes + data.notes)
