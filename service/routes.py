"""The HTTP endpoints: thin wrappers over the service's parts, which come in as dependencies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from importlib import metadata
from typing import Annotated, Any, NoReturn, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from mig_annotator.schemas import Trace, TraceAnnotation
from mig_annotator.schemas.api import (
    AnnotateRequest,
    AnnotateResponse,
    HealthResponse,
    InfoResponse,
    LimitsInfo,
    OpenRLHFRewardRequest,
    OpenRLHFRewardResponse,
    ProbeInfo,
    ReadinessResponse,
    ReloadRequest,
    ReloadResponse,
    TraceFailure,
)
from mig_annotator.service.annotation_service import AnnotationService, CallContext
from mig_annotator.service.auth import Principal
from mig_annotator.service.body_parsing import OffLoopBodyRoute
from mig_annotator.service.components import ServiceComponents
from mig_annotator.service.errors import ERROR_RESPONSES, Forbidden, UnsupportedMediaType
from mig_annotator.service.failures import ClientLeft, ShuttingDown
from mig_annotator.service.openrlhf import reward_response, traces_from_request
from mig_annotator.service.token_rewards import annotate_with_token_rewards
from mig_annotator.service.trace_items import checked_traces, refuse_invalid

ANNOTATE_PATH = "/v1/annotate"
OPENRLHF_PATH = "/v1/openrlhf/reward"
INFO_PATH = "/v1/info"
ENDPOINTS = (ANNOTATE_PATH, OPENRLHF_PATH, INFO_PATH, "/healthz", "/readyz", "/metrics")

T = TypeVar("T")


async def _client_left(request: Request) -> None:
    """Returns once the client disconnects (the body is already read: the next ASGI message is the
    ``http.disconnect``)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result; when the client disconnects first, ``work`` is cancelled (its queued traces are
    dropped and their probe work abandoned at the next forward pass) and nothing is answered."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_left(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        _server_stops()
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.cancelled() or not watcher.done():
            _server_stops()
        raise ClientLeft("the client disconnected before its traces were scored") from None


def _server_stops() -> NoReturn:
    """The request itself was cancelled: the server stops and its grace period ran out. The client gets
    the JSON error body (503), not the server's plain-text 500; the work was cancelled with the request."""
    current = asyncio.current_task()
    if current is not None:
        current.uncancel()
    raise ShuttingDown(
        "the server is shutting down (its grace period, MIG_SHUTDOWN_GRACE_S, ran out before these traces "
        "were scored); retry on a running replica",
        retry_after_s=1,
    ) from None


_bearer = HTTPBearer(auto_error=False, description="An API key, when the server has MIG_API_KEYS.")


def get_components(request: Request) -> ServiceComponents:
    return request.app.state.components  # type: ignore[no-any-return]


Components = Annotated[ServiceComponents, Depends(get_components)]


