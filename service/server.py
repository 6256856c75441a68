"""Run the service under uvicorn (what ``mig-annotator serve`` does)."""

from __future__ import annotations

import logging

import uvicorn

from mig_annotator.service.app import create_app
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
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
