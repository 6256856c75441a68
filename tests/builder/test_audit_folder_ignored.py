"""The default audit folder `mig-audit` (relative to where `serve` runs) is git-ignored."""

from __future__ import annotations

import subprocess

from tests.builder.conftest import REPO


def test_the_default_audit_folder_is_git_ignored() -> None:
    done = subprocess.run(
        ["git", "check-ignore", "-q", "mig-audit/segment-0001.parquet"], cwd=REPO, capture_output=True
    )
    assert done.returncode == 0
