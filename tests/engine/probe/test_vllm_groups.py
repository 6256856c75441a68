"""GRPO groups in the vLLM backends' request planning and result assembly (pure logic, no vLLM).

A stand-in for vLLM scores each request by its prompt alone (as a deterministic model does), so grouped and
ungrouped plans must give identical arrays; an ideal token-level prefix cache shows what the wave order lets
the engine skip.
"""

from __future__ import annotations

import zlib

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from mig_annotator.engine.probe.groups import grouped_minimal_tokens
from mig_annotator.engine.probe.registry import parse_probe_settings
from mig_annotator.engine.probe.settings import VLLMProbeSettings, VLLMServerProbeSettings
from mig_annotator.engine.probe.vllm_common import ProbeRequest, ResultCollector, plan_requests
from mig_annotator.engine.prompt import ProbeSequence
from tests.engine.probe.sequences import probe_sequence


def _model(request: ProbeRequest) -> np.ndarray:
    """A deterministic stand-in for the probe: answer log-probs that depend on the whole prompt."""
    seed = zlib.crc32(np.asarray(request.prompt, dtype=np.int64).tobytes())
    return -np.random.default_rng(seed).uniform(0.01, 5.0, size=len(request.answer_ids))


def _collect(sequences: list[ProbeSequence], *, group_prefixes: bool) -> ResultCollector:
    plan = plan_requests(sequences, group_prefixes=group_prefixes)
    collector = ResultCollector(sequences, plan.groups)
    for request in plan.all():
        collector.put(request, _model(request), len(request.prompt))
    return collector


def _forwarded_with_ideal_cache(requests: list[ProbeRequest], cache: list[list[int]]) -> int:
    """Tokens an engine with a token-level prefix cache prefills for ``requests`` sent one after another."""
    forwarded = 0
    for request in requests:
        cached = max((_common_prefix(request.prompt, earlier) for earlier in cache), default=0)
        forwarded += len(request.prompt) - cached
        cache.append(request.prompt)
    return forwarded


def _common_prefix(first: list[int], second: list[int]) -> int:
    length = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        length += 1
    return length


# three completions of one question, one of another, a third completion of the first question
BATCH = [
    probe_sequence((1, 2, 3), [(10, 11), (12,)], (7,)),
    probe_sequence((1, 2, 3), [(20,), (21, 22), (23,)], (7,)),
    probe_sequence((5, 6, 4), [(30,)], (7,)),
    probe_sequence((1, 2, 3), [(40, 41)], (7,)),
]


def test_only_the_first_member_of_a_group_sends_probe_zero() -> None:
    plan = plan_requests(BATCH)
    assert [group.members for group in plan.groups] == [(0, 1, 3), (2,)]
    assert [[r.k for r in requests] for requests in plan.per_sequence] == [[2, 1, 0], [3, 2, 1], [1, 0], [1]]
    assert [(r.item, r.k) for r in plan.all() if r.k == 0] == [(0, 0), (2, 0)]
    ungrouped = plan_requests(BATCH, group_prefixes=False)
    assert [[r.k for r in requests] for requests in ungrouped.per_sequence] == [
        [2, 1, 0], [3, 2, 1, 0], [1, 0], [1, 0]
    ]  # fmt: skip


def test_each_members_longest_probe_is_in_the_first_wave_and_probe_zero_after() -> None:
    first, rest = plan_requests(BATCH).waves()
    assert [(r.item, r.k) for r in first] == [(0, 2), (1, 3), (2, 1), (3, 1)]
    assert [(r.item, r.k) for r in rest] == [(0, 1), (0, 0), (1, 2), (1, 1), (2, 0)]
    assert sorted((r.item, r.k) for r in first + rest) == sorted(
        (r.item, r.k) for r in plan_requests(BATCH).all()
    )


