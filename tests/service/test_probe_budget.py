"""The per-request probe budget follows the probe being served: measured on a calibration pass (and while
serving) as tokens per second x the request deadline, shown in GET /v1/info and used by admission; an
explicit setting wins."""

from __future__ import annotations

import time

import httpx
import pytest

from mig_annotator.engine.probe.fake import FakeProbe
from mig_annotator.service.app import create_app
from mig_annotator.service.probe_budget import MIN_BUDGET_TOKENS
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server, small_traces, trace_json

TIMEOUT_S = 4.0


def _measured_limits(url: str) -> dict[str, object]:
    """/v1/info's limits once the calibration pass has measured the probe."""
    deadline = time.monotonic() + 60
    while True:
        limits = httpx.get(f"{url}/v1/info").json()["limits"]
        if limits["probe_budget_source"] != "default" or time.monotonic() > deadline:
            return limits
        time.sleep(0.05)


def _slow_probe_service(delay_per_token_s: float, **settings: object):
    probe = FakeProbe(delay_per_token_s=delay_per_token_s)
    service_settings = ServiceSettings(audit_enabled=False, request_timeout_s=TIMEOUT_S, **settings)
    return live_server(create_app(service_settings, probe=probe))


def test_the_budget_follows_the_probes_per_token_delay() -> None:
    budgets = {}
    for delay in (1e-4, 4e-4):
        with _slow_probe_service(delay) as url:
            limits = _measured_limits(url)
        assert limits["probe_budget_source"] == "measured"
        rate = limits["probe_tokens_per_second"]
        assert isinstance(rate, float)
        # the probe sleeps delay per token (and does some work besides): at most 1/delay tokens per second
        assert 0.25 / delay < rate <= 1.0 / delay
        assert limits["max_request_probe_tokens"] == max(MIN_BUDGET_TOKENS, int(rate * TIMEOUT_S))
        assert 0.0 < limits["probe_tokens_per_byte"] <= 1.0  # the byte tokenizer: about one token a byte
        budgets[delay] = limits["max_request_probe_tokens"]
    # four times the delay per token: about a quarter of the budget
    assert 2.0 < budgets[1e-4] / budgets[4e-4] < 8.0


def test_admission_refuses_a_request_over_the_measured_budget_and_takes_one_within_it() -> None:
    with _slow_probe_service(4e-4) as url:
        budget = _measured_limits(url)["max_request_probe_tokens"]
        assert isinstance(budget, int)
        traces = [trace_json(trace) for trace in small_traces(64)]  # about 330 byte tokens each
        over = httpx.post(f"{url}/v1/annotate", json={"traces": traces}, timeout=30)
        assert over.status_code == 413, over.text
        assert f"over the limit of {budget} per request" in over.json()["message"]
        within = httpx.post(f"{url}/v1/annotate", json={"traces": traces[:4]}, timeout=30)
        assert within.status_code == 200, within.text


@pytest.mark.parametrize(
    ("setting", "expected_budget"),
    [({"max_request_probe_tokens": 12_345}, 12_345), ({"probe_tokens_per_second": 2000.0}, 8000)],
)
def test_an_explicit_setting_wins_over_the_measurement(setting: dict, expected_budget: int) -> None:
    with _slow_probe_service(1e-4, **setting) as url:
        time.sleep(0.5)  # the calibration pass has run: it must not move the budget
        limits = httpx.get(f"{url}/v1/info").json()["limits"]
    assert limits["probe_budget_source"] == "setting"
    assert limits["max_request_probe_tokens"] == expected_budget