def authenticate(
    components: Components, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    return components.authenticator.authenticate(credentials)


def get_annotations(components: Components) -> AnnotationService:
    return components.annotations


Caller = Annotated[Principal, Depends(authenticate)]
Annotations = Annotated[AnnotationService, Depends(get_annotations)]


def call_context(request: Request, caller: Principal, endpoint: str) -> CallContext:
    state = request.state
    return CallContext(
        request_id=state.request_id,
        received_at=state.received_at,
        received_monotonic=state.received_monotonic,
        endpoint=endpoint,
        api_key_id=caller.key_id,
        tally=getattr(state, "tally", None),
    )


def require_json_body(request: Request) -> None:
    """415 unless the body is declared JSON (``application/json`` or ``application/*+json``): FastAPI
    would otherwise not parse it and answer a puzzling 'Input should be a valid dictionary'."""
    declared = request.headers.get("content-type")
    media_type = (declared or "").split(";", 1)[0].strip().lower()
    if media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return
    got = f"the Content-Type is {declared!r}" if declared else "no Content-Type was sent"
    raise UnsupportedMediaType.for_field(
        "Content-Type", f"{got}; send the body as JSON with Content-Type: application/json"
    )


v1 = APIRouter(prefix="/v1", tags=["rewards"], route_class=OffLoopBodyRoute)  # big bodies: off the loop
ops = APIRouter(tags=["operations"])
_annotate_errors = {
    status: ERROR_RESPONSES[status] for status in (400, 401, 403, 413, 415, 422, 429, 503, 504)
}
# Served only when the service has API keys: an admin is a key listed in MIG_ADMIN_KEY_IDS, so a service
# without keys has no admin and no reload route (create_app mounts this router with keys only).
admin = APIRouter(prefix="/v1/admin", tags=["admin"])


@v1.post(
    "/annotate",
    response_model=AnnotateResponse,
    responses={**_annotate_errors, 409: ERROR_RESPONSES[409]},  # min_probe_version
    dependencies=[Depends(require_json_body)],
    summary="Per-step MIG rewards for one trace or a rollout group",
)
async def annotate(
    body: AnnotateRequest, request: Request, caller: Caller, service: Annotations, components: Components
) -> AnnotateResponse:
    """Annotations in input order; a trace that cannot be scored gets null and its entry in `errors`
    (all or nothing with `strict`). Scoring options in `config` override the server defaults."""
    components.reloader.require(body.min_probe_version)
    config = service.scoring_config(body.config)
    context = call_context(request, caller, ANNOTATE_PATH)
    strict = body.strict or body.trace is not None
    checked = checked_traces(body.trace_list, body.field_name)
    if context.tally is not None:
        context.tally.traces = len(checked)
    service.check_trace_count(len(checked), body.field_name)
    if strict:
        refuse_invalid(checked)
    positions = [index for index, item in enumerate(checked) if isinstance(item, Trace)]
    traces = [item for item in checked if isinstance(item, Trace)]
    invalid = len(checked) - len(traces)
    if invalid:
        components.metrics.trace_failures.labels(code="invalid_trace").inc(invalid)
    token_rewards = None
    if body.token_offsets is None:
        work = service.annotate(
            traces, config, context, field=body.field_name, strict=strict, positions=positions
        )
        scored = iter(await unless_client_leaves(request, work) if traces else [])
        results = [item if isinstance(item, TraceFailure) else next(scored) for item in checked]
    else:
        offsets = [body.token_offsets[index] for index in positions]
        placed_work = annotate_with_token_rewards(
            service, traces, offsets, config, context, body.field_name, strict=strict, positions=positions
        )
        valid, placed = await unless_client_leaves(request, placed_work) if traces else ([], [])
        scored, placed_of = iter(valid), iter(placed)
        results = [item if isinstance(item, TraceFailure) else next(scored) for item in checked]
        token_rewards = [None if isinstance(item, TraceFailure) else next(placed_of) for item in checked]
    answer = AnnotateResponse(
        request_id=context.request_id,
        annotations=[r if isinstance(r, TraceAnnotation) else None for r in results],
        errors=[r for r in results if isinstance(r, TraceFailure)],
        token_rewards=token_rewards,
    )
    if token_rewards is None:
        return answer
    # per-token rewards can be millions of numbers: serialised off the event loop (the model is valid)
    body = await asyncio.to_thread(answer.model_dump_json)
    return Response(body, media_type="application/json")  # type: ignore[return-value]


@v1.post(
    "/openrlhf/reward",
    response_model=OpenRLHFRewardResponse,
    responses=_annotate_errors,
    dependencies=[Depends(require_json_body)],
    summary="OpenRLHF's remote reward-model protocol (--remote_rm_url)",
)
async def openrlhf_reward(
    body: OpenRLHFRewardRequest,
    request: Request,
    caller: Caller,
    service: Annotations,
    components: Components,
) -> OpenRLHFRewardResponse:
    """Each query is split into prompt (the question) and response (scored); labels are the references.
    A query that cannot be scored gets MIG_OPENRLHF_FALLBACK_REWARD (counted in mig_fallback_rewards)."""
    settings = components.settings
    context = call_context(request, caller, OPENRLHF_PATH)
    parsed = traces_from_request(body, context.request_id, settings.openrlhf_strip_suffixes)
    if context.tally is not None:
        context.tally.traces = len(parsed)
    positions = [index for index, item in enumerate(parsed) if isinstance(item, Trace)]
    traces = [item for item in parsed if isinstance(item, Trace)]
    scored = iter(
        await unless_client_leaves(
            request,
            service.annotate(
                traces, settings.scoring, context, field="query", strict=False, positions=positions
            ),
        )
        if traces
        else []
    )
    results = [item if isinstance(item, TraceFailure) else next(scored) for item in parsed]
    failed = sum(isinstance(r, TraceFailure) for r in results)
    if failed:
        components.metrics.fallback_rewards.inc(failed)
    return reward_response(
        results, settings.openrlhf_reward, settings.openrlhf_lambda, settings.openrlhf_fallback_reward
    )


@v1.get(
    "/info",
    response_model=InfoResponse,
    responses={status: ERROR_RESPONSES[status] for status in (401, 403)},
    summary="The probe, scoring defaults and limits",
)
async def info(components: Components, caller: Caller) -> InfoResponse:
    settings = components.settings
    runtime = components.runtime
    probe = runtime.annotator.probe if runtime.annotator is not None else None
    identity = runtime.identity
    return InfoResponse(
        service_version=service_version(),
        probe=ProbeInfo(
            backend=runtime.backend,
            model=probe.model_id if probe is not None else None,
            fingerprint=identity.fingerprint if identity is not None else None,
            digest=identity.digest if identity is not None else None,
            dtype=identity.dtype if identity is not None else None,
            context_limit=probe.context_limit if probe is not None else None,
        ),
        scoring_defaults=settings.scoring,
        limits=LimitsInfo(
            max_body_bytes=settings.max_body_bytes,
            max_traces_per_request=settings.max_traces_per_request,
            max_steps_per_trace=settings.max_steps_per_trace,
            max_tokens_per_trace=settings.max_tokens_per_trace
            if settings.max_tokens_per_trace is not None
            else (probe.context_limit if probe is not None else None),
            request_timeout_s=settings.request_timeout_s,
            queue_max_traces=settings.queue_max_traces,
            max_request_probe_tokens=components.budget.tokens,
            probe_budget_source=components.budget.source,
            probe_tokens_per_second=components.budget.tokens_per_second,
            probe_tokens_per_byte=components.budget.tokens_per_byte,
        ),
        exact_batching=settings.exact,
        openrlhf_reward=settings.openrlhf_reward,
        openrlhf_lambda=settings.openrlhf_lambda,
        auth_required=components.authenticator.required,
        audit_enabled=components.audit is not None,
    )


@admin.post(
    "/reload",
    response_model=ReloadResponse,
    responses={status: ERROR_RESPONSES[status] for status in (400, 401, 403, 413, 415, 422, 503)},
    dependencies=[Depends(require_json_body)],
    summary="Load a checkpoint folder into the running probe (admin keys only)",
)
async def reload_probe(body: ReloadRequest, caller: Caller, components: Components) -> ReloadResponse:
    """Same tokenizer and architecture, else 422 naming what differs (the old weights keep serving).
    The swap happens between micro-batches; the answer gives the new probe_version."""
    if caller.key_id is None or caller.key_id not in components.settings.admin_key_ids:
        raise Forbidden("reloading the probe needs an API key listed in MIG_ADMIN_KEY_IDS")
    return await components.reloader.reload(body.model)


@ops.get("/healthz", response_model=HealthResponse, summary="The process is up")
async def healthz() -> HealthResponse:
    return HealthResponse()


@ops.get(
    "/readyz",
    response_model=ReadinessResponse,
    responses={503: {"model": ReadinessResponse, "description": "Not ready: `detail` says why."}},
    summary="The probe is loaded (or reachable) and the audit log is writable",
)
async def readyz(components: Components) -> JSONResponse:
    runtime = components.runtime
    probe_problem = await runtime.health()
    probe_state = runtime.state if runtime.state != "ready" or probe_problem is None else "unreachable"
    audit = components.audit
    audit_state = "disabled" if audit is None else audit.status
    calibrating = None if components.budget.calibrated else "the probe's calibration pass is running"
    problems = [p for p in (probe_problem, calibrating, audit.error if audit is not None else None) if p]
    body = ReadinessResponse(
        ready=not problems, probe=probe_state, audit=audit_state, detail="; ".join(problems) or None
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if body.ready else 503)


@ops.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            "description": "Prometheus text",
        }
    },
    summary="Prometheus metrics",
)
async def metrics(components: Components) -> Response:
    return Response(components.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def declare_auth(app: FastAPI, auth_required: bool) -> None:
    """The OpenAPI document declares bearer auth (``security``, 401 and 403) only when keys are configured:
    without keys every request is let in, and a client generated from the schema must not demand a key."""
    if auth_required:
        return
    generate = app.openapi

    def openapi_without_auth() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            document.get("components", {}).pop("securitySchemes", None)
            for operations in document["paths"].values():
                for operation in operations.values():
                    operation.pop("security", None)
                    for status in ("401", "403"):
                        operation.get("responses", {}).pop(status, None)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi_without_auth  # type: ignore[method-assign]


def service_version() -> str:
    try:
        return metadata.version("mig-annotator")
    except metadata.PackageNotFoundError:
        return "0+unknown"
