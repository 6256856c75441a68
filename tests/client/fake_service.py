"""Serve the reward service over the fake probe on 127.0.0.1 until stdin closes; prints the URL first.

Run from the repository root with the full install: ``python -m tests.client.fake_service``.
"""

from __future__ import annotations

import os
import sys

from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.client.support import fake_probe
from tests.service.support import live_server


def main() -> None:
    for name in list(os.environ):
        if name.startswith("MIG_") and name != "MIG_CACHE_DIR":
            del os.environ[name]
    with live_server(create_app(ServiceSettings(audit_enabled=False), probe=fake_probe())) as url:
        print(url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
