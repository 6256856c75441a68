"""Outcome checks with a hard time limit.

math-verify bounds its own work with ``signal.alarm``, which only works in a main thread, and even then
some inputs (``10^{10^{10^{10}}}``) block in C code for long stretches. The service therefore checks answers
in a worker process (:mod:`service.outcome_worker`) and kills it when one check runs past its limit: that
answer counts as wrong (outcome 0, as math-verify's own timeout does) and a fresh worker takes over.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger("mig.service")

_STARTUP_TIMEOUT_S = 120.0


class OutcomeCheckError(RuntimeError):
    """The worker process could not be started or talked to."""


class OutcomeChecker:
    """Checks answers against references in a worker process, one at a time, each within ``timeout_s``."""

    def __init__(self, timeout_s: float, on_timeout: Callable[[], None] | None = None) -> None:
        self._timeout_s = timeout_s
        self._on_timeout = on_timeout or (lambda: None)
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Start the worker and wait until math-verify is loaded in it."""
        with self._lock:
            if self._process is None:
                self._process = self._spawn()

    def check(self, answer: str | None, reference: str) -> int:
        """1 if ``answer`` equals ``reference`` (math-aware), else 0; 0 too when the check runs too long."""
        if answer is None or not answer.strip():
            return 0
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = self._spawn()
            process = self._process
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(json.dumps([answer, reference]) + "\n")
                process.stdin.flush()
                reply = _read_line(process, self._timeout_s)
            except (OSError, ValueError) as error:
                logger.warning("outcome worker failed (%s); restarting it", error)
                self._kill()
                return 0
            if reply is None:
                logger.warning(
                    "outcome check of %r against %r ran over %.1fs; counted as 0",
                    answer[:80],
                    reference[:80],
                    self._timeout_s,
                )
                self._on_timeout()
                self._kill()
                return 0
            return 1 if reply.strip() == "1" else 0

    def close(self) -> None:
        with self._lock:
            self._kill()

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()

    @staticmethod
    def _spawn() -> subprocess.Popen[str]:
        project_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, env.get("PYTHONPATH")]))
        process = subprocess.Popen(
            [sys.executable, "-m", "mig_annotator.service.outcome_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="surrogatepass",
            env=env,
        )
        ready = _read_line(process, _STARTUP_TIMEOUT_S)
        if ready is None or ready.strip() != "ready":
            process.kill()
            process.wait()
            raise OutcomeCheckError("the outcome-check worker process did not start")
        return process


def _read_line(process: subprocess.Popen[str], timeout_s: float) -> str | None:
    """The next line the process writes, or None when it writes none within ``timeout_s`` or exits."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([process.stdout], [], [], remaining)
        if readable:
            line = process.stdout.readline()
            return line if line else None
