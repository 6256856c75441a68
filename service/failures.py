"""What can go wrong while serving a request, in the service's own terms (no HTTP here).

The micro-batcher and the annotation service raise these; :mod:`mig_annotator.service.errors` alone maps
them to HTTP statuses and the error envelope.
"""

from __future__ import annotations

from collections.abc import Sequence

from mig_annotator.schemas.api import FieldError


def field_path(location: Sequence[int | str]) -> str:
    """('body', 'traces', 3, 'steps') -> 'traces[3].steps'."""
    parts = list(location)
    if parts and parts[0] == "body":
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


class ServiceFailure(Exception):
    """Base of every domain failure: a message for the caller, the fields at fault, and a retry hint."""

    def __init__(
        self, message: str, fields: Sequence[FieldError] = (), *, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = list(fields)
        self.retry_after_s = retry_after_s

    @classmethod
    def for_field(cls, field: str, message: str) -> ServiceFailure:
        return cls(f"{field}: {message}", [FieldError(field=field, message=message)])


class InvalidInput(ServiceFailure):
    """The request's content cannot be scored (a trace or an option is bad); ``fields`` names each one."""


class TooManyTraces(ServiceFailure):
    """The request brings more traces than one request may."""


class OverProbeBudget(TooManyTraces):
    """The request's probe work, estimated before it starts, is over the per-request budget."""


class QueueFull(ServiceFailure):
    """The queue cannot take the request's traces now; ``retry_after_s`` says when it likely can."""


class ProbeFailure(ServiceFailure):
    """The probe failed on the batch holding the request's traces (or is unreachable)."""


class NotReady(ServiceFailure):
    """The probe is loading or failed to load."""


class ShuttingDown(ServiceFailure):
    """The service is stopping and takes no more work."""


class AnswersUncheckable(ServiceFailure):
    """The answer verifier cannot run (its worker processes cannot be started)."""


class ProbeTooOld(ServiceFailure):
    """The request requires a newer probe version than the one serving."""


class ReloadRejected(ServiceFailure):
    """A checkpoint folder cannot replace the probe's weights (``fields`` names the folder)."""


class DeadlinePassed(ServiceFailure):
    """The request's deadline passed before all its traces were scored."""


class ClientLeft(DeadlinePassed):
    """The client disconnected before its traces were scored (nobody reads the answer)."""


class ScoringFailed(ServiceFailure):
    """An unexpected error while scoring (a bug): the trace fails alone and the server log has the details."""
