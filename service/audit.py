"""The audit log: every served annotation, appended off the request path, sealed into Parquet segments.

Rows go from the request to an in-memory inbox (never blocking the response). A writer thread appends
them, one JSON line per row, to a journal file it holds locked, and seals the journal into a Parquet
segment once it holds ``segment_rows`` rows or ``flush_s`` seconds have passed, and on shutdown:

    <dir>/audit-<utc time>-<pid>-<token>-<seq>.journal   rows being collected (flock held by the writer)
    <dir>/audit-<utc time>-<pid>-<token>-<seq>.parquet   a sealed segment: query <dir>/*.parquet

A segment is written to a hidden temporary file, fsynced and renamed into place, and only then is its
journal deleted, so a crash leaves either a journal or a whole segment, never a partial row in a segment.
At start-up, journals no live writer holds are sealed (or, if their segment already exists, deleted): a
crash loses at most the rows still in memory, and recovery never duplicates a row. If the directory cannot
be written, rows wait in memory (up to ``max_pending``), the failure shows in metrics and /readyz, and
writing resumes when the directory works again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from mig_annotator.engine.atomic_files import atomic_writer, temporaries_of, try_lock
from mig_annotator.schemas.api import AuditRecord
from mig_annotator.schemas.arrow import model_schema
from mig_annotator.service.metrics import ServiceMetrics

logger = logging.getLogger("mig.service")

AuditStatus = Literal["ok", "failing", "disabled"]
JOURNAL_SUFFIX = ".journal"
SEGMENT_SUFFIX = ".parquet"
_RETRY_S = 1.0


AUDIT_SCHEMA = model_schema(AuditRecord)


class AuditLog:
    """Appends :class:`AuditRecord` rows to segmented Parquet under ``directory``; see the module doc."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_rows: int,
        flush_s: float,
        max_pending: int,
        metrics: ServiceMetrics,
    ) -> None:
        self._dir = directory
        self._segment_rows = segment_rows
        self._flush_s = flush_s
        self._max_pending = max_pending
        self._metrics = metrics
        self._inbox: deque[AuditRecord] = deque()
        self._flush_requests: deque[threading.Event] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._token = secrets.token_hex(3)
        self._sequence = 0
        self._journal: _Journal | None = None
        self._error: str | None = None
        self._dropping = False

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def status(self) -> AuditStatus:
        return "failing" if self._error or self._dropping else "ok"

    @property
    def error(self) -> str | None:
        if self._dropping:
            return f"audit rows were dropped: more than {self._max_pending} were pending"
        return self._error

    def start(self) -> None:
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            recover(self._dir)
        except OSError as error:
            self._fail(error)
        self._thread = threading.Thread(target=self._run, name="mig-audit", daemon=True)
        self._thread.start()

    def append(self, records: Sequence[AuditRecord]) -> None:
        """Queue rows for writing; never blocks. Rows over ``max_pending`` are dropped (and counted)."""
        if len(self._inbox) + len(records) > self._max_pending:
            self._dropping = True
            self._metrics.audit_rows_dropped.inc(len(records))
            logger.error("audit log: %d rows dropped (more than %d pending)", len(records), self._max_pending)
            return
        self._inbox.extend(records)
        self._metrics.audit_pending_rows.set(len(self._inbox))
        self._wake.set()

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is pending, seal the last segment, and stop the writer."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.error("audit log: the writer did not finish within %.0fs", timeout_s)
            self._thread = None

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Seal everything written so far into segments now (for tests and operators); True on success."""
        done = threading.Event()
        self._flush_requests.append(done)
        self._wake.set()
        return done.wait(timeout_s)

    def _run(self) -> None:
        while True:
            self._wake.clear()
            stopping = self._stop.is_set()
            flushes = self._take_flush_requests()
            wrote = self._write_inbox()
            journal = self._journal
            if journal is not None and (
                journal.rows >= self._segment_rows
                or time.monotonic() - journal.opened >= self._flush_s
                or stopping
                or flushes
            ):
                self._seal_current()
            if not self._inbox:
                self._dropping = False
            for done in flushes:
                if not self._inbox and self._journal is None:
                    done.set()
                else:
                    self._flush_requests.append(done)
            if stopping and (not self._inbox or self._error):
                if self._inbox:
                    logger.error("audit log: %d rows could not be written before shutdown", len(self._inbox))
                if self._journal is not None:  # sealing failed: the journal is sealed at the next start
                    self._journal.close()
                    self._journal = None
                return
            if not wrote and self._error:
                self._stop.wait(_RETRY_S)
            else:
                self._wake.wait(min(self._flush_s, 1.0))

    def _take_flush_requests(self) -> list[threading.Event]:
        taken = []
        while self._flush_requests:
            taken.append(self._flush_requests.popleft())
        return taken

    def _write_inbox(self) -> bool:
        wrote = False
        while self._inbox:
            record = self._inbox[0]
            try:
                journal = self._journal or self._open_journal()
                journal.write(record)
            except OSError as error:
                self._fail(error)
                return wrote
            self._inbox.popleft()
            self._metrics.audit_rows_written.inc()
            self._metrics.audit_pending_rows.set(len(self._inbox))
            wrote = True
            if journal.rows >= self._segment_rows:
                self._seal_current()
        return wrote

    def _open_journal(self) -> _Journal:
        self._dir.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        stem = f"audit-{stamp}-{os.getpid()}-{self._token}-{self._sequence:06d}"
        self._journal = _Journal.create(self._dir / f"{stem}{JOURNAL_SUFFIX}")
        return self._journal

    def _seal_current(self) -> None:
        journal = self._journal
        if journal is None:
            return
        try:
            seal_journal(journal.path, journal)
        except OSError as error:  # the journal stays open and locked; sealing is tried again later
            self._fail(error)
            return
        journal.close()
        self._journal = None
        self._metrics.audit_segments_written.inc()
        self._recovered()

    def _fail(self, error: OSError) -> None:
        if self._error is None:
            logger.error("audit log under %s cannot be written: %s", self._dir, error)
        self._error = f"audit log under {self._dir} cannot be written: {error}"
        self._metrics.audit_write_errors.inc()

    def _recovered(self) -> None:
        if self._error is not None:
            logger.info("audit log under %s is writable again", self._dir)
        self._error = None


class _Journal:
    """A journal file held open (and locked) by one writer, with the rows it holds."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path = path
        self.descriptor = descriptor
        self.rows = 0
        self.opened = time.monotonic()

    @classmethod
    def create(cls, path: Path) -> _Journal:
        journal = cls.open_locked(path)
        if journal is None:
            raise OSError(f"{path} is locked by another writer")
        return journal

    @classmethod
    def open_locked(cls, path: Path) -> _Journal | None:
        """Open (creating) and lock ``path``; None when another live writer holds the lock."""
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        if not try_lock(descriptor):
            os.close(descriptor)
            return None
        return cls(path, descriptor)

    def write(self, record: AuditRecord) -> None:
        """Append one whole row; on failure the file is cut back so no torn row stays behind."""
        data = (record.model_dump_json() + "\n").encode()
        size = os.fstat(self.descriptor).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.descriptor, view) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.descriptor, size)
            raise
        self.rows += 1

    def read_records(self) -> list[AuditRecord]:
        size = os.fstat(self.descriptor).st_size
        data = os.pread(self.descriptor, size, 0) if size else b""
        return parse_journal(data, self.path)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.descriptor)


