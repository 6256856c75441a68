"""Recovering the audit journal that a crash left behind is reported at info level, not as a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mig_annotator.service.audit import recover
from tests.service.test_audit_log import _record


def test_recovery_after_a_crash_is_logged_at_info(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A journal left by a crash, torn last line included, is the expected aftermath of kill -9: the
    operator sees what was recovered at info level, and no warning."""
    journal = tmp_path / "audit-20260101T000000-1-abcdef-000001.journal"
    rows = "".join(_record(i).model_dump_json() + "\n" for i in range(3))
    journal.write_text(rows + _record(9).model_dump_json()[:40])
    with caplog.at_level(logging.INFO, logger="mig.service"):
        assert recover(tmp_path) == 1
    messages = [
        (record.levelno, record.getMessage()) for record in caplog.records if record.name == "mig.service"
    ]
    assert [level for level, _ in messages if level >= logging.WARNING] == []
    recovered = [text for level, text in messages if level == logging.INFO and journal.name in text]
    assert any("3 rows" in text and "segment" in text for text in recovered), messages
    assert any("cut off" in text for text in recovered), messages
