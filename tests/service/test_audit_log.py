"""The audit log: one row per served trace with the right values, crash-safe segments, visible failures."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mig_annotator.cli.app import app
from mig_annotator.engine.probe.base import Probe
from mig_annotator.schemas import TraceAnnotation
from mig_annotator.schemas.api import AuditRecord
from mig_annotator.service.annotation_service import trace_sha256
from mig_annotator.service.app import create_app
from mig_annotator.service.audit import AUDIT_SCHEMA, AuditLog, recover
from mig_annotator.service.metrics import ServiceMetrics
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server, small_traces, trace_json


def _record(index: int, request_id: str = "req") -> AuditRecord:
    return AuditRecord(
        request_id=request_id,
        received_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        endpoint="/v1/annotate",
        api_key_id=None,
        trace_id=f"t{index}",
        trace_sha256="0" * 64,
        config_hash="abc",
        probe_model="m",
        probe_identity="transformers:m:float32:0123456789abcdef",
        v0=-1.0,
        v_final=-1.0 + 0.5 * index,
        n_steps=2,
        step_rewards=[0.0, 0.5 * index],
        process_reward=0.5 * index,
        max_reward=0.5 * index,
        outcome=index % 2,
        sft_gate=False,
        truncated=False,
        latency_ms=12.5,
    )


def _rows(directory: Path) -> list[dict[str, object]]:
    segments = sorted(directory.glob("*.parquet"))
    return [row for segment in segments for row in pq.read_table(segment).to_pylist()]


def test_the_arrow_schema_has_every_audit_field_with_its_type() -> None:
    assert AUDIT_SCHEMA.names == list(AuditRecord.model_fields)
    assert str(AUDIT_SCHEMA.field("step_rewards").type) == "list<element: double not null>"
    assert str(AUDIT_SCHEMA.field("received_at").type) == "timestamp[us, tz=UTC]"
    assert AUDIT_SCHEMA.field("api_key_id").nullable and not AUDIT_SCHEMA.field("trace_id").nullable


@pytest.mark.model
def test_every_served_trace_gets_one_row_with_its_values(probe: Probe, tmp_path: Path) -> None:
    settings = ServiceSettings(audit_dir=tmp_path, api_keys={"trainer-a": "sk-a"}, audit_flush_s=60)
    traces = small_traces(5, prefix="audit-")
    served: list[tuple[str, TraceAnnotation]] = []
    with live_server(create_app(settings, probe=probe)) as url:
        headers = {"Authorization": "Bearer sk-a"}
        for body in (
            {"traces": [trace_json(t) for t in traces[:3]]},
            {"traces": [trace_json(t) for t in traces[3:]]},
        ):
            response = httpx.post(f"{url}/v1/annotate", json=body, headers=headers, timeout=300)
            assert response.status_code == 200
            for item in response.json()["annotations"]:
                served.append((response.json()["request_id"], TraceAnnotation.model_validate(item)))
        refused = httpx.post(f"{url}/v1/annotate", json={"traces": []}, headers=headers)
        assert refused.status_code == 422  # refused requests are not audited
    # the server has shut down: everything is sealed into Parquet, no journal is left
    assert not list(tmp_path.glob("*.journal"))
    rows = _rows(tmp_path)
    assert len(rows) == 5
    by_trace = {row["trace_id"]: row for row in rows}
    for (request_id, annotation), trace in zip(served, traces, strict=True):
        row = by_trace[trace.id]
        assert row["request_id"] == request_id
        assert row["api_key_id"] == "trainer-a"
        assert row["trace_sha256"] == trace_sha256(trace)
        assert row["config_hash"] == annotation.config_hash
        assert row["probe_model"] == "SmolLM2-135M-Instruct"
        assert row["probe_identity"] == annotation.probe_identity == probe.identity().fingerprint
        assert row["v0"] == annotation.v0
        assert row["step_rewards"] == [step.reward for step in annotation.steps]
        assert row["n_steps"] == len(annotation.steps) == 2
        assert row["v_final"] == annotation.steps[-1].v
        assert row["process_reward"] == annotation.process_reward
        assert row["max_reward"] == annotation.max_reward
        assert row["outcome"] == annotation.outcome and row["sft_gate"] == annotation.sft_gate
        assert row["latency_ms"] > 0
        assert row["endpoint"] == "/v1/annotate"
        assert row["received_at"].tzinfo is not None
    assert "sk-a" not in str(rows)


def test_segments_are_queryable_with_duckdb(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    log = AuditLog(tmp_path, segment_rows=2, flush_s=60, max_pending=100, metrics=ServiceMetrics())
    log.start()
    log.append([_record(i) for i in range(5)])
    assert log.flush()
    log.close()
    assert len(list(tmp_path.glob("*.parquet"))) == 3  # 2 + 2 + 1 rows
    pattern = str(tmp_path / "*.parquet")
    ((count, total),) = duckdb.sql(f"select count(*), sum(outcome) from read_parquet('{pattern}')").fetchall()
    assert (count, total) == (5, 2)


def test_the_builders_audit_command_reads_the_service_log(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, segment_rows=4, flush_s=60, max_pending=100, metrics=ServiceMetrics())
    log.start()
    log.append([_record(i) for i in range(6)])
    log.close()
    runner = CliRunner()
    report = runner.invoke(app, ["audit", str(tmp_path), "-r", "distribution", "--format", "json"])
    assert report.exit_code == 0, report.output
    (distribution,) = json.loads(report.output)
    (row,) = distribution["rows"]
    assert (row["traces"], row["outcome_rate"], row["steps_mean"]) == (6, 0.5, 2.0)
    sql = "select count(*) as n, sum(outcome) as correct from annotations"
    query = runner.invoke(app, ["audit", str(tmp_path), "--sql", sql, "--format", "json"])
    assert query.exit_code == 0, query.output
    assert json.loads(query.output)[0]["rows"] == [{"n": 6, "correct": 3}]


def test_a_crash_leaves_whole_rows_and_recovery_never_duplicates(tmp_path: Path) -> None:
    journal = tmp_path / "audit-20260101T000000-1-abcdef-000001.journal"
    rows = "".join(_record(i).model_dump_json() + "\n" for i in range(3))
    journal.write_text(rows + _record(9).model_dump_json()[:40])  # killed mid-write: a torn last line
    assert recover(tmp_path) == 1
    assert [row["trace_id"] for row in _rows(tmp_path)] == ["t0", "t1", "t2"]
    assert not journal.exists()
    # a crash after the segment was renamed but before the journal was deleted: no second copy
    journal.write_text(rows)
    assert recover(tmp_path) == 1
    assert len(_rows(tmp_path)) == 3
    assert not list(tmp_path.glob(".*.tmp"))


def test_recovery_leaves_a_live_writers_journal_alone(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, segment_rows=100, flush_s=60, max_pending=100, metrics=ServiceMetrics())
    log.start()
    log.append([_record(0)])
    deadline = datetime.now(UTC).timestamp() + 10
    while not list(tmp_path.glob("*.journal")) and datetime.now(UTC).timestamp() < deadline:
        time.sleep(0.05)
    assert recover(tmp_path) == 0  # the journal is locked by the running writer
    log.close()
    assert len(_rows(tmp_path)) == 1


def test_a_failing_directory_shows_in_metrics_and_status_then_recovers_without_loss(tmp_path: Path) -> None:
    metrics = ServiceMetrics()
    directory = tmp_path / "audit"
    log = AuditLog(directory, segment_rows=100, flush_s=0.2, max_pending=100, metrics=metrics)
    log.start()
    shutil.rmtree(directory)
    directory.write_text("not a directory")  # the audit directory is now unusable
    log.append([_record(0), _record(1)])
    assert not log.flush(timeout_s=1.5)
    assert log.status == "failing" and "cannot be written" in (log.error or "")
    assert metrics.audit_write_errors._value.get() >= 1
    directory.unlink()
    directory.mkdir()
    assert log.flush(timeout_s=10)
    assert log.status == "ok"
    log.close()
    assert sorted(row["trace_id"] for row in _rows(directory)) == ["t0", "t1"]


def test_rows_beyond_the_pending_limit_are_dropped_and_counted(tmp_path: Path) -> None:
    metrics = ServiceMetrics()
    log = AuditLog(tmp_path / "a", segment_rows=100, flush_s=60, max_pending=3, metrics=metrics)
    log.append([_record(i) for i in range(2)])  # not started: rows wait in memory
    log.append([_record(i) for i in range(2, 4)])
    assert metrics.audit_rows_dropped._value.get() == 2
    assert log.status == "failing"


@pytest.mark.model
def test_readyz_reports_a_failing_audit_log_while_annotations_are_still_served(
    probe: Probe, tmp_path: Path
) -> None:
    directory = tmp_path / "audit"
    settings = ServiceSettings(audit_dir=directory, audit_flush_s=0.2)
    with live_server(create_app(settings, probe=probe)) as url:
        shutil.rmtree(directory)
        directory.write_text("in the way")
        response = httpx.post(
            f"{url}/v1/annotate", json={"trace": trace_json(small_traces(1)[0])}, timeout=300
        )
        assert response.status_code == 200
        deadline = datetime.now(UTC).timestamp() + 10
        while httpx.get(f"{url}/readyz").status_code == 200 and datetime.now(UTC).timestamp() < deadline:
            pass
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["audit"] == "failing" and "cannot be written" in ready.json()["detail"]
        directory.unlink()
        directory.mkdir()
        deadline = datetime.now(UTC).timestamp() + 10
        while httpx.get(f"{url}/readyz").status_code != 200 and datetime.now(UTC).timestamp() < deadline:
            pass
        assert httpx.get(f"{url}/readyz").status_code == 200
    assert len(_rows(directory)) == 1
