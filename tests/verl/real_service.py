"""The reward service over a real transformers probe, for the verl tests (run by the main venv's Python).

    python -m tests.verl.real_service serve FOLDER     # prints the URL, serves until stdin closes
    python -m tests.verl.real_service score FOLDER     # traces (JSON Lines) on stdin -> annotations on stdout

``serve`` takes the keys ``admin-key`` (an admin: it may reload) and ``user-key``; ``score`` is the engine
alone on ``FOLDER``, what a reload to that folder must give.
"""

from __future__ import annotations

import os
import sys

from mig_annotator.engine.annotator import Annotator
from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.engine.probe.transformers_probe import TransformersProbe
from mig_annotator.schemas import Trace
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.service.support import live_server

ADMIN_KEY = "admin-key"


def _probe(folder: str) -> TransformersProbe:
    return TransformersProbe(TransformersProbeSettings(model=folder, threads=1))


def serve(folder: str) -> None:
    settings = ServiceSettings(
        audit_enabled=False, api_keys={"admin": ADMIN_KEY, "user": "user-key"}, admin_key_ids=["admin"]
    )
    with live_server(create_app(settings, probe=_probe(folder))) as url:
        print(url, flush=True)
        sys.stdin.read()


def score(folder: str) -> None:
    traces = [Trace.model_validate_json(line) for line in sys.stdin if line.strip()]
    with Annotator(_probe(folder)) as annotator:
        for annotation in annotator.annotate(traces):
            print(annotation.model_dump_json(), flush=True)


def main() -> None:
    for name in list(os.environ):
        if name.startswith("MIG_") and name != "MIG_CACHE_DIR":
            del os.environ[name]
    command, folder = sys.argv[1], sys.argv[2]
    {"serve": serve, "score": score}[command](folder)


if __name__ == "__main__":
    main()
