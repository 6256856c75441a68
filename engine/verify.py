"""Answer verification with a hard time limit: a small pool of killable worker processes.

math-verify bounds its own work with ``signal.alarm``, which only works in a main thread, and even there some
inputs (``10^{10^{10^{10}}}``) block in C code for tens of seconds. So every check runs in a worker process
(:mod:`engine.verify_worker`) that is killed when the check runs past its limit: that answer counts
as wrong (outcome 0, as math-verify's own timeout does) and a fresh worker takes its place.

Invariants:

* ``check_many`` returns one verdict (0 or 1) per pair, in input order, and never waits longer than the
  per-check limit (or the caller's deadline, whichever comes first) for any one check.
* Up to ``workers`` checks run at once, so a few slow answers cannot hold up the others for longer than one
  time limit.
* Workers get a clean environment (no ``MIG_*`` secrets such as API keys): only what Python needs to run.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

logger = logging.getLogger("mig.verify")

#: Variables a worker inherits; everything else (API keys, tokens, the service's settings) stays behind.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
_STARTUP_TIMEOUT_S = 120.0


class VerifierUnavailable(RuntimeError):
    """No worker process could be started or talked to: answers cannot be checked right now."""


class AnswerVerifier(Protocol):
    """Checks final answers against references (1: equal, math-aware; 0: not, or not checkable in time)."""

    def check_many(
        self, pairs: Sequence[tuple[str | None, str]], *, deadline: float | None = None
    ) -> list[int]:
        """Verdicts in input order. ``deadline``: a ``time.monotonic()`` instant no check may outlast."""
        ...

    def close(self) -> None: ...


def worker_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a worker starts with: the few inherited variables, and the package on its path."""
    source = os.environ if environ is None else environ
    env = {name: source[name] for name in _INHERITED_ENV if name in source}
    # the folder that holds this very mig_annotator package, so the worker imports the same code
    package_parent = str(Path(__file__).absolute().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([*filter(None, [env.get("PYTHONPATH")]), package_parent])
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _Worker:
    """One worker process speaking the line protocol: ``[answer, reference]`` in, ``0``/``1`` out."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mig_annotator.engine.verify_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="surrogatepass",
            env=worker_environment(),
            start_new_session=True,  # a Ctrl-C to the caller's process group does not reach it
        )
        ready = self._read_line(_STARTUP_TIMEOUT_S)
        if ready is None or ready.strip() != "ready":
            self.kill()
            raise VerifierUnavailable("the answer-verification worker process did not start")

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def check(self, answer: str, reference: str, timeout_s: float) -> int | None:
        """The verdict, or None when the worker did not answer within ``timeout_s`` (it is then killed)."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps([answer, reference]) + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError):
            self.kill()
            return None
        reply = self._read_line(timeout_s)
        if reply is None:
            self.kill()
            return None
        return 1 if reply.strip() == "1" else 0

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()

    def _read_line(self, timeout_s: float) -> str | None:
        stdout = self.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([stdout], [], [], remaining)
            if readable:
                line = stdout.readline()
                return line if line else None


class ProcessVerifier:
    """Checks answers in up to ``workers`` worker processes at once, each check within ``timeout_s``.

    Workers start on first use (or with :meth:`start`), are reused across checks, and are replaced after a
    timeout or a crash. Thread-safe: any number of threads may call :meth:`check_many` at once.
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        timeout_s: float = 5.0,
        on_timeout: Callable[[], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self._size = workers
        self._timeout_s = timeout_s
        self._on_timeout = on_timeout or (lambda: None)
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()
        for _ in range(workers):
            self._idle.put(None)  # a free slot; its process starts when first needed
        self._live: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mig-verify")
        self._refills = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mig-verify-refill")
        self._finalizer = weakref.finalize(self, _kill_all, self._live, self._lock)

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    @property
    def worker_pids(self) -> list[int]:
        """The pids of the worker processes running now (for tests and diagnostics)."""
        with self._lock:
            return sorted(worker.pid for worker in self._live if worker.alive())

    def start(self) -> None:
        """Start every worker now (a service does this at start-up so the first request does not wait)."""
        slots = [self._idle.get() for _ in range(self._size)]
        try:
            for index, worker in enumerate(slots):
                if worker is None or not worker.alive():
                    slots[index] = self._spawn()
        finally:
            for worker in slots:
                self._idle.put(worker)

    def check(self, answer: str | None, reference: str, *, deadline: float | None = None) -> int:
        return self.check_many([(answer, reference)], deadline=deadline)[0]

    def check_many(
        self, pairs: Sequence[tuple[str | None, str]], *, deadline: float | None = None
    ) -> list[int]:
        if self._closed:
            raise VerifierUnavailable("the answer verifier is closed")
        verdicts = [0] * len(pairs)
        todo = [
            (index, answer, ref) for index, (answer, ref) in enumerate(pairs) if answer and answer.strip()
        ]
        if len(todo) == 1:  # no thread hop for the common single check
            index, answer, reference = todo[0]
            verdicts[index] = self._check_one(answer, reference, deadline)
            return verdicts
        futures = [
            (index, self._threads.submit(self._check_one, answer, reference, deadline))
            for index, answer, reference in todo
        ]
        for index, future in futures:
            verdicts[index] = future.result()
        return verdicts

    def close(self) -> None:
        self._closed = True
        self._threads.shutdown(wait=True)
        self._refills.shutdown(wait=True)
        _kill_all(self._live, self._lock)

    def __enter__(self) -> ProcessVerifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_one(self, answer: str, reference: str, deadline: float | None) -> int:
        limit = self._timeout_s
        if deadline is not None:
            limit = min(limit, deadline - time.monotonic())
            if limit <= 0:
                return 0  # the caller's deadline has passed: nobody waits for this verdict
        worker = self._idle.get()
        try:
            if worker is None or not worker.alive():
                if worker is not None:
                    self._forget(worker)
                worker = None
                worker = self._spawn()
            verdict = worker.check(answer, reference, limit)
        except BaseException:
            self._idle.put(worker if worker is not None and worker.alive() else None)
            raise
        if verdict is not None:
            self._idle.put(worker)
            return verdict
        # over the limit: the worker was killed; its slot refills in the background, so no check waits for it
        self._forget(worker)
        self._refills.submit(self._refill)
        if limit >= self._timeout_s:  # over the check's own limit, not just the caller's deadline
            logger.warning(
                "verifying %r against %r ran over %.1fs; counted as 0", answer[:80], reference[:80], limit
            )
            self._on_timeout()
        return 0

    def _refill(self) -> None:
        worker: _Worker | None = None
        if not self._closed:
            try:
                worker = self._spawn()
            except VerifierUnavailable as error:  # the next check tries again
                logger.error("%s", error)
        self._idle.put(worker)

    def _spawn(self) -> _Worker:
        worker = _Worker()
        with self._lock:
            self._live.add(worker)
        return worker

    def _forget(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._live.discard(worker)


def _kill_all(live: set[_Worker], lock: threading.Lock) -> None:
    with lock:
        workers = list(live)
        live.clear()
    for worker in workers:
        worker.kill()