def seal_journal(path: Path, journal: _Journal | None = None) -> Path:
    """Turn a journal into its Parquet segment (atomically), then delete the journal. Returns the segment.

    ``journal``: the open journal (read through its descriptor, so its rows survive even if the file's
    name was removed). Without it, the file at ``path`` is read.
    """
    segment = path.with_suffix(SEGMENT_SUFFIX)
    if not segment.exists():
        records = journal.read_records() if journal is not None else parse_journal(path.read_bytes(), path)
        if records:
            path.parent.mkdir(parents=True, exist_ok=True)
            table = pa.Table.from_pylist([r.model_dump() for r in records], schema=AUDIT_SCHEMA)
            with atomic_writer(segment) as handle:
                pq.write_table(table, handle)
    path.unlink(missing_ok=True)
    return segment


def parse_journal(data: bytes, path: Path) -> list[AuditRecord]:
    """The whole rows of a journal's bytes; a torn last line (a crash mid-write) is skipped."""
    records = []
    lines = data.split(b"\n")
    if lines and lines[-1]:  # only a crash mid-write leaves one (a failed write is cut back): expected
        logger.info("audit journal %s: its last line was cut off by a crash; skipped", path)
    for number, line in enumerate(lines[:-1], start=1):
        try:
            records.append(AuditRecord.model_validate_json(line))
        except ValidationError:
            logger.warning("audit journal %s: unreadable line %d skipped", path, number)
    return records


def recover(directory: Path) -> int:
    """Seal journals that no live writer holds (left by a crash); returns how many were recovered."""
    recovered = 0
    for path in sorted(directory.glob(f"*{JOURNAL_SUFFIX}")):
        journal = _Journal.open_locked(path)
        if journal is None:  # a live writer holds it
            continue
        try:
            for leftover in temporaries_of(path.with_suffix(SEGMENT_SUFFIX)):  # we hold its journal's lock
                leftover.unlink(missing_ok=True)
            segment = seal_journal(path, journal)
        finally:
            journal.close()
        rows = pq.read_metadata(segment).num_rows if segment.exists() else 0
        logger.info(
            "audit log: recovered %s, left unsealed by a stopped process: %d rows in segment %s",
            path.name,
            rows,
            segment.name,
        )
        recovered += 1
    if recovered:
        logger.info("audit log: recovered %d journal(s) under %s", recovered, directory)
    return recovered
