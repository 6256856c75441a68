"""``mig-annotator serve`` in a subprocess on a free 127.0.0.1 port: the one way scripts start a service.

The examples, the service benchmarks and the tests that need a real server process (signals, start-up)
use :class:`ServeProcess`; it waits until ``/readyz`` answers 200 (the probe is loaded) and stops the
process on exit, killing it when it does not stop within ``stop_grace_s``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

__all__ = ["ServeProcess", "free_port"]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """``python -m mig_annotator.cli serve --host 127.0.0.1 --port PORT *args`` with ``env`` over the
    current environment (``HF_HUB_OFFLINE=1`` unless ``env`` says otherwise).

    Use it as a context manager: ``url`` is served once ``__enter__`` returns."""

    def __init__(
        self,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        python: str = sys.executable,
        ready_timeout_s: float = 300.0,
        stop_grace_s: float = 120.0,
        stdout: IO[Any] | int | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            python, "-m", "mig_annotator.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port), *args
        ]  # fmt: skip
        self._env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        self._cwd = cwd
        self._stdout = stdout
        self._ready_timeout_s = ready_timeout_s
        self._stop_grace_s = stop_grace_s
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServeProcess:
        self.process = subprocess.Popen(self.command, env=self._env, cwd=self._cwd, stdout=self._stdout)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self._ready_timeout_s
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(f"`{' '.join(self.command)}` exited with code {code} before it was ready")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.url} was not ready within {self._ready_timeout_s:.0f} s")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_grace_s``; nothing when the process has already ended."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=self._stop_grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
