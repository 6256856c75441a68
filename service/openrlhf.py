"""OpenRLHF's remote reward-model protocol over the annotation service."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from mig_annotator.schemas import Trace, TraceAnnotation
from mig_annotator.schemas.api import (
    OpenRLHFRewardRequest,
    OpenRLHFRewardResponse,
    RewardScalar,
    TraceFailure,
)
from mig_annotator.schemas.scalar import scalar_reward
from mig_annotator.schemas.trace import has_text


def split_completion(query: str, prompt: str, strip_suffixes: Sequence[str]) -> str | None:
    """The response part of ``query``: what follows ``prompt`` in it, end-of-text markers removed.

    OpenRLHF sends ``query`` as the decoded prompt + response, so the prompt is normally its prefix; when
    the decoder added text in front (a BOS token), the prompt's first occurrence is used. None when the
    prompt does not occur in the query.
    """
    start = 0 if query.startswith(prompt) else query.find(prompt)
    if start < 0:
        return None
    completion = query[start + len(prompt) :]
    stripped = True
    while stripped:
        stripped = False
        trimmed = completion.rstrip()
        for suffix in strip_suffixes:
            if suffix and trimmed.endswith(suffix):
                completion = trimmed[: -len(suffix)]
                stripped = True
    return completion


def traces_from_request(
    request: OpenRLHFRewardRequest, request_id: str, strip_suffixes: Sequence[str]
) -> list[Trace | TraceFailure]:
    """One trace per query (question = prompt, reference = label), or the failure naming what is wrong."""
    parsed: list[Trace | TraceFailure] = []
    for index, (query, prompt, label) in enumerate(
        zip(request.query, request.prompts, request.labels, strict=True)
    ):
        completion = split_completion(query, prompt, strip_suffixes)
        problem: tuple[str, str] | None = None
        if completion is None:
            problem = (f"query[{index}]", f"does not contain prompts[{index}]")
        elif not has_text(completion):  # the Trace rule: no reasoning text, nothing to score
            problem = (f"query[{index}]", f"has no response after prompts[{index}]")
        if problem is not None:
            parsed.append(
                TraceFailure(index=index, field=problem[0], message=problem[1], code="invalid_trace")
            )
            continue
        try:
            trace = Trace(
                id=f"{request_id}-{index}", question=prompt, completion=completion, reference_answer=label
            )
        except ValidationError as error:  # the Trace's own rules (e.g. a blank prompt or label)
            where = {"question": f"prompts[{index}]", "reference_answer": f"labels[{index}]"}
            problem_at = str(error.errors()[0]["loc"][0]) if error.errors() else ""
            parsed.append(
                TraceFailure(
                    index=index,
                    field=where.get(problem_at, f"query[{index}]"),
                    message=error.errors()[0]["msg"] if error.errors() else str(error),
                    code="invalid_trace",
                )
            )
            continue
        parsed.append(trace)
    return parsed


def reward_response(
    results: Sequence[TraceAnnotation | TraceFailure], kind: RewardScalar, lam: float, fallback: float
) -> OpenRLHFRewardResponse:
    """Each query's scalar; a failed query gets ``fallback`` (reward and score) and 1 in ``failed``."""
    annotations = [r if isinstance(r, TraceAnnotation) else None for r in results]
    return OpenRLHFRewardResponse(
        rewards=[fallback if a is None else scalar_reward(a, kind, lam) for a in annotations],
        scores=[fallback if a is None else float(a.outcome) for a in annotations],
        extra_logs={
            "outcome": [0.0 if a is None else float(a.outcome) for a in annotations],
            "process_reward": [0.0 if a is None else a.process_reward for a in annotations],
            "max_step_reward": [0.0 if a is None else a.max_reward for a in annotations],
            "steps": [0.0 if a is None else float(len(a.steps)) for a in annotations],
            "failed": [float(a is None) for a in annotations],
        },
    )
