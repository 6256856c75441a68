"""The annotation engine: traces in, per-step MIG rewards out. Every caller goes through :class:`Annotator`.

The whole pipeline lives here, in this order: segmentation -> probe prompts (tokenised) -> context-limit
policy -> one probe call for the batch -> reward math (:mod:`engine.reward_fields`) -> outcome (the answer
verifier) -> ``TraceAnnotation``.

Two ways in:

* :meth:`Annotator.annotate` for callers that want all or nothing (a bad trace raises :class:`TraceError`
  before any probe work);
* :meth:`Annotator.annotate_many` for callers that batch for themselves (the service's micro-batcher, the
  builder, ``score --input``): one result per trace, an annotation or a :class:`TraceError`, never an
  exception for a single bad trace. Such callers may :meth:`Annotator.plan` first (the CPU part: it tells each
  trace's probe tokens, for batching and sorting) and hand the plans to ``annotate_many``.

A probe failure (:class:`mig_annotator.engine.probe.base.ProbeError` and the like) is not a trace's fault and
propagates: the caller retries or fails the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TypeVar

from mig_annotator.engine.probe.base import CancelCheck, Probe, ProbeResult
from mig_annotator.engine.prompt import ImageDecodeError, ImagesNotReadError, ProbeSequence, PromptBuilder
from mig_annotator.engine.reward_fields import reward_fields
from mig_annotator.engine.rewards import aggregate_logprobs
from mig_annotator.engine.segment import (
    SegmentationCancelled,
    SegmentationError,
    SegmentedCompletion,
    segment_for_config,
)
from mig_annotator.engine.verify import AnswerVerifier, ProcessVerifier
from mig_annotator.engine.windowed import join_results, windowed_sequences
from mig_annotator.schemas import CharSpan, ScoringConfig, Trace, TraceAnnotation


class TraceError(ValueError):
    """A trace cannot be annotated; the message names the trace and the field."""

    def __init__(self, trace_id: str, field: str, problem: str) -> None:
        super().__init__(f"trace {trace_id!r}: {field}: {problem}")
        self.trace_id = trace_id
        self.field = field
        self.problem = problem

    def __reduce__(self) -> tuple[type[TraceError], tuple[str, str, str]]:  # picklable (worker processes)
        return (TraceError, (self.trace_id, self.field, self.problem))


@dataclass(frozen=True, slots=True)
class PreparedTrace:
    """A trace segmented and tokenised under one scoring config, ready for the probe (from :meth:`plan`).

    ``sequence`` holds the prefixes scored exactly; under ``context_limit="window"``, ``windows`` holds one
    left-truncated single-prefix sequence for each later prefix (see :mod:`mig_annotator.engine.windowed`).
    """

    trace: Trace
    config: ScoringConfig
    segmented: SegmentedCompletion
    sequence: ProbeSequence
    truncated: bool
    windows: tuple[ProbeSequence, ...] = ()
    verdict: Future[int] | None = field(default=None, compare=False, repr=False)
    """The answer check started early (:meth:`Annotator.check_answers`), else None."""

    @property
    def probe_sequences(self) -> tuple[ProbeSequence, ...]:
        """What the probe scores for this trace: the exact prefixes, then the windows in prefix order."""
        return (self.sequence, *self.windows)

    @property
    def probe_tokens(self) -> int:
        """Tokens the probe must forward at the least for this trace (for batching and sorting)."""
        return sum(sequence.minimal_tokens for sequence in self.probe_sequences)

    @property
    def probe_length(self) -> int:
        """Tokens of the longest probe input (question, steps or their window, answer prompt and answer)."""
        return max(sequence.probe_length for sequence in self.probe_sequences)

    @property
    def step_count(self) -> int:
        return len(self.segmented.steps)


AnnotationResult = TraceAnnotation | TraceError
ItemT = TypeVar("ItemT")


class Annotator:
    """Annotates traces with one probe and one answer verifier; scoring options come per call.

    ``verifier``: None starts the default :class:`ProcessVerifier` (killable math-verify workers), owned and
    closed by this annotator; a given verifier belongs to its caller.
    """

    def __init__(
        self,
        probe: Probe,
        default_config: ScoringConfig | None = None,
        *,
        verifier: AnswerVerifier | None = None,
    ) -> None:
        self._probe = probe
        self._default_config = default_config or ScoringConfig()
        self._owns_verifier = verifier is None
        self._verifier: AnswerVerifier = verifier if verifier is not None else ProcessVerifier()
        self._builders: dict[str, PromptBuilder] = {}
        # two: one batch's last checks overlap the next batch's first (the verifier bounds the work at once)
        self._verify_thread = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mig-annotator-verify")

    @property
    def probe(self) -> Probe:
        return self._probe

    @property
    def default_config(self) -> ScoringConfig:
        return self._default_config

    @property
    def verifier(self) -> AnswerVerifier:
        return self._verifier

    def close(self) -> None:
        """Stop the verification thread and the verifier this annotator started (not the probe)."""
        self._verify_thread.shutdown(wait=True)
        if self._owns_verifier:
            self._verifier.close()

    def __enter__(self) -> Annotator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------------
    # public entry points
    # ------------------------------------------------------------------------------------------------------

    def annotate(self, traces: Sequence[Trace], config: ScoringConfig | None = None) -> list[TraceAnnotation]:
        """Annotations in input order. A bad trace raises :class:`TraceError` before any probe work."""
        plans = self.plan(traces, config)
        for item in plans:
            if isinstance(item, TraceError):
                raise item
        results = self.annotate_many(plans)
        for result in results:
            if isinstance(result, TraceError):
                raise result
        return results  # type: ignore[return-value]

    def plan(
        self,
        traces: Sequence[Trace],
        config: ScoringConfig | None = None,
        *,
        cancelled: CancelCheck | None = None,
    ) -> list[PreparedTrace | TraceError]:
        """Segment, tokenise and check every trace (no probe work); a bad trace gives its error in place.

        ``cancelled``: asked before each trace and during ``step_regex`` searches; once True, the planning
        is abandoned and :class:`mig_annotator.engine.segment.SegmentationCancelled` raised."""
        config = config or self._default_config
        # outside the per-trace catch-all: a prompt builder that cannot be made is the probe's or the
        # config's fault, raised once, never reported as every trace's own
        builder = self._builder(config)
        planned: list[PreparedTrace | TraceError] = []
        for trace in traces:
            if cancelled is not None and cancelled():
                raise SegmentationCancelled("planning was abandoned: its request ended")
            try:
                planned.append(self._prepare(trace, config, builder, cancelled))
            except SegmentationCancelled:
                raise
            except TraceError as error:
                planned.append(error)
            except Exception as error:  # tokenizer or template failures on odd input: the trace's fault
                field = "steps" if trace.steps is not None else "completion"
                planned.append(TraceError(trace.id, field, f"the trace could not be prepared: {error}"))
        return planned

    def check_answers(self, items: Sequence[ItemT], *, deadline: float | None = None) -> list[ItemT]:
        """Start the answer checks of planned traces now, off the caller's thread: ``items`` with each plan's
        ``verdict`` under way, which :meth:`annotate_many` then waits for instead of checking again (a
        caller that queues traces before scoring them, as the service does, overlaps the checks with the
        queue and with other batches' probe work). ``deadline`` as in :meth:`annotate_many`."""
        waiting = [item for item in items if isinstance(item, PreparedTrace) and item.verdict is None]
        if not waiting:
            return list(items)
        pairs = [(_answer_text(item), item.trace.reference_answer) for item in waiting]
        batch = self._verify_thread.submit(self._verifier.check_many, pairs, deadline=deadline)
        verdicts: list[Future[int]] = [Future() for _ in waiting]

        def settle(done: Future[list[int]]) -> None:
            error = done.exception()
            for position, verdict in enumerate(verdicts):
                if error is not None:
                    verdict.set_exception(error)
                else:
                    verdict.set_result(done.result()[position])

        batch.add_done_callback(settle)
        started = {
            id(item): replace(item, verdict=verdict) for item, verdict in zip(waiting, verdicts, strict=True)
        }
        return [started.get(id(item), item) for item in items]  # type: ignore[misc]

    def annotate_many(
        self,
        items: Sequence[Trace | PreparedTrace | TraceError],
        config: ScoringConfig | None = None,
        *,
        deadline: float | None = None,
        cancelled: CancelCheck | None = None,
    ) -> list[AnnotationResult]:
        """One result per item, in order: an annotation, or the :class:`TraceError` that stopped it.

        Items may be traces (planned here under ``config``), plans from :meth:`plan` (scored under the config
        they were planned with), or errors from :meth:`plan` (passed through). ``deadline`` (a
        ``time.monotonic()`` instant) bounds the answer checks, which run while the probe works.
        ``cancelled``: asked between the probe's forward passes (every windowed step is one); once True,
        the probe work is abandoned and :class:`mig_annotator.engine.probe.base.ProbeCancelled` raised.
        Raises only when the probe fails or is cancelled (the whole batch is then unscored).
        """
        config = config or self._default_config
        planned: list[PreparedTrace | TraceError] = []
        for item in items:
            if isinstance(item, Trace):
                planned.extend(self.plan([item], config))
            else:
                planned.append(item)
        live = [item for item in planned if isinstance(item, PreparedTrace)]
        if not live:
            return list(planned)  # type: ignore[arg-type]
        # the answer checks need only the extracted answer and the reference: they overlap the probe pass
        # (those check_answers started already are only waited for)
        unchecked = [item for item in live if item.verdict is None]
        pairs = [(_answer_text(item), item.trace.reference_answer) for item in unchecked]
        verdicts = (
            self._verify_thread.submit(self._verifier.check_many, pairs, deadline=deadline) if pairs else None
        )
        sequences = [sequence for item in live for sequence in item.probe_sequences]
        # without a cancel check, the plain call (wrappers overriding score() need not know the keyword)
        flat = (
            self._probe.score(sequences)
            if cancelled is None
            else self._probe.score(sequences, cancelled=cancelled)
        )
        results, start = [], 0
        for item in live:  # a windowed trace's exact part and windows join back into one result
            count = len(item.probe_sequences)
            results.append(join_results(flat[start : start + count]))
            start += count
        fresh = iter(verdicts.result() if verdicts is not None else [])
        outcomes = [next(fresh) if item.verdict is None else item.verdict.result() for item in live]
        scored = iter(zip(live, results, outcomes, strict=True))
        out: list[AnnotationResult] = []
        for item in planned:
            if isinstance(item, TraceError):
                out.append(item)
                continue
            prepared, result, outcome = next(scored)
            out.append(self._finish(prepared, result, outcome))
        return out

    # ------------------------------------------------------------------------------------------------------
    # pipeline steps (private: callers go through the entry points above)
    # ------------------------------------------------------------------------------------------------------

    def _prepare(
        self,
        trace: Trace,
        config: ScoringConfig,
        builder: PromptBuilder,
        cancelled: CancelCheck | None = None,
    ) -> PreparedTrace:
        _check_encodable(trace)
        segmented = _segment(trace, config, cancelled)
        reasoning = "steps" if trace.steps is not None else "completion"
        try:
            sequence = builder.build(
                trace.question, [step.text for step in segmented.steps], trace.reference_answer, trace.images
            )
        except ImagesNotReadError as error:
            raise TraceError(
                trace.id,
                "question",
                f"{error}: the {self._probe.backend} probe {self._probe.model_id} is not a vision-language "
                "probe (every model backend reads images with a vision-language model folder, one whose "
                "config holds a vision_config, and its processor: the transformers and vllm probes load it, "
                "the vllm-server probe's model is the served model's folder)",
            ) from error
        except ImageDecodeError as error:
            raise TraceError(trace.id, f"images[{error.index}]", str(error)) from error
        except ValueError as error:
            raise TraceError(trace.id, "reference_answer", str(error)) from error
        limit = self._probe.context_limit
        if sequence.probe_length <= limit:
            return PreparedTrace(trace, config, segmented, sequence, truncated=False)
        answer_tokens = len(sequence.continuation_ids)
        if config.context_limit == "error" or sequence.boundaries[0] + answer_tokens > limit:
            raise TraceError(
                trace.id,
                reasoning,
                f"the probe input is {sequence.probe_length} tokens (question and steps "
                f"{sequence.boundaries[-1]}, answer prompt {answer_tokens}), over the probe's context limit "
                f"of {limit}; set context_limit='truncate_steps' to score only the leading steps that fit, "
                "or 'window' to score every step on the most recent tokens that fit (an approximation)",
            )
        if config.context_limit == "window" and sequence.vision is not None:
            raise TraceError(
                trace.id,
                reasoning,
                f"the probe input is {sequence.probe_length} tokens, over the probe's context limit of "
                f"{limit}, and a question with images cannot be windowed (the window would drop the "
                "images); set context_limit='truncate_steps'",
            )
        if config.context_limit == "window":
            try:
                windowed = windowed_sequences(sequence, limit)
            except ValueError as error:
                raise TraceError(trace.id, reasoning, str(error)) from error
            return PreparedTrace(
                trace, config, segmented, windowed.exact, truncated=False, windows=windowed.windows
            )
        fitting_steps = max(k for k, end in enumerate(sequence.boundaries) if end + answer_tokens <= limit)
        return PreparedTrace(trace, config, segmented, sequence.truncated(fitting_steps), truncated=True)

    def _finish(self, item: PreparedTrace, result: ProbeResult, outcome: int) -> AnnotationResult:
        config = item.config
        segmented = item.segmented
        try:
            values = aggregate_logprobs(result.token_logprobs, config.aggregation)
            scored = [
                (step.text, CharSpan(start=step.start, end=step.end))
                for step in segmented.steps[: len(values) - 1]
            ]
            rewards = reward_fields(values, outcome, scored, config)
        except ValueError as error:  # non-finite probe values and the like: this trace fails alone
            return TraceError(item.trace.id, "probe", f"the probe's scores are unusable: {error}")
        answer = segmented.answer
        cot_start, cot_end = segmented.cot_span
        return TraceAnnotation(
            trace_id=item.trace.id,
            completion=segmented.completion,
            steps_total=len(segmented.steps),
            truncated=item.truncated,
            windowed_steps=len(item.windows),
            cot_span=CharSpan(start=cot_start, end=cot_end),
            answer=answer.text if answer else None,
            answer_span=_span(answer),
            answer_part_span=_span(segmented.answer_part),
            outcome=outcome,
            probe_model=self._probe.model_id,
            probe_identity=self._probe.identity().fingerprint,
            tokens_forwarded=result.tokens_forwarded,
            answer_tokens=item.sequence.n_answer_tokens,
            **rewards.as_fields(),
        )

    def _builder(self, config: ScoringConfig) -> PromptBuilder:
        key = config.prompt.model_dump_json()
        if key not in self._builders:
            # a text-only probe may have no processor at all (the Probe interface's default is None)
            processor = getattr(self._probe, "processor", None)
            self._builders[key] = PromptBuilder(self._probe.tokenizer, config.prompt, processor)
        return self._builders[key]


def _answer_text(item: PreparedTrace) -> str | None:
    answer = item.segmented.answer
    return answer.text if answer else None


def _check_encodable(trace: Trace) -> None:
    """Lone surrogates (valid in JSON escapes, not in UTF-8) cannot be tokenised or stored: name the field."""
    texts = [("id", trace.id), ("question", trace.question), ("reference_answer", trace.reference_answer)]
    if trace.completion is not None:
        texts.append(("completion", trace.completion))
    texts.extend((f"steps[{index}]", step) for index, step in enumerate(trace.steps or []))
    for name, text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise TraceError(
                trace.id, name, f"not valid Unicode text (a lone surrogate at position {error.start})"
            ) from error


def _segment(trace: Trace, config: ScoringConfig, cancelled: CancelCheck | None) -> SegmentedCompletion:
    try:
        return segment_for_config(config, completion=trace.completion, steps=trace.steps, cancelled=cancelled)
    except SegmentationError as error:
        field = "steps" if trace.steps is not None else "completion"
        raise TraceError(trace.id, field, str(error)) from error


def _span(segment: object | None) -> CharSpan | None:
    if segment is None:
        return None
    return CharSpan(start=segment.start, end=segment.end)  # type: ignore[attr-defined]
