"""Running one of the project's own commands (a hook, a `loop.verify` check) to its end.

The command gets a process group (a session) of its own and its output goes to an anonymous
temporary file rather than a pipe: a background process it leaves behind can keep writing
without ever making cub wait, and when the command times out or cub is interrupted, the whole
group is stopped (SIGTERM, then SIGKILL after a grace), not just the command.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, NamedTuple

KILL_GRACE_S = 2.0
MAX_OUTPUT_BYTES = 1024 * 1024  # what is kept of a command's output: its end


class Finished(NamedTuple):
    exit_code: int  # negative: killed by that signal
    timed_out: bool  # stopped by cub: the timeout, or an interrupt
    duration_s: float
    output: str  # stdout and stderr together, at most MAX_OUTPUT_BYTES of the end


def run_in_group(
    command: Sequence[str] | str,
    *,
    cwd: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    shell: bool = False,
    interrupted: Callable[[], bool] | None = None,
) -> Finished:
    """Run ``command`` to its end, or until ``timeout`` or ``interrupted()``. A command that
    cannot be started raises `OSError`."""
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        proc = subprocess.Popen(
            command,
            shell=shell,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        exit_code, timed_out = _wait(proc, timeout, interrupted)
        duration = time.monotonic() - started
        return Finished(exit_code, timed_out, duration, _read_tail(out, MAX_OUTPUT_BYTES))


def _wait(
    proc: subprocess.Popen[bytes], timeout: float, interrupted: Callable[[], bool] | None = None
) -> tuple[int, bool]:
    """Wait for the command; on timeout (or interruption) stop its whole process group.
    Returns (code, stopped)."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                return proc.wait(timeout=min(0.1, max(0.0, deadline - time.monotonic()))), False
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline or (interrupted is not None and interrupted()):
                    _stop_group(proc)
                    return proc.wait(), True
    except BaseException:
        # Interrupted or force-killed while it runs: leave nothing behind, then go on up.
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group; SIGKILL whatever is still there after the grace."""
    _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_S
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader so it does not count as still running
        if not _group_alive(proc.pid):
            return
        time.sleep(0.05)
    _signal_group(proc.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # Already gone, or the group id now belongs to someone else: nothing of ours to stop.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_tail(out: IO[bytes], limit: int) -> str:
    size = out.seek(0, os.SEEK_END)
    out.seek(max(0, size - limit))
    text = out.read().decode("utf-8", "replace")
    if size > limit:
        text = f"[... {size - limit} bytes omitted]\n{text}"
    return text
