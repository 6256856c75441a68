"""OpenRLHF's remote reward protocol, as its client sends it: one sample per request, many at once.

The request is reproduced from OpenRLHF's source, ``openrlhf/utils/agent.py`` (commit 3c3be62, 2026-08-13),
``SingleTurnExecutor._fetch_rewards_via_http``: right after generating one sample it POSTs
``{"query": [query], "prompts": [prompt], "labels": [label]}`` with a fresh ``aiohttp.ClientSession``
(``ClientTimeout(total=180)``), ``raise_for_status()``, and reads ``rewards`` (one float per query),
``scores`` and ``extra_logs`` from the JSON answer. ``query`` is the decoded prompt + response with the
special tokens kept (``skip_special_tokens=False``), ``prompt`` the chat-templated prompt text. OpenRLHF
itself needs Ray, DeepSpeed and vLLM to import, so its request is reproduced here rather than imported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.client.support import fake_probe
from tests.service.support import live_server, small_traces, trace_json

CHAT_PROMPT = "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    # every probe pass takes 0.2 s, so requests that arrive meanwhile wait and share the next micro-batch
    slow = fake_probe()  # the packaged fake: delay_s slows every probe call
    slow.delay_s = 0.2
    settings = ServiceSettings(exact_batching=False, audit_enabled=False)
    with live_server(create_app(settings, probe=slow)) as base_url:
        yield base_url


async def openrlhf_post(url: str, query: str, prompt: str, label: str) -> dict[str, Any]:
    """OpenRLHF's ``_post_request`` for one sample (its retries aside)."""
    timeout = aiohttp.ClientTimeout(total=180)
    payload = {"query": [query], "prompts": [prompt], "labels": [label]}
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, json=payload) as response,
    ):
        response.raise_for_status()
        return await response.json()  # type: ignore[no-any-return]


def test_64_concurrent_single_sample_requests_are_answered_correctly_and_micro_batched(url: str) -> None:
    traces = small_traces(64, prefix="orl-")
    samples = []
    for trace in traces:
        prompt = CHAT_PROMPT.format(question=trace.question)
        samples.append((prompt + trace.completion + "<|im_end|>", prompt, trace.reference_answer))
    batches_before = metric(url, "mig_batch_traces_count")

    async def all_at_once() -> list[dict[str, Any]]:
        endpoint = f"{url}/v1/openrlhf/reward"
        return list(await asyncio.gather(*(openrlhf_post(endpoint, *sample) for sample in samples)))

    answers = asyncio.run(all_at_once())
    batches = metric(url, "mig_batch_traces_count") - batches_before
    assert 1 <= batches < 64  # micro-batched: fewer probe batches than requests
    assert metric(url, "mig_batch_traces_sum") > metric(url, "mig_batch_traces_count")

    # what the service scores: question = the prompt as sent, completion = the query after it, end marker cut
    as_scored = [
        {**trace_json(t), "question": prompt} for t, (_, prompt, _) in zip(traces, samples, strict=True)
    ]
    expected = httpx.post(f"{url}/v1/annotate", json={"traces": as_scored}, timeout=120).json()["annotations"]
    for answer, annotation in zip(answers, expected, strict=True):
        assert answer["rewards"] == [pytest.approx(annotation["outcome"] + annotation["process_reward"])]
        assert answer["scores"] == [float(annotation["outcome"])]
        assert answer["extra_logs"]["failed"] == [0.0]
    # the outcomes are the traces' own: every third one claims a wrong total
    assert [a["scores"][0] for a in answers] == [0.0 if i % 3 == 0 else 1.0 for i in range(64)]
