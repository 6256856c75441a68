"""``token_offsets`` in an annotate request: check each trace's offsets, score the others, and place every
annotation's rewards on its tokens (:meth:`schemas.api.TokenRewards.of`, the rule of the builder's token
columns and of ``client.verl.token_rewards``).

Offsets into a ``completion`` are checked before any probe work; a trace given as ``steps`` has its
completion (the joined steps) only once scored, so its offsets are checked then. A trace with bad offsets
gets its ``invalid_trace`` failure naming ``token_offsets[i][k]``, or fails the request with ``strict``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mig_annotator.schemas import ScoringConfig, Trace, TraceAnnotation
from mig_annotator.schemas.api import FieldError, TokenOffset, TokenRewards, TraceFailure
from mig_annotator.schemas.token_alignment import offsets_problem
from mig_annotator.service.annotation_service import AnnotationService, CallContext
from mig_annotator.service.failures import InvalidInput

Offsets = Sequence[TokenOffset] | None


def offsets_failure(index: int, offsets: Offsets, completion: str) -> TraceFailure | None:
    """The failure of trace ``index`` whose offsets do not fit ``completion``; None when they do."""
    if offsets is None:
        return None
    problem = offsets_problem(offsets, len(completion))
    if problem is None:
        return None
    token, reason = problem
    return TraceFailure(
        index=index,
        field=f"token_offsets[{index}][{token}]",
        message=f"token {token}: {reason}",
        code="invalid_trace",
    )


async def annotate_with_token_rewards(
    service: AnnotationService,
    traces: Sequence[Trace],
    offsets: Sequence[Offsets],
    config: ScoringConfig,
    context: CallContext,
    field: str,
    *,
    strict: bool,
    positions: Sequence[int] | None = None,
) -> tuple[list[TraceAnnotation | TraceFailure], list[TokenRewards | None]]:
    """The results of ``traces``, and each one's per-token rewards (None without offsets or annotation).

    ``positions``: each trace's index in the request (default: its index here), which errors name."""
    where = list(positions) if positions is not None else list(range(len(traces)))
    # the offset checks, the placement and (in the route) the serialisation walk every token: off the loop
    results = await asyncio.to_thread(_checked_offsets, traces, offsets, where)
    _raise_if_strict(results, strict)
    todo = [index for index, result in enumerate(results) if result is None]
    if todo:
        scored = await service.annotate(
            [traces[i] for i in todo],
            config,
            context,
            field,
            strict=strict,
            positions=[where[i] for i in todo],
        )
        await asyncio.to_thread(_check_scored, results, todo, scored, offsets, where)
        _raise_if_strict(results, strict)
    placed = await asyncio.to_thread(_placed, results, offsets)
    return [result for result in results if result is not None], placed


Results = list[TraceAnnotation | TraceFailure | None]


def _checked_offsets(traces: Sequence[Trace], offsets: Sequence[Offsets], where: Sequence[int]) -> Results:
    """Each trace's offsets failure where its completion is known before scoring (else None)."""
    return [
        offsets_failure(at, given, trace.completion) if trace.completion is not None else None
        for trace, given, at in zip(traces, offsets, where, strict=True)
    ]


def _check_scored(
    results: Results,
    todo: Sequence[int],
    scored: Sequence[TraceAnnotation | TraceFailure],
    offsets: Sequence[Offsets],
    where: Sequence[int],
) -> None:
    """Put the scored results in place, failed where the offsets do not fit the scored completion."""
    for index, result in zip(todo, scored, strict=True):
        failure = None
        if isinstance(result, TraceAnnotation):
            failure = offsets_failure(where[index], offsets[index], result.completion)
        results[index] = failure or result


def _placed(results: Results, offsets: Sequence[Offsets]) -> list[TokenRewards | None]:
    return [
        TokenRewards.of(result, given) if isinstance(result, TraceAnnotation) and given is not None else None
        for result, given in zip(results, offsets, strict=True)
    ]


def _raise_if_strict(results: Sequence[TraceAnnotation | TraceFailure | None], strict: bool) -> None:
    failures = [result for result in results if isinstance(result, TraceFailure)]
    if strict and failures:
        fields = [FieldError(field=failure.field, message=failure.message) for failure in failures]
        raise InvalidInput("; ".join(f"{f.field}: {f.message}" for f in fields[:10]), fields)
