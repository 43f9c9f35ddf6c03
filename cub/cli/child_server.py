"""The helper that forks a parallel run's children (`cub.modes.parallel.forkserver`).

Started once per parallel run as `python -m cub.cli.child_server`, it imports what a child run
imports, then waits. For each request it forks, and the child becomes the `cub run` it asks for:
the interrupt watch first (as `cub.cli.early_watch` does), then a session of its own, the
parent-death signal, /dev/null and the log as its standard streams, its working directory, and
cub's CLI with the request's command line, which ends the child with the run's exit code. The
helper itself only forks, reaps and reports.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
from pathlib import Path

import psutil

# What every child run imports: loaded once here, so that no child pays for it.
import cub.cli.output
import cub.cli.run
import cub.loop.prepare
import cub.loop.runner
import cub.run.driver  # noqa: F401 (loaded for the children, as the others)
from cub.cli.early_watch import EARLY_WATCH
from cub.cli.main import main
from cub.config.load import load_config
from cub.loop.prompts import system_prompt
from cub.modes.parallel.forkserver import (
    REQUEST_DECODER,
    Exited,
    NotStarted,
    Reply,
    Started,
    StartRequest,
    parent_death_signal,
    send,
)
from cub.records.redact import Redactor

_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


class _Helper:
    def __init__(self) -> None:
        # The protocol moves off stdin and stdout, which become /dev/null: nothing printed here
        # or in a child can reach the parent's pipe.
        self.requests, self.replies = os.dup(0), os.dup(1)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
        # A child's exit wakes the loop: SIGCHLD writes to this pipe (the handler is a no-op).
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self.pid = os.getpid()

    def serve(self) -> None:
        """Until the parent closes its end: start children, report their exits."""
        pending = b""
        while True:
            readable = select.select([self.requests, self.wake_r], [], [])[0]
            if self.wake_r in readable:
                while _read_some(self.wake_r):
                    pass
            self._reap()
            if self.requests in readable:
                data = os.read(self.requests, 65536)
                if not data:
                    return
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    self._start(REQUEST_DECODER.decode(line))

    def _start(self, request: StartRequest) -> None:
        if threading.active_count() > 1:
            # A thread here (a pool some warm-up started, say) would be missing from the
            # children, and any lock it held would stay held in them: refused, never a hang.
            self._reply(NotStarted(error="the helper runs threads, so it cannot fork"))
            return
        try:
            log = os.open(request.log, _LOG_FLAGS, 0o666)
        except OSError as exc:
            self._reply(NotStarted(error=f"cannot open {request.log}: {exc.strerror}"))
            return
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(log)
            self._reply(NotStarted(error=f"cannot fork: {exc.strerror}"))
            return
        if pid == 0:
            self._become_child(request, log)
            main(request.args, forked=True)  # which ends the child
        os.close(log)
        try:
            create_time: float | None = psutil.Process(pid).create_time()
        except psutil.Error:
            create_time = None
        self._reply(Started(pid=pid, create_time=create_time))

    def _become_child(self, request: StartRequest, log: int) -> None:
        # First, as in `cub.cli.early_watch`: from here on a stop signal is the run's interrupt.
        EARLY_WATCH.install()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (self.requests, self.replies, self.wake_r, self.wake_w):
            os.close(fd)
        os.setsid()
        arm = parent_death_signal()
        if arm is not None:
            arm()
            if os.getppid() != self.pid:  # the helper died before the signal was armed
                os.kill(os.getpid(), signal.SIGTERM)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.chdir(request.cwd)
        sys.argv = [sys.argv[0], *request.args]

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._reply(Exited(pid=pid, returncode=os.waitstatus_to_exitcode(status)))

    def _reply(self, reply: Reply) -> None:
        # A broken pipe: the parent is gone, and the helper's death signal is on its way.
        with contextlib.suppress(BrokenPipeError):
            send(self.replies, reply)


def _read_some(fd: int) -> bool:
    try:
        return bool(os.read(fd, 4096))
    except BlockingIOError:
        return False


def _warm_up(project_dir: Path) -> None:
    """What a child's first use computes and then keeps (msgspec's view of the config types,
    the redaction patterns compiled by the config, the reader of the bundled prompt, the search
    for secrets in the agent's output) computed once here, where every child inherits it."""
    # Best effort: whatever fails here (a config with an error, say), the child meets and
    # reports itself.
    with contextlib.suppress(Exception):
        load_config(project_dir)
    with contextlib.suppress(Exception):
        system_prompt(project_dir)
    with contextlib.suppress(Exception):
        Redactor().lines(b"\n")  # loads and compiles RE2's search (no thread is started)


def _die_with(parent: int) -> None:
    """SIGTERM this helper when ``parent`` (the parallel run) dies, as for its children; if it
    died before the signal was armed, at once."""
    arm = parent_death_signal()
    if arm is None:
        return
    arm()
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    _die_with(int(sys.argv[1]))
    _warm_up(Path.cwd())
    _Helper().serve()
