"""OpenRLHF's remote reward-model protocol over the annotation service."""

from __future__ import annotations

from collections.abc import Sequence

from mig_annotator.schemas import Trace, TraceAnnotation
from mig_annotator.schemas.api import FieldError, OpenRLHFRewardRequest, OpenRLHFRewardResponse, RewardScalar
from mig_annotator.schemas.scalar import scalar_reward
from mig_annotator.schemas.trace import has_text
from mig_annotator.service.failures import InvalidInput


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
) -> list[Trace]:
    """One trace per query (question = prompt, reference = label); 422 naming every query that fails."""
    traces: list[Trace] = []
    problems: list[FieldError] = []
    for index, (query, prompt, label) in enumerate(
        zip(request.query, request.prompts, request.labels, strict=True)
    ):
        completion = split_completion(query, prompt, strip_suffixes)
        if completion is None:
            problems.append(FieldError(field=f"query[{index}]", message=f"does not contain prompts[{index}]"))
            continue
        if not has_text(completion):  # the Trace rule: no reasoning text, nothing to score
            problems.append(
                FieldError(field=f"query[{index}]", message=f"has no response after prompts[{index}]")
            )
            continue
        traces.append(
            Trace(
                id=f"{request_id}-{index}",
                question=prompt,
                completion=completion,
                reference_answer=label,
            )
        )
    if problems:
        raise InvalidInput("; ".join(f"{p.field}: {p.message}" for p in problems[:10]), problems)
    return traces


def reward_response(
    annotations: Sequence[TraceAnnotation], kind: RewardScalar, lam: float
) -> OpenRLHFRewardResponse:
    return OpenRLHFRewardResponse(
        rewards=[scalar_reward(annotation, kind, lam) for annotation in annotations],
        scores=[float(annotation.outcome) for annotation in annotations],
        extra_logs={
            "outcome": [float(a.outcome) for a in annotations],
            "process_reward": [a.process_reward for a in annotations],
            "max_step_reward": [a.max_reward for a in annotations],
            "steps": [float(len(a.steps)) for a in annotations],
        },
    )
