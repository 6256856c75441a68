"""The annotation engine: traces in, per-step MIG rewards out.

Segmentation -> probe prompts -> one probe call for the whole batch -> reward math. No I/O here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mig_annotator.mig.probe.base import Probe, ProbeResult
from mig_annotator.mig.prompt import ProbeSequence, PromptBuilder
from mig_annotator.mig.rewards import aggregate_logprobs, outcome_reward, sft_gate, step_rewards
from mig_annotator.mig.segment import (
    SegmentationError,
    SegmentedCompletion,
    segment_completion,
    segment_steps,
)
from mig_annotator.schemas import CharSpan, ScoringConfig, StepScore, Trace, TraceAnnotation


class TraceError(ValueError):
    """A trace cannot be annotated; the message names the trace and the field."""

    def __init__(self, trace_id: str, field: str, problem: str) -> None:
        super().__init__(f"trace {trace_id!r}: {field}: {problem}")
        self.trace_id = trace_id
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class PreparedTrace:
    """A trace segmented and tokenised, ready for the probe."""

    trace: Trace
    segmented: SegmentedCompletion
    sequence: ProbeSequence
    truncated: bool


class Annotator:
    """Annotates traces with one probe; scoring options come per call, with defaults from the constructor."""

    def __init__(self, probe: Probe, default_config: ScoringConfig | None = None) -> None:
        self._probe = probe
        self._default_config = default_config or ScoringConfig()
        self._builders: dict[str, PromptBuilder] = {}

    @property
    def probe(self) -> Probe:
        return self._probe

    @property
    def default_config(self) -> ScoringConfig:
        return self._default_config

    def annotate(self, traces: Sequence[Trace], config: ScoringConfig | None = None) -> list[TraceAnnotation]:
        """Annotations in input order. A bad trace raises :class:`TraceError` before any probe work."""
        config = config or self._default_config
        prepared = [self.prepare(trace, config) for trace in traces]
        results = self._probe.score([item.sequence for item in prepared])
        return [self.finish(item, result, config) for item, result in zip(prepared, results, strict=True)]

    def prepare(self, trace: Trace, config: ScoringConfig) -> PreparedTrace:
        segmented = _segment(trace, config)
        builder = self._builder(config)
        try:
            sequence = builder.build(
                trace.question, [step.text for step in segmented.steps], trace.reference_answer
            )
        except ValueError as error:
            raise TraceError(trace.id, "reference_answer", str(error)) from error
        limit = self._probe.context_limit
        if sequence.probe_length <= limit:
            return PreparedTrace(trace, segmented, sequence, truncated=False)
        answer_tokens = len(sequence.continuation_ids)
        if config.context_limit == "error" or sequence.boundaries[0] + answer_tokens > limit:
            raise TraceError(
                trace.id,
                "completion" if trace.completion is not None else "steps",
                f"the probe input is {sequence.probe_length} tokens (question and steps "
                f"{sequence.boundaries[-1]}, answer prompt {answer_tokens}), over the probe's context limit "
                f"of {limit}; set context_limit='truncate_steps' to score only the leading steps that fit",
            )
        fitting_steps = max(k for k, end in enumerate(sequence.boundaries) if end + answer_tokens <= limit)
        return PreparedTrace(trace, segmented, sequence.truncated(fitting_steps), truncated=True)

    def finish(
        self, item: PreparedTrace, result: ProbeResult, config: ScoringConfig, *, outcome: int | None = None
    ) -> TraceAnnotation:
        """``outcome``: a verdict the caller already computed (e.g. where math-verify can time out)."""
        values = aggregate_logprobs(result.token_logprobs, config.aggregation)
        rewards = step_rewards(values, config.watermark)
        segmented = item.segmented
        answer = segmented.answer
        if outcome is None:
            outcome = outcome_reward(answer.text if answer else None, item.trace.reference_answer)
        steps = [
            StepScore(
                index=k + 1,
                text=step.text,
                span=CharSpan(start=step.start, end=step.end),
                v=float(values[k + 1]),
                mig=float(rewards.mig[k]),
                watermark=float(rewards.watermark[k]),
                reward=float(rewards.reward[k]),
            )
            for k, step in enumerate(segmented.steps[: len(values) - 1])
        ]
        cot_start, cot_end = segmented.cot_span
        return TraceAnnotation(
            trace_id=item.trace.id,
            completion=segmented.completion,
            v0=float(values[0]),
            steps=steps,
            steps_total=len(segmented.steps),
            truncated=item.truncated,
            cot_span=CharSpan(start=cot_start, end=cot_end),
            answer=answer.text if answer else None,
            answer_span=_span(answer),
            answer_part_span=_span(segmented.answer_part),
            outcome=outcome,
            process_reward=rewards.process_reward,
            max_reward=rewards.max_reward,
            sft_gate=sft_gate(outcome, rewards.process_reward, config.sft_threshold),
            probe_model=self._probe.model_id,
            config_hash=config.config_hash(),
            tokens_forwarded=result.tokens_forwarded,
            answer_tokens=item.sequence.n_answer_tokens,
        )

    def _builder(self, config: ScoringConfig) -> PromptBuilder:
        key = config.prompt.model_dump_json()
        if key not in self._builders:
            self._builders[key] = PromptBuilder(self._probe.tokenizer, config.prompt)
        return self._builders[key]


def _segment(trace: Trace, config: ScoringConfig) -> SegmentedCompletion:
    try:
        if trace.steps is not None:
            return segment_steps(trace.steps)
        assert trace.completion is not None
        return segment_completion(trace.completion, config.segmenter, config.step_regex)
    except SegmentationError as error:
        field = "steps" if trace.steps is not None else "completion"
        raise TraceError(trace.id, field, str(error)) from error


def _span(segment: object | None) -> CharSpan | None:
    if segment is None:
        return None
    return CharSpan(start=segment.start, end=segment.end)  # type: ignore[attr-defined]
