"""Starting a parallel run's children by forking a warm interpreter instead of executing one.

A child is `cub run --task ID --worktree ...` (`children.child_args`). Executed as a new
`python -m cub`, it spent more CPU starting the interpreter and importing cub (≈0.15 s) than on
everything else it does. So the parent starts one helper per run, `python -m
cub.cli.child_server`, which imports once what a child needs and then forks one child per
request. A forked child is the same run an executed one was: the same command line through
cub's CLI, its own session, stdin from /dev/null, its output in its log, SIGTERM from the kernel
when its parent (the helper) dies. The helper reaps the children and reports each exit here.

The helper leads a session of its own, so a Ctrl+C in the terminal reaches only the parent, and
gets SIGTERM from the kernel when the parent dies, which then passes the same SIGTERM on to
every child: a parent killed outright still has its children stop in order and leave records.

The protocol: requests on the helper's stdin, replies on its stdout, one JSON message a line.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

from cub.errors import CubError
from cub.processes import process_matches

_PR_SET_PDEATHSIG = 1
# How long the parent waits for the helper to answer a request (it only forks), and for it to
# exit once told to.
_ANSWER_TIMEOUT_S = 30.0
_CLOSE_TIMEOUT_S = 5.0
# What an exit that nobody could observe counts as (the helper died before reporting it, and
# the child was not re-parented to the parent): a failure, the record says the rest.
LOST_EXIT = 1


class StartRequest(msgspec.Struct, tag="start"):
    args: list[str]  # cub's command line, from "run" on
    cwd: str
    log: str  # the file the child's stdout and stderr go to


class Started(msgspec.Struct, tag="started"):
    pid: int
    # Read by the helper before it can have reaped the child: the pid is still the child's.
    create_time: float | None


class NotStarted(msgspec.Struct, tag="not_started"):
    error: str


class Exited(msgspec.Struct, tag="exited"):
    pid: int
    returncode: int  # as subprocess gives it: -N when killed by signal N


Reply = Started | NotStarted | Exited

MESSAGE_ENCODER = msgspec.json.Encoder()
REQUEST_DECODER = msgspec.json.Decoder(StartRequest)
REPLY_DECODER = msgspec.json.Decoder(Reply)


def send(fd: int, message: StartRequest | Reply) -> None:
    """One message, as one line, all of it (a signal may cut a write to a pipe short)."""
    data = memoryview(MESSAGE_ENCODER.encode(message) + b"\n")
    while data:
        data = data[os.write(fd, data) :]


def parent_death_signal() -> Callable[[], None] | None:
    """A step that asks Linux to SIGTERM the calling process when its parent dies (None where
    that cannot be had), so a parent killed outright does not leave its children working
    unsupervised: they stop in order."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    return arm


class ForkServer:
    """The parent's end of the helper: start children, and learn how each one ended."""

    def __init__(self, cwd: Path, env: Mapping[str, str]) -> None:
        try:
            # The helper arms its own death signal, then checks that its parent is still this
            # process (no preexec_fn: Python code between fork and exec is unsafe in a process
            # with threads, as this one may have).
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "cub.cli.child_server", str(os.getpid())],
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                # The parent's: the helper prints nothing unless it fails (a traceback).
                stderr=None,
                start_new_session=True,
            )
        except OSError as exc:
            raise CubError(f"cannot start the helper that starts child runs: {exc}") from exc
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._requests = self._proc.stdin.fileno()
        self._replies = self._proc.stdout.fileno()
        os.set_blocking(self._replies, False)
        self._buffer = b""
        self._answers: deque[Started | NotStarted] = deque()
        self._exits: dict[int, int] = {}
        self._gone = False  # the helper's end of the replies closed: it exited

    def start(self, args: list[str], cwd: Path, log: Path) -> ForkedProcess:
        """Fork a child running cub with ``args`` in ``cwd``, its output to ``log``."""
        try:
            send(self._requests, StartRequest(args=args, cwd=str(cwd), log=str(log)))
        except OSError as exc:
            raise CubError(f"the helper that starts child runs is gone ({exc})") from exc
        deadline = time.monotonic() + _ANSWER_TIMEOUT_S
        while not self._answers:
            left = deadline - time.monotonic()
            if self._gone or left <= 0:
                raise CubError("the helper that starts child runs did not answer")
            self._receive(left)
        answer = self._answers.popleft()
        if isinstance(answer, NotStarted):
            raise CubError(f"cannot start the child run: {answer.error}")
        return ForkedProcess(answer.pid, answer.create_time, self)

    def alive(self) -> bool:
        """Whether the helper still answers (it has not closed its end)."""
        self._receive(0.0)
        return not self._gone

    def returncode(self, child: ForkedProcess) -> int | None:
        """How ``child`` ended, None while it runs."""
        self._receive(0.0)
        if child.pid in self._exits:
            return self._exits[child.pid]
        if self._gone:
            return self._orphan_exit(child)
        return None

    def wait_for_news(self, timeout: float) -> None:
        self._receive(timeout)

    def close(self) -> None:
        """Tell the helper to exit (every child has been collected by now) and wait for it."""
        with contextlib.suppress(OSError):
            self._proc.stdin.close()  # type: ignore[union-attr]
        try:
            self._proc.wait(timeout=_CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        with contextlib.suppress(OSError):
            self._proc.stdout.close()  # type: ignore[union-attr]

    def _receive(self, timeout: float) -> None:
        """Read what the helper has said, waiting up to ``timeout`` for something."""
        if self._gone:
            return
        if timeout > 0 and not select.select([self._replies], [], [], timeout)[0]:
            return
        chunks = []
        while True:
            try:
                chunk = os.read(self._replies, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self._gone = True
                break
            chunks.append(chunk)
        *lines, self._buffer = (self._buffer + b"".join(chunks)).split(b"\n")
        for line in lines:
            reply = REPLY_DECODER.decode(line)
            if isinstance(reply, Exited):
                self._exits[reply.pid] = reply.returncode
            else:
                self._answers.append(reply)

    def _orphan_exit(self, child: ForkedProcess) -> int | None:
        """The helper died before it reported ``child``'s exit. The child was re-parented to
        us (a parallel parent is a subreaper) or to init: reaped here if it is ours."""
        try:
            done, status = os.waitpid(child.pid, os.WNOHANG)
        except ChildProcessError:
            return None if process_matches(child.pid, child.create_time) else LOST_EXIT
        if done == 0:
            return None
        self._exits[child.pid] = os.waitstatus_to_exitcode(status)
        return self._exits[child.pid]


class ForkedProcess:
    """A child forked by the helper, with the part of `subprocess.Popen` the parent uses."""

    def __init__(self, pid: int, create_time: float | None, server: ForkServer) -> None:
        self.pid = pid
        self.create_time = create_time  # with the pid, which process this is
        self.returncode: int | None = None
        self._server = server

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.returncode(self)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                raise subprocess.TimeoutExpired(f"child run {self.pid}", timeout or 0.0)
            self._server.wait_for_news(left)
        return code
