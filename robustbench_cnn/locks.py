"""An exclusive inter-process file lock (``fcntl.flock``), e.g. one per model-cache key or run directory."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from robustbench_cnn.errors import RobustBenchError


class LockTimeout(RobustBenchError):
    """Another process held the lock for longer than the caller was willing to wait."""


@contextmanager
def file_lock(path: Path, timeout_s: float | None = None, poll_s: float = 0.1) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing, never deleted) for the ``with`` block.

    Blocks until the lock is free, or raises :class:`LockTimeout` after ``timeout_s`` seconds. The
    lock belongs to this open file, so two threads, two workers or two runs exclude each other; it
    is released when the block ends or the process dies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if timeout_s is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(f"{path} stayed locked for {timeout_s:g} s by another process") from None
                    time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