def test_the_groups_prefix_zero_row_is_copied_into_every_member() -> None:
    grouped = _collect(BATCH, group_prefixes=True)
    ungrouped = _collect(BATCH, group_prefixes=False)
    assert grouped.missing() == []
    for mine, reference in zip(grouped.outputs, ungrouped.outputs, strict=True):
        np.testing.assert_array_equal(mine, reference)
    np.testing.assert_array_equal(grouped.outputs[1][0], grouped.outputs[0][0])
    np.testing.assert_array_equal(grouped.outputs[3][0], grouped.outputs[0][0])
    assert not np.array_equal(grouped.outputs[2][0], grouped.outputs[0][0])  # another question


def test_probe_zero_tokens_count_once_on_the_groups_first_member() -> None:
    grouped = _collect(BATCH, group_prefixes=True)
    ungrouped = _collect(BATCH, group_prefixes=False)
    probe_zero = len(BATCH[0].probe_ids(0))  # header 3 + continuation 3
    assert probe_zero == 6
    assert grouped.forwarded[0] == ungrouped.forwarded[0] == sum(len(BATCH[0].probe_ids(k)) for k in range(3))
    assert grouped.forwarded[1] == ungrouped.forwarded[1] - probe_zero
    assert grouped.forwarded[3] == ungrouped.forwarded[3] - probe_zero
    assert grouped.forwarded[2] == ungrouped.forwarded[2]
    assert sum(ungrouped.forwarded) == sum(s.naive_tokens for s in BATCH)


def test_a_member_without_steps_gets_no_request_and_still_its_row() -> None:
    sequences = [probe_sequence((1, 2), [(10,)], (7, 8)), probe_sequence((1, 2), [], (7, 8))]
    plan = plan_requests(sequences)
    assert plan.per_sequence[1] == []
    first, rest = plan.waves()
    assert [(r.item, r.k) for r in first + rest] == [(0, 1), (0, 0)]
    collector = _collect(sequences, group_prefixes=True)
    assert collector.missing() == [] and collector.forwarded[1] == 0
    np.testing.assert_array_equal(collector.outputs[1], collector.outputs[0][:1])


def test_the_waves_forward_the_grouped_minimum_through_an_ideal_prefix_cache() -> None:
    first, rest = plan_requests(BATCH).waves()
    cache: list[list[int]] = []
    forwarded = _forwarded_with_ideal_cache(first, cache) + _forwarded_with_ideal_cache(rest, cache)
    assert forwarded == grouped_minimal_tokens(BATCH) == 43
    assert grouped_minimal_tokens(BATCH, enabled=False) == sum(s.minimal_tokens for s in BATCH) == 55


@given(
    st.lists(
        st.tuples(
            st.sampled_from([(1, 2), (1, 2, 3), (5,)]),
            st.lists(st.lists(st.integers(10, 40), min_size=1, max_size=3).map(tuple), max_size=4),
            st.sampled_from([(7,), (7, 8)]),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_grouped_scoring_equals_scoring_one_by_one(shapes: list) -> None:
    sequences = [probe_sequence(header, steps, answer) for header, steps, answer in shapes]
    plan = plan_requests(sequences)
    assert sum(1 for r in plan.all() if r.k == 0) == len(plan.groups)
    grouped = _collect(sequences, group_prefixes=True)
    assert grouped.missing() == []
    for index, sequence in enumerate(sequences):
        alone = _collect([sequence], group_prefixes=True)
        np.testing.assert_array_equal(grouped.outputs[index], alone.outputs[0])
    first, rest = plan.waves()
    cache: list[list[int]] = []
    cached_total = _forwarded_with_ideal_cache(first, cache) + _forwarded_with_ideal_cache(rest, cache)
    assert cached_total <= grouped_minimal_tokens(sequences)  # equal unless steps coincide across members


def test_group_prefixes_is_on_by_default_for_both_vllm_probes_and_can_be_turned_off() -> None:
    assert VLLMServerProbeSettings().group_prefixes and VLLMProbeSettings().group_prefixes
    settings = parse_probe_settings({"backend": "vllm-server", "group_prefixes": False})
    assert isinstance(settings, VLLMServerProbeSettings) and settings.group_prefixes is False
    assert "prefix-0 probe once per group" in (
        VLLMProbeSettings.model_fields["group_prefixes"].description or ""
    )
