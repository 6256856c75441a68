"""The transformers probe on the real SmolLM2: packed equals naive, bf16 is close, limits hold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mig_annotator.engine.annotator import Annotator
from mig_annotator.engine.probe.base import Probe
from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.engine.probe.transformers_probe import TransformersProbe
from mig_annotator.schemas import ScoringConfig, Trace
from tests.conftest import FIXTURES


def _fixture_traces() -> list[Trace]:
    with (FIXTURES / "synthetic_traces.jsonl").open() as handle:
        return [Trace.model_validate(json.loads(line)) for line in handle]


def _shared_traces(rows: list[dict], count: int) -> list[Trace]:
    step = len(rows) // count  # spread over problems and generators
    return [
        Trace(
            id=row["id"],
            question=row["question"],
            completion=row["completion"],
            reference_answer=row["reference_answer"],
        )
        for row in rows[::step][:count]
    ]


def _token_logprobs(probe: Probe, traces: list[Trace]) -> list[np.ndarray]:
    annotator = Annotator(probe)
    config = ScoringConfig()
    sequences = [annotator.plan([trace], config)[0].sequence for trace in traces]
    return [result.token_logprobs for result in probe.score(sequences)]


def _max_difference(first: list[np.ndarray], second: list[np.ndarray]) -> float:
    return max(float(np.abs(a - b).max()) for a, b in zip(first, second, strict=True))


def test_the_probe_implements_the_interface(packed_probe: TransformersProbe) -> None:
    assert isinstance(packed_probe, Probe)
    assert packed_probe.context_limit == 8192 and packed_probe.model_id == "SmolLM2-135M-Instruct"


def test_packed_matches_naive_to_1e_4_nats_on_the_fixture(packed_probe, naive_probe) -> None:
    traces = _fixture_traces()
    assert len(traces) >= 50
    packed, naive = _token_logprobs(packed_probe, traces), _token_logprobs(naive_probe, traces)
    assert [a.shape for a in packed] == [b.shape for b in naive]
    assert _max_difference(packed, naive) <= 1e-4


def test_packed_matches_naive_on_the_shared_gsm8k_rollouts(
    packed_probe, naive_probe, shared_rollouts
) -> None:
    traces = _shared_traces(shared_rollouts, 12)  # naive scoring is the cost: 12 spread over problems
    assert (
        _max_difference(_token_logprobs(packed_probe, traces), _token_logprobs(naive_probe, traces)) <= 1e-4
    )


def test_packed_forwards_the_minimal_token_count(packed_probe: TransformersProbe) -> None:
    traces = _fixture_traces()[:8]
    annotator = Annotator(packed_probe)
    sequences = [annotator.plan([trace], ScoringConfig())[0].sequence for trace in traces]
    before = packed_probe.stats.tokens_forwarded
    results = packed_probe.score(sequences)
    assert packed_probe.stats.tokens_forwarded - before == sum(s.minimal_tokens for s in sequences)
    assert [r.tokens_forwarded for r in results] == [s.minimal_tokens for s in sequences]


def test_results_do_not_depend_on_batch_composition(default_model_path, packed_probe) -> None:
    traces = _fixture_traces()[:10]
    batched = _token_logprobs(packed_probe, traces)
    one_row_each = TransformersProbe(
        TransformersProbeSettings(model=str(default_model_path), forward_batch_tokens=64)
    )
    alone = _token_logprobs(one_row_each, traces)
    assert _max_difference(batched, alone) <= 1e-4


def test_bfloat16_packed_is_close_to_float32_and_to_bfloat16_naive(default_model_path, packed_probe) -> None:
    traces = _fixture_traces()[:4]  # bf16 naive scoring is slow on a CPU without AVX512-BF16: 4 traces
    settings = {"model": str(default_model_path), "dtype": "bfloat16"}
    packed_bf16 = _token_logprobs(
        TransformersProbe(TransformersProbeSettings(**settings, mode="packed")), traces
    )
    naive_bf16 = _token_logprobs(
        TransformersProbe(TransformersProbeSettings(**settings, mode="naive")), traces
    )
    fp32 = _token_logprobs(packed_probe, traces)
    mean_error = np.mean([np.abs(a - b).mean() for a, b in zip(packed_bf16, fp32, strict=True)])
    assert mean_error < 0.1  # bf16 rounding, not a different computation
    assert _max_difference(packed_bf16, naive_bf16) < 0.5
    assert _max_difference(packed_bf16, naive_bf16) > 0.0 or mean_error > 0.0  # bf16 really ran


def test_a_sequence_over_the_context_limit_is_refused(packed_probe: TransformersProbe) -> None:
    annotator = Annotator(packed_probe)
    trace = Trace(id="t", question="q?", steps=["one step"], reference_answer="1")
    sequence = annotator.plan([trace], ScoringConfig())[0].sequence
    oversized = type(sequence)(
        sequence.trace_ids * 3000, (len(sequence.trace_ids) * 3000,), sequence.continuation_ids, 1
    )
    with pytest.raises(ValueError, match=r"sequence 0: .* exceed the context limit 8192"):
        packed_probe.score([oversized])


def test_threads_setting_is_applied(default_model_path) -> None:
    import torch

    previous = torch.get_num_threads()
    try:
        TransformersProbe(TransformersProbeSettings(model=str(default_model_path), threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
