"""The app factory: ``create_app(settings)`` builds a FastAPI app serving MIG rewards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware import Middleware

from mig_annotator.engine.probe.base import Probe
from mig_annotator.service.components import ServiceComponents
from mig_annotator.service.errors import install_error_handlers
from mig_annotator.service.metrics import ServiceMetrics
from mig_annotator.service.middleware import (
    BodySizeLimitMiddleware,
    ImageReadingMiddleware,
    MetricsMiddleware,
    RequestContextMiddleware,
)
from mig_annotator.service.routes import ENDPOINTS, admin, declare_auth, ops, service_version, v1
from mig_annotator.service.settings import ServiceSettings

DESCRIPTION = """\
Step-wise Marginal Information Gain (MIG) rewards for reasoning traces, for RL trainers.

`POST /v1/annotate` scores one trace or a rollout group; `POST /v1/openrlhf/reward` speaks OpenRLHF's
remote reward-model protocol. Errors are `ErrorResponse` objects naming the fields at fault.
"""


def create_app(settings: ServiceSettings | None = None, *, probe: Probe | None = None) -> FastAPI:
    """A reward service app. ``settings``: None reads ``MIG_*`` from the environment. ``probe``: an
    already-open probe to serve (else the one the settings name is opened in the background at start-up).
    """
    settings = settings or ServiceSettings()
    metrics = ServiceMetrics()  # the middleware counts requests from the first one on

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        components = await ServiceComponents.start(settings, metrics, probe)
        app.state.components = components
        try:
            yield
        finally:
            await components.stop()

    middleware = [
        Middleware(RequestContextMiddleware),
        Middleware(MetricsMiddleware, metrics=metrics, endpoints=ENDPOINTS),
        Middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes),
        Middleware(ImageReadingMiddleware, limits=settings.image_limits),
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                expose_headers=["X-Request-ID", "Retry-After"],
            )
        )
    app = FastAPI(
        title="mig-annotator reward service",
        description=DESCRIPTION,
        version=service_version(),
        lifespan=lifespan,
        middleware=middleware,
    )
    install_error_handlers(app)
    app.include_router(v1)
    app.include_router(ops)
    if settings.api_keys:
        app.include_router(admin)
    declare_auth(app, auth_required=bool(settings.api_keys))
    return app
