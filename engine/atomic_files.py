"""Crash-safe files, shared by the builder and the service's audit log.

* Writes go to a hidden temporary sibling (``.<name>.tmp-<pid>``), are flushed and fsynced, then renamed into
  place with :func:`commit`, which also fsyncs the folder: a reader sees a file whole or not at all, and a
  rename that returned survives a power cut.
* Locks are exclusive ``flock`` locks that the kernel releases when the holder dies, so a crashed writer never
  leaves a folder locked.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

TMP_MARK = ".tmp-"


class LockHeld(RuntimeError):
    """Another live process holds the lock."""


def tmp_path(path: Path) -> Path:
    """The temporary sibling this process writes ``path`` through."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def temporaries_of(path: Path) -> list[Path]:
    """Temporary siblings of ``path`` left by any process (a killed writer's leftovers)."""
    return sorted(path.parent.glob(f".{path.name}{TMP_MARK}*"))


def fsync_handle(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def commit(tmp: Path, path: Path) -> None:
    """Atomically move a finished temporary file into place and make the rename durable."""
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextmanager
def atomic_writer(path: Path) -> Iterator[IO[bytes]]:
    """A binary handle on ``path``'s temporary sibling; on a clean exit it is fsynced and committed.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    tmp = tmp_path(path)
    try:
        with tmp.open("wb") as handle:
            yield handle
            fsync_handle(handle)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    commit(tmp, path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_writer(path) as handle:
        handle.write(data)


def remove_stale_tmp(folders: Iterable[Path]) -> None:
    """Delete temporary files killed writers left behind (call only while holding the folder's lock)."""
    for folder in folders:
        if folder.is_dir():
            for path in folder.rglob(f".*{TMP_MARK}*"):
                path.unlink(missing_ok=True)


def try_lock(descriptor: int) -> bool:
    """Take an exclusive lock on an open file without waiting; False when another process holds it."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class FileLock:
    """An exclusive advisory lock on ``path`` (created if missing); :class:`LockHeld` if already held."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._handle: IO[bytes] | None = None

    @property
    def path(self) -> Path:
        return self._path

    def acquire(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        handle = self._path.open("ab")
        if not try_lock(handle.fileno()):
            handle.close()
            raise LockHeld(f"{self._path} is locked by another process")
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
