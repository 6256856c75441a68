"""Run the service under uvicorn (what ``mig-annotator serve`` does)."""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI

from mig_annotator.service.app import create_app
from mig_annotator.service.connections import header_timeout_protocol
from mig_annotator.service.settings import ServiceSettings


def serve(settings: ServiceSettings) -> None:
    """Serve until interrupted; one process holds one probe, so uvicorn runs a single worker.

    SIGTERM/SIGINT drain: no new connections, open requests get ``MIG_SHUTDOWN_GRACE_S`` to finish, then the
    rest are cancelled; the lifespan's shutdown fails every queued trace, the probe thread abandons its batch
    at the next forward pass, and the process exits.

    The service's own loggers (``mig.service``, ``mig.verify``: probe loading, audit recovery, slow answer
    checks) print at ``MIG_LOG_LEVEL`` like uvicorn's, on stderr.
    """
    level = settings.log_level.upper()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    for name in ("mig.service", "mig.verify"):
        service_logger = logging.getLogger(name)
        service_logger.setLevel(level)
        if not service_logger.handlers:
            service_logger.addHandler(handler)
    uvicorn.Server(uvicorn_config(create_app(settings), settings)).run()


def uvicorn_config(app: FastAPI, settings: ServiceSettings) -> uvicorn.Config:
    """uvicorn's configuration for the service: its address, the shutdown grace, and the connection bounds
    (header time limit, keep-alive idle time, concurrent connections, h11's incomplete-event size)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        timeout_keep_alive=settings.keep_alive_s,
        limit_concurrency=settings.max_connections,
        h11_max_incomplete_event_size=64 * 1024,
        http=header_timeout_protocol(settings.header_timeout_s),
    )
