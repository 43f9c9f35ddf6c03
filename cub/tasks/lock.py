"""The exclusive lock every change of a backlog is made under, between processes and threads.

An ``flock`` on a lock file beside the backlog's ledger: the same lock `filelock` took before,
so a cub of either kind on the same backlog excludes the other. Taken twice per task by a
running loop, it is kept to a few system calls (the library's own bookkeeping cost more than
the rest of a claim).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import weakref
from pathlib import Path

from cub.records.durable import make_private_dir

POLL_INTERVAL_S = 0.01


class LockTimeout(Exception):
    """Another process held the lock for longer than the timeout."""


class BacklogLock:
    """Reentrant within one thread, exclusive between threads and processes."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.lock_file = str(path)
        self.timeout = timeout
        self._forget()
        _all_locks.add(self)

    def _forget(self) -> None:
        """Held by nobody in this process (a forked child: a hold it inherited is its
        parent's, and the parent's thread that held it does not exist here)."""
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # the parent's own descriptor keeps its flock
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def acquire(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds (the lock's own by default; 0: do not wait); raises
        `LockTimeout`."""
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        held = (
            self._thread_lock.acquire(timeout=wait)
            if wait > 0
            else self._thread_lock.acquire(blocking=False)
        )
        if not held:
            raise LockTimeout(self.lock_file)
        try:
            if self._depth == 0:
                self._fd = _take(self.lock_file, deadline)
        except BaseException:
            self._thread_lock.release()
            raise
        self._depth += 1

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        self._thread_lock.release()


_all_locks: weakref.WeakSet[BacklogLock] = weakref.WeakSet()


def _forget_all() -> None:
    for lock in list(_all_locks):
        lock._forget()


os.register_at_fork(after_in_child=_forget_all)


def _take(path: str, deadline: float) -> int:
    """A descriptor of ``path`` holding its exclusive flock, by ``deadline``."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        make_private_dir(Path(path).parent)  # cub's state directory, not made yet
        fd = os.open(path, flags, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(path) from None
                time.sleep(POLL_INTERVAL_S)
    except BaseException:
        os.close(fd)
        raise
