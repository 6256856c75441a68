"""Datasets for the report and eval tests, built with the fake probe (fast, deterministic)."""

from __future__ import annotations

from pathlib import Path

from mig_annotator.builder.columns import ColumnMapping
from mig_annotator.builder.pipeline import run_build
from mig_annotator.engine.probe.fake import FakeProbe
from tests.builder.conftest import FAKE_IDENTITY, arithmetic_rows, make_plan, write_jsonl

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PROCESSBENCH_FIXTURE = FIXTURES / "processbench_mini.jsonl"
#: The ProcessBench-format fixture's columns: the steps are given explicitly, `answer` is the gold answer.
PROCESSBENCH_COLUMNS = ColumnMapping(
    id="id", question="problem", completion=None, steps="steps", answer="answer"
)


def build_processbench_dataset(out: Path) -> Path:
    """The ProcessBench-format fixture (steps given explicitly) built with the fake probe."""
    run_build(
        make_plan(FAKE_IDENTITY, [PROCESSBENCH_FIXTURE], out, columns=PROCESSBENCH_COLUMNS), FakeProbe()
    )
    return out


def build_arithmetic_dataset(out: Path, rows: int = 24, seed: int = 5) -> Path:
    """GSM8K-like rollouts (completions, `generator`, `is_correct`) built with the fake probe, two shards."""
    source = write_jsonl(out.parent / f"{out.name}-input.jsonl", arithmetic_rows(rows, seed=seed))
    run_build(
        make_plan(FAKE_IDENTITY, [source], out, shard_rows=rows // 2, window_rows=rows // 2), FakeProbe()
    )
    return out


# trace id -> (is_correct, outcome, v_0..v_K, ProcessBench label); the worked example of the eval tests.
#   A: mig [.5, .5]        v - W [.5, .5]         all steps right
#   B: mig [.5, -1, 1.5]   v - W [.5, -1, .5]     step 1 (0-based) is the first wrong one
#   C: mig [-.5, .2]       v - W [-.5, -.3]       step 1 is the first wrong one
#   D: mig [.2, -.2, .3]   v - W [.2, -.2, .1]    all steps right
STEP_EXAMPLE = {
    "A": (True, 1, [-2.0, -1.5, -1.0], -1),
    "B": (False, 0, [-2.0, -1.5, -2.5, -1.0], 1),
    "C": (False, 0, [-1.0, -1.5, -1.3], 1),
    "D": (True, 1, [-1.0, -0.8, -1.0, -0.7], -1),
}


def write_labelled_dataset(folder: Path, spec: dict = STEP_EXAMPLE) -> Path:
    """A one-shard dataset folder with exact v trajectories, `is_correct` and a ProcessBench `label`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mig_annotator.schemas.arrow import DATASET_ROW_SCHEMA
    from tests.builder.test_audit import fixture_row

    folder.mkdir(parents=True)
    rows = []
    for number, (trace_id, (correct, outcome, values, label)) in enumerate(spec.items(), start=1):
        row = fixture_row(f"t{number}", "g1", correct, outcome, values, "cfg")
        rows.append(row | {"trace_id": trace_id, "label": label})
    schema = (
        DATASET_ROW_SCHEMA.append(pa.field("generator", pa.string()))
        .append(pa.field("is_correct", pa.bool_()))
        .append(pa.field("label", pa.int64()))
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part-00000.parquet")
    (folder / "_manifest.json").write_text("{}")
    (folder / "_SUCCESS").write_text("")
    return folder


def write_audit_log(folder: Path, trajectories: dict[str, list[float]], outcome: int = 1) -> Path:
    """A service audit-log folder (one Parquet segment of AuditRecord rows) for the given v trajectories."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mig_annotator.engine.rewards import step_rewards
    from mig_annotator.schemas.api import AuditRecord
    from mig_annotator.service.audit import AUDIT_SCHEMA

    folder.mkdir(parents=True)
    records = []
    for trace_id, values in trajectories.items():
        rewards = step_rewards(values, "level")
        records.append(
            AuditRecord(
                request_id=f"req-{trace_id}",
                received_at="2026-01-01T00:00:00Z",
                endpoint="/v1/annotate",
                api_key_id=None,
                trace_id=trace_id,
                trace_sha256="0" * 64,
                config_hash="cfg",
                probe_model="probe-1",
                probe_identity="fake:probe-1:float64:0123456789abcdef",
                v0=values[0],
                v_final=values[-1],
                n_steps=len(values) - 1,
                step_rewards=[float(r) for r in rewards.reward],
                process_reward=rewards.process_reward,
                max_reward=rewards.max_reward,
                outcome=outcome,
                sft_gate=outcome == 1 and rewards.process_reward > 0,
                truncated=False,
                latency_ms=10.0,
            ).model_dump()
        )
    pq.write_table(
        pa.Table.from_pylist(records, schema=AUDIT_SCHEMA),
        folder / "audit-20260101T000000-1-abc-0.parquet",
    )
    return folder
