"""The backlog's lock: exclusive between processes and threads, reentrant within a thread, and
a wait that ends in `LockTimeout`."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cub.tasks.lock import BacklogLock, LockTimeout

# Holds the flock of the file named by argv[1] until its stdin closes.
HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def test_a_lock_another_process_holds_times_out_and_is_taken_once_free(tmp_path: Path) -> None:
    path = tmp_path / "backlog.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        lock = BacklogLock(path, timeout=0.2)
        with pytest.raises(LockTimeout):
            lock.acquire()
        with pytest.raises(LockTimeout):
            lock.acquire(timeout=0)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    lock.acquire(timeout=5)
    lock.release()


def test_the_lock_is_reentrant_in_one_thread_and_exclusive_between_threads(
    tmp_path: Path,
) -> None:
    lock = BacklogLock(tmp_path / "backlog.lock", timeout=5)
    lock.acquire()
    lock.acquire()  # a transaction inside another one does not wait on itself
    taken = threading.Event()

    def other() -> None:
        lock.acquire()
        taken.set()
        lock.release()

    thread = threading.Thread(target=other)
    thread.start()
    lock.release()
    time.sleep(0.1)
    assert not taken.is_set()  # still held once
    lock.release()
    thread.join(timeout=5)
    assert taken.is_set()


def test_the_lock_file_is_made_in_a_missing_private_directory(tmp_path: Path) -> None:
    path = tmp_path / "state" / "backlog" / "x.lock"
    lock = BacklogLock(path, timeout=1)
    lock.acquire()
    lock.release()
    assert path.exists()
    assert (path.parent.stat().st_mode & 0o777) == 0o700


def test_a_child_forked_while_the_lock_is_held_does_not_hold_it(tmp_path: Path) -> None:
    lock = BacklogLock(tmp_path / "backlog.lock", timeout=5)
    lock.acquire()
    pid = os.fork()
    if pid == 0:  # the child: the parent's hold is not its own
        code = 1
        try:
            lock.acquire(timeout=0.2)
        except LockTimeout:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    lock.release()
