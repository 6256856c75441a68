"""The schemathesis CLI against a live service (fake probe) and its own OpenAPI document: every check but one.

Left out: ``positive_data_acceptance``. Some rules cannot be written in JSON Schema (OpenRLHF's three lists
of equal length, each prompt inside its query; the token and step limits, which depend on the tokenizer and
the server's settings), so a schema-valid request may still get its 422 naming the field. Every other check
runs: no 5xx, documented status codes, content types and headers, responses that match their schemas, and
requests the schema refuses are refused (``negative_data_rejection``), with and without API keys.

(schemathesis' pytest plugin does not load under pytest 9, so its CLI runs in a subprocess; the run is bounded
by examples per operation and by ``--max-time``.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.fake_server import TIMEOUT_S, fake_service

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
LIMITS = {
    "max_body_bytes": 50_000,
    "max_traces_per_request": 3,
    "queue_max_traces": 16,
    "max_steps_per_trace": 16,
    "max_tokens_per_trace": 2048,
}


# A body over ``max_body_bytes`` is refused with 413 before it is validated, schema-valid or not: a
# rejection like the others (fuzzed image parts make large bodies).
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
"""


def _schemathesis(url: str, *options: str, max_time_s: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run in ``cwd``: schemathesis keeps a cache folder there and reads its ``schemathesis.toml``."""
    (cwd / "schemathesis.toml").write_text(CONFIG, encoding="utf-8")
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--mode",
        "all",
        "--max-examples",
        "25",
        "--max-time",
        str(max_time_s),
        "--seed",
        "20261130",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        *options,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=max_time_s + 240, cwd=cwd)


def _count(metrics: str, endpoint: str, status: str) -> float:
    pattern = rf'^mig_requests_total\{{endpoint="{re.escape(endpoint)}",status="{status}"\}} (\S+)$'
    return sum(float(match) for match in re.findall(pattern, metrics, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def open_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fake_service(tmp_path_factory.mktemp("audit"), **LIMITS) as url:
        yield url


def test_schemathesis_finds_no_failure_and_gets_past_validation(open_url: str, tmp_path: Path) -> None:
    if not SCHEMATHESIS.exists():
        pytest.skip(f"schemathesis is not installed next to {sys.executable}")
    done = _schemathesis(open_url, max_time_s=60, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout or "passed" in done.stdout, done.stdout[-3000:]
    metrics = httpx.get(timeout=TIMEOUT_S, url=f"{open_url}/metrics").text
    # fuzzing that never gets past validation tests nothing: some generated requests were scored
    assert _count(metrics, "/v1/annotate", "200") >= 5
    assert _count(metrics, "/v1/annotate", "422") >= 1  # and some were refused, naming the field
    assert _count(metrics, "/v1/annotate", "500") == 0 and _count(metrics, "other", "500") == 0


def test_schemathesis_with_api_keys_finds_no_failure(tmp_path: Path) -> None:
    """With keys configured the schema declares bearer auth, and requests without a key are refused."""
    if not SCHEMATHESIS.exists():
        pytest.skip(f"schemathesis is not installed next to {sys.executable}")
    with fake_service(api_keys={"fuzz": "fuzz-key-1"}, **LIMITS) as url:
        done = _schemathesis(url, "--header", "Authorization: Bearer fuzz-key-1", max_time_s=20, cwd=tmp_path)
        metrics = httpx.get(
            timeout=TIMEOUT_S, url=f"{url}/metrics", headers={"Authorization": "Bearer fuzz-key-1"}
        ).text
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert _count(metrics, "/v1/annotate", "200") >= 1
    assert _count(metrics, "/v1/annotate", "401") >= 1  # ignored_auth tried without the key
