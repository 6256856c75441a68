"""Exact batching scores a GRPO group as one unit: one probe call, the question prompt forwarded once, and
numbers that never depend on the other groups in flight (the real SmolLM2 probe behind real HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mig_annotator.engine.probe.base import Probe
from mig_annotator.schemas import Trace, TraceAnnotation
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server, small_traces, trace_json

pytestmark = pytest.mark.model

QUESTION = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for "
    "her friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh "
    "duck egg. How much in dollars does she make every day at the farmers' market?"
)
COMPLETIONS = (  # four rollouts of one question, of about one length: right, right, wrong, wrong
    "Janet uses 3 + 4 = 7 eggs every day.\nShe sells 16 - 7 = 9 eggs.\nShe makes 9 * 2 = 18 dollars.\nA: 18",
    "She eats 3 and bakes 4, so 7 eggs are used.\n16 - 7 = 9 eggs are left.\n9 eggs at $2 is $18.\nA: 18",
    "Janet uses 3 + 4 = 7 eggs every day.\nShe sells 16 - 7 = 8 eggs.\nShe makes 8 * 2 = 16 dollars.\nA: 16",
    "She has 16 eggs and eats 3, so 13 are left.\nShe sells all 13 eggs.\n13 * 2 = 26 dollars.\nA: 26",
)


def _group(prefix: str = "g") -> list[Trace]:
    return [
        Trace(id=f"{prefix}{i}", question=QUESTION, completion=text, reference_answer="18")
        for i, text in enumerate(COMPLETIONS)
    ]


def _annotate(url: str, traces: list[Trace]) -> list[TraceAnnotation]:
    response = httpx.post(f"{url}/v1/annotate", json={"traces": [trace_json(t) for t in traces]}, timeout=300)
    assert response.status_code == 200, response.text
    return [TraceAnnotation.model_validate(a) for a in response.json()["annotations"]]


def _numbers(annotation: TraceAnnotation) -> list[float]:
    """Every number the probe decides: v_0, then each step's v_k, mig, watermark and reward."""
    steps = [value for s in annotation.steps for value in (s.v, s.mig, s.watermark, s.reward)]
    return [annotation.v0, *steps, annotation.process_reward, annotation.max_reward]


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_four_completions_of_one_question_reach_the_probe_as_one_score_call(
    service_url: str, probe: Probe
) -> None:
    calls, sequences = probe.stats.score_calls, probe.stats.traces
    forwarded_before = _metric(service_url, "mig_tokens_forwarded_total")
    served = _annotate(service_url, _group("one-call-"))
    assert (probe.stats.score_calls - calls, probe.stats.traces - sequences) == (1, 4)
    assert [a.trace_id for a in served] == [f"one-call-{i}" for i in range(4)]
    assert [a.outcome for a in served] == [1, 1, 0, 0]
    # the question prompt and v_0 once for the group: the first member carries them, the others less
    forwarded = _metric(service_url, "mig_tokens_forwarded_total") - forwarded_before
    assert forwarded == sum(a.tokens_forwarded for a in served)
    assert all(a.tokens_forwarded < served[0].tokens_forwarded for a in served[1:])
    assert len({a.v0 for a in served}) == 1  # v_0 scored once, the same number for every member


def test_a_trace_scored_within_its_group_equals_the_trace_sent_alone(service_url: str) -> None:
    grouped = _annotate(service_url, _group())
    for trace, within in zip(_group(), grouped, strict=True):
        (alone,) = _annotate(service_url, [trace])
        assert _numbers(within) == pytest.approx(_numbers(alone), abs=1e-5, rel=0)
        assert (within.outcome, len(within.steps)) == (alone.outcome, len(alone.steps))


def test_a_groups_annotations_are_identical_whatever_other_requests_are_in_flight(service_url: str) -> None:
    quiet = _annotate(service_url, _group())

    async def crowd() -> list[httpx.Response]:
        others = small_traces(6, prefix="other-")
        bodies = [
            {"traces": [trace_json(t) for t in others[:3]]},
            {"trace": trace_json(others[3])},
            {"traces": [trace_json(t) for t in _group()]},
            {"traces": [trace_json(t) for t in others[4:]]},
        ]
        async with httpx.AsyncClient(base_url=service_url, timeout=300) as client:
            return await asyncio.gather(*(client.post("/v1/annotate", json=body) for body in bodies))

    responses = asyncio.run(crowd())
    assert [r.status_code for r in responses] == [200] * 4
    in_crowd = [TraceAnnotation.model_validate(a) for a in responses[2].json()["annotations"]]
    assert in_crowd == quiet  # bit-identical floats, not approximately equal


@pytest.fixture(scope="module")
def ungrouped_probe() -> Probe:
    """SmolLM2 (one torch thread, as the session probe) without group prefix sharing."""
    from mig_annotator.engine.probe import TransformersProbeSettings, open_probe

    return open_probe(TransformersProbeSettings(threads=1, group_prefixes=False))


@pytest.fixture(scope="module")
def ungrouped_url(ungrouped_probe: Probe, audit_dir: Path) -> Iterator[str]:
    """A service whose probe does not share group prefixes (MIG_PROBE__GROUP_PREFIXES=false)."""
    settings = ServiceSettings(probe={"group_prefixes": False}, audit_dir=audit_dir / "ungrouped")
    with live_server(create_app(settings, probe=ungrouped_probe)) as url:
        yield url


def test_without_group_prefixes_exact_batching_scores_each_trace_alone(
    ungrouped_url: str, ungrouped_probe: Probe, service_url: str
) -> None:
    calls = ungrouped_probe.stats.score_calls
    served = _annotate(ungrouped_url, _group("alone-"))
    assert ungrouped_probe.stats.score_calls - calls == 4  # one engine call per trace, as before groups
    grouped = _annotate(service_url, _group("shared-"))
    assert sum(a.tokens_forwarded for a in served) > sum(a.tokens_forwarded for a in grouped)
    for trace, annotation in zip(_group(), served, strict=True):
        (alone,) = _annotate(ungrouped_url, [trace])
        assert _numbers(annotation) == _numbers(alone)  # bit-identical: no company at all
