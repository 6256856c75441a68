"""Every audit query is bounded in time and memory, with errors naming the limit and its flag."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mig_annotator.builder.audit.database import AuditDatabase, AuditLimits, AuditQueryError, discover_sources
from tests.builder.conftest import CLI, REPO
from tests.builder.test_audit import FIXTURE_A, write_dataset

# A child's ru_maxrss counts the memory of the process it was forked from until it execs (Linux keeps the
# old address space's high-water mark), so a command started straight from this pytest process (hundreds of
# MB once torch is imported) would report at least that much. It is started from a small Python launcher
# instead, which reports its own child's peak.
_PEAK_LAUNCHER = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def run_with_peak_rss(args: list[str], peak_file: Path) -> tuple[int, str, float]:
    """Run ``args`` in the repository; its exit code, its stderr and its peak RSS in MB."""
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_LAUNCHER, str(peak_file), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=600,
    )
    return result.returncode, result.stderr, int(peak_file.read_text()) / 1024


CROSS_JOIN_QUERY = "select string_agg(repeat(a.trace_id, 100000), ',') from annotations a, annotations b"
RUNAWAY_QUERIES = {
    "string_agg of repeat over a cross join": CROSS_JOIN_QUERY.replace(
        "annotations b", "annotations b, annotations c, annotations d"
    ),
    "recursive CTE to 1e9": (
        "with recursive r(n) as (select 1 union all select n + 1 from r where n < 1000000000) "
        "select count(*) from r"
    ),
    "4-way cross join": (
        "select count(*) from annotations a, annotations b, annotations c, annotations d, "
        "range(1000000) e, range(1000000) f"
    ),
}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "a", FIXTURE_A, "c1")


@pytest.mark.parametrize("sql", list(RUNAWAY_QUERIES.values()), ids=list(RUNAWAY_QUERIES))
def test_runaway_queries_stop_within_seconds_with_an_error_naming_the_limit(dataset: Path, sql: str) -> None:
    limits = AuditLimits(memory_limit_mb=64, timeout_s=2, threads=1)
    with AuditDatabase(discover_sources([dataset]), limits) as db:
        started = time.monotonic()
        with pytest.raises(AuditQueryError) as error:
            db.user_query(sql)
        elapsed = time.monotonic() - started
        assert elapsed < 10
        message = str(error.value)
        assert ("memory limit of 64 MB" in message and "--memory-limit-mb" in message) or (
            "timeout of 2 s" in message and "--timeout-s" in message
        )
        # the connection still answers after an interrupted or failed query
        assert db.user_query("select count(*) from annotations").rows == [(len(FIXTURE_A),)]


def test_the_timeout_interrupts_a_query_that_needs_no_memory(dataset: Path) -> None:
    with AuditDatabase(discover_sources([dataset]), AuditLimits(timeout_s=1)) as db:
        started = time.monotonic()
        with pytest.raises(AuditQueryError, match=r"timeout of 1 s \(raise it with --timeout-s\)"):
            db.user_query(RUNAWAY_QUERIES["recursive CTE to 1e9"])
        assert time.monotonic() - started < 6


def test_the_default_limits_bound_every_query() -> None:
    limits = AuditLimits()
    assert limits.memory_limit_mb == 1024 and limits.timeout_s == 60 and limits.threads == 2


def test_cli_audit_stops_a_string_agg_cross_join_with_bounded_memory(dataset: Path, tmp_path: Path) -> None:
    sql = RUNAWAY_QUERIES["string_agg of repeat over a cross join"]
    args = [*CLI, "audit", str(dataset), "--sql", sql, "--memory-limit-mb", "64", "--timeout-s", "5"]
    args += ["--threads", "1"]
    started = time.monotonic()
    code, stderr, peak_mb = run_with_peak_rss(args, tmp_path / "peak")
    elapsed = time.monotonic() - started
    assert code != 0
    assert "memory limit of 64 MB" in stderr and "--memory-limit-mb" in stderr
    assert peak_mb < 1024  # unbounded, this query reached 9 GB
    assert elapsed < 60


def test_a_result_over_the_row_limit_is_stopped_naming_the_flag(dataset: Path) -> None:
    with AuditDatabase(discover_sources([dataset]), AuditLimits(max_rows=5000)) as db:
        with pytest.raises(AuditQueryError, match=r"more than 5,000 rows \(raise it with --max-rows"):
            db.user_query("SELECT range FROM range(100000000)")
        assert len(db.user_query("SELECT range FROM range(5000)").rows) == 5000


def test_a_result_over_the_byte_limit_is_stopped_naming_the_flag(dataset: Path) -> None:
    limits = AuditLimits(max_result_mb=4)
    with (
        AuditDatabase(discover_sources([dataset]), limits) as db,
        pytest.raises(AuditQueryError, match=r"more than 4 MB \(raise it with --max-result-mb"),
    ):
        db.user_query("SELECT repeat('x', 1000000) AS s FROM range(10)")


@pytest.mark.parametrize(
    "sql",
    ["SELECT list(range(1000000000))", "SELECT length(repeat('x', 2000000000))"],
    ids=["list", "repeat"],
)
def test_values_built_past_the_memory_limit_stop_with_an_error_naming_it(dataset: Path, sql: str) -> None:
    limits = AuditLimits(memory_limit_mb=64, threads=1)
    with AuditDatabase(discover_sources([dataset]), limits) as db:
        with pytest.raises(AuditQueryError, match=r"memory limit of 64 MB \(raise it with --memory-limit-mb"):
            db.user_query(sql)
        assert db.user_query("select count(*) from annotations").rows == [(len(FIXTURE_A),)]


def test_cli_audit_stops_a_result_of_millions_of_rows_with_bounded_memory(
    dataset: Path, tmp_path: Path
) -> None:
    args = [*CLI, "audit", str(dataset), "--sql", "SELECT range FROM range(100000000)", "--max-rows", "1000"]
    code, stderr, peak_mb = run_with_peak_rss(args, tmp_path / "peak")
    assert code != 0
    assert "more than 1,000 rows (raise it with --max-rows" in stderr
    assert peak_mb < 512  # the unbounded result passed 6 GB
