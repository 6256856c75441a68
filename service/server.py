"""Run the service under uvicorn (what ``mig-annotator serve`` does)."""

from __future__ import annotations

import uvicorn

from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings


def serve(settings: ServiceSettings) -> None:
    """Serve until interrupted; one process holds one probe, so uvicorn runs a single worker."""
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
