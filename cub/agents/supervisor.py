"""The one place that owns an agent's process tree (Linux).

An agent is an arbitrary program that may fork, ``setsid()`` its children out of its process
group, ignore signals, or exit while a grandchild still holds its stdout. This module starts it
in its own session, hands its output to `cub.agents.output` (redacted lines for the caller,
harness.log as it arrives), keeps track of its whole tree (how, and why three ways:
`cub.processes`), stops it by the ladder of `cub.agents.stop_ladder`, kills the whole tree at
once, and reaps it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

from cub.agents.output import AgentOutput, HarnessLog, Output, feed_stdin
from cub.agents.stop_ladder import IGNORED_AFTER, KILL_DEADLINE, SentSignal, StopReport, climb
from cub.processes import (
    RUNNER_MARKER_VAR,
    TREE_MARKER_VAR,
    Stat,
    TreeTracker,
    is_subreaper,
    read_stat,
    signal_if_same,
)
from cub.records.durable import open_log

logger = logging.getLogger("cub.agents")

_SAMPLE_INTERVAL = 0.1  # how often the background sampler looks for new descendants
_ORPHAN_PIPE_WAIT = 2.0  # agent exited, pipe still held open: finished after this long
_JOIN_TIMEOUT = 2.0


def _no_redaction(text: str) -> str:
    return text


@dataclass(frozen=True, repr=False)
class AgentRequest:
    """Everything needed to start one agent; immutable, and safe to print."""

    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    stdin: bytes | None
    log_path: Path
    redact: Callable[[str], str] = _no_redaction
    # harness.log stops growing at this many bytes (None: no cap); the output is still read.
    log_max_bytes: int | None = None
    # What the parser of the output looks for (`cub.agents.sieve`); None: it reads every line.
    looks_for: tuple[bytes, ...] | None = None

    def __repr__(self) -> str:
        # env holds API keys and the stdin is the prompt: show their size, never their content.
        stdin = "None" if self.stdin is None else f"<{len(self.stdin)} bytes>"
        return (
            f"AgentRequest(argv={self.argv!r}, cwd={str(self.cwd)!r}, "
            f"env=<{len(self.env)} variables, values hidden>, stdin={stdin}, "
            f"log_path={str(self.log_path)!r})"
        )


class AgentProcess:
    """A running agent and its whole process tree. Create with ``AgentProcess.start``.

    Typical use::

        with AgentProcess.start(request) as agent:
            while not agent.finished():
                text = agent.read_output(timeout=0.5)  # whole lines, each ending in "\n"
                ...
            text = agent.read_output(0)  # whatever arrived with the end of output

    Output already queued stays readable after ``finished()`` and after ``close()``.
    """

    pid: int
    create_time: float
    started_at: float

    @classmethod
    def start(cls, request: AgentRequest) -> AgentProcess:
        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Owned by the AgentProcess, closed in close().
        log = open(open_log(request.log_path), "ab")  # noqa: SIM115
        token = f"{os.getpid()}-{uuid.uuid4().hex}"  # unique per agent, even across runners
        # Without cub's runner marker: what this agent leaves re-parented to us is its own.
        env = {k: v for k, v in request.env.items() if k != RUNNER_MARKER_VAR}
        env[TREE_MARKER_VAR] = token
        try:
            popen = subprocess.Popen(
                list(request.argv),
                cwd=request.cwd,
                env=env,
                stdin=subprocess.DEVNULL if request.stdin is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session and process group, away from our tty
                close_fds=True,
            )
        except BaseException:
            log.close()
            raise
        try:
            return cls(request, popen, log, f"{TREE_MARKER_VAR}={token}".encode())
        except BaseException:
            _kill_and_reap(popen)
            log.close()
            raise

    def __init__(
        self, request: AgentRequest, popen: subprocess.Popen[bytes], log: IO[bytes], marker: bytes
    ) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.started_at = time.monotonic()
        # The child is not reaped before we say so, so both lookups see it even if it has exited.
        try:
            self.create_time = psutil.Process(self.pid).create_time()
        except psutil.Error:
            self.create_time = time.time()
        root = read_stat(self.pid)
        self._tree = TreeTracker(self.pid, root.starttime if root else 0, marker, adopt=True)
        self._lock = threading.RLock()  # guards the tree tracker and the exit status
        self._members: dict[int, Stat] = {}
        self._last_refresh = 0.0
        self._exit_status: int | None = None
        self._exited_at: float | None = None
        self._signals: list[SentSignal] = []

        assert popen.stdout is not None
        self._stopping = threading.Event()
        self._output = AgentOutput(
            popen.stdout,
            HarnessLog(log, request.log_max_bytes, self.pid),
            request.redact,
            pid=self.pid,
            stopping=self._stopping,
            looks_for=request.looks_for,
        )
        self._closed = False

        self._threads = [
            threading.Thread(target=self._output.drain, name=f"cub-agent-{self.pid}-output"),
            threading.Thread(target=self._sample, name=f"cub-agent-{self.pid}-sampler"),
        ]
        if request.stdin is not None:
            assert popen.stdin is not None
            # A thread, so a child that never reads its stdin cannot block us on a full pipe.
            self._threads.append(
                threading.Thread(
                    target=feed_stdin,
                    args=(popen.stdin, request.stdin),
                    name=f"cub-agent-{self.pid}-stdin",
                )
            )
        for thread in self._threads:
            thread.daemon = True  # never keep cub alive; close() joins them with a bound
            thread.start()

    # ---------------------------------------------------------------- caller-facing API

    @property
    def returncode(self) -> int | None:
        return self._poll_exit()

    def read(self, timeout: float) -> Output:
        """The complete lines that have arrived; waits up to ``timeout`` for one (or for the
        end)."""
        if time.monotonic() - self.started_at >= _SAMPLE_INTERVAL / 2:
            # Not at once: an agent done within the first moments (a short command) then
            # costs one /proc sweep, the full one at close.
            self._refresh_if_stale()
        return self._output.wait_for_output(timeout, self.finished)

    def read_output(self, timeout: float) -> str:
        """``read`` as one text (each line ending in "\n")."""
        return self.read(timeout).text

    def read_lines(self, timeout: float) -> list[str]:
        """``read_output`` as a list of lines, without their newlines."""
        return self.read_output(timeout).split("\n")[:-1]

    def finished(self) -> bool:
        """The agent exited and its output is drained (or can no longer be waited for)."""
        if self._poll_exit() is None:
            return False
        if self._output.closed:
            return True
        exited_at = self._exited_at if self._exited_at is not None else time.monotonic()
        if time.monotonic() - exited_at >= _ORPHAN_PIPE_WAIT:
            return True  # a leftover holds the pipe open; close() will kill it
        self._refresh_if_stale()
        with self._lock:
            members_alive = any(st.alive for st in self._members.values())
        # Nothing we know of is alive, yet the pipe is open: an unknown holder. Finished once
        # the reader has handled everything the pipe had (it is idle and nothing is pending).
        output = self._output
        return not members_alive and not output.pipe_readable() and output.reader_waiting

    def signal_tree(self, sig: int) -> None:
        """Send ``sig`` to the agent's process group and to every known member of its tree."""
        with self._lock:
            members = self._refresh(full=True)
            alive = sum(1 for st in members.values() if st.alive)
            self._signals.append(SentSignal(sig, "tree", alive, time.time()))
            by_group = not self._tree.root_reaped
            if by_group:
                # Safe: the agent is unreaped, so its pid (= its group id) is still ours.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, sig)
            for pid, st in members.items():
                # Group members got it from killpg already; a second SIGINT would read as
                # "press Ctrl+C again to force quit" to many agents.
                if st.alive and not (by_group and st.pgrp == self.pid):
                    signal_if_same(pid, st.starttime, sig)

    def stop(
        self,
        first_signal: int,
        grace: float,
        term_wait: float = 2.0,
        *,
        leader_first: bool = False,
        ignored_after: float | None = IGNORED_AFTER,
    ) -> StopReport:
        """Stop the whole tree by the stop ladder (`cub.agents.stop_ladder.climb`)."""
        self._output.stop_waiting()  # while it is being stopped, nobody reads its lines
        return climb(
            self,
            first_signal,
            grace,
            term_wait,
            leader_first=leader_first,
            ignored_after=ignored_after,
        )

    def remaining(self, timeout: float) -> Output:
        """Every line not read yet, waiting up to ``timeout`` for the output to end: what an
        agent printed while it was being stopped (its final usage, a last commit) still
        counts."""
        return self._output.remaining_output(timeout)

    @property
    def root_reaped(self) -> bool:
        """The agent itself has been reaped: its pid no longer names its tree."""
        return self._tree.root_reaped

    @property
    def last_output_at(self) -> float:
        """When the agent last printed anything (monotonic clock)."""
        return self._output.last_output_at

    @property
    def log_dropped_bytes(self) -> int:
        """Bytes of (redacted) output not written to harness.log because of its cap."""
        return self._output.log.dropped

    def take_signals(self) -> list[SentSignal]:
        """The signals sent to the agent since the last call, oldest first."""
        with self._lock:
            sent, self._signals = self._signals, []
        return sent

    def kill_tree(self) -> None:
        """SIGKILL the whole tree at once, no grace, and reap it."""
        self._output.stop_waiting()
        logger.warning(
            "agent pid=%d: killing its process tree with SIGKILL (up to %.1fs)",
            self.pid,
            KILL_DEADLINE,
        )
        self.kill_everything()
        self.reap()

    def close(self) -> None:
        """Make sure the tree is dead, stop the threads, close the log. Idempotent."""
        if self._closed:
            return
        try:
            if not self.tree_gone(full=True):
                logger.warning("agent pid=%d: closing with processes left; killing them", self.pid)
                self.kill_everything()
            self.reap()
        finally:
            self._stopping.set()
            for thread in self._threads:
                thread.join(_JOIN_TIMEOUT)
            self._output.log.close()
            if not self._threads[0].is_alive():  # never close an fd a live thread may read
                self._output.pipe.close()
        # Only now: if the kill above was interrupted (Ctrl+C), calling close() again retries it.
        self._closed = True

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AgentProcess pid={self.pid} returncode={self.returncode}>"

    # ------------------------------------------------------------------- the tree

    def _poll_exit(self) -> int | None:
        """The agent's exit status, observed without reaping it (see module docstring)."""
        with self._lock:
            if self._exit_status is not None:
                return self._exit_status
            status = self._popen.returncode
            if status is None:
                try:
                    result = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                except ChildProcessError:
                    result = None  # reaped through the Popen just now: read it next time
                if result is None:
                    return None
                signalled = result.si_code != os.CLD_EXITED
                status = -result.si_status if signalled else result.si_status
            self._exit_status = status
            self._exited_at = time.monotonic()
            return status

    def _refresh(self, full: bool = False) -> dict[int, Stat]:
        with self._lock:
            self._members = self._tree.refresh(full)
            self._last_refresh = time.monotonic()
            self._reap_adopted()
            return self._members

    def _refresh_if_stale(self) -> None:
        if time.monotonic() - self._last_refresh >= _SAMPLE_INTERVAL / 2:
            self._refresh()

    def _reap_adopted(self) -> None:
        """Reap dead members that were re-parented to us (only when we are a subreaper)."""
        me = os.getpid()
        for pid, st in self._members.items():
            if not st.alive and st.ppid == me and pid != self.pid:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)

    def tree_gone(self, full: bool = False) -> bool:
        if self._poll_exit() is None:
            return False
        return not any(st.alive for st in self._refresh(full).values())

    def signal_leader(self, sig: int) -> None:
        with self._lock:
            self._signals.append(SentSignal(sig, "main", 1, time.time()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)  # safe: unreaped, so the pid is still the agent's

    def wait_tree_gone(
        self,
        timeout: float,
        ignored_after: float | None = None,
        *,
        until_leader_exits: bool = False,
    ) -> bool:
        """Whether the tree is gone within ``timeout``; False early when the agent is still
        printing ``ignored_after`` seconds after the wait began (it ignores the signal), or,
        with ``until_leader_exits``, when the main process has exited but not all the tree."""
        begin = time.monotonic()
        deadline = begin + timeout
        while not self.tree_gone():
            now = time.monotonic()
            if now >= deadline:
                return False
            if until_leader_exits and self._poll_exit() is not None:
                return False
            if ignored_after is not None and self.last_output_at - begin > ignored_after:
                logger.warning(
                    "agent pid=%d: still printing %.1fs after the signal; not waiting longer",
                    self.pid,
                    self.last_output_at - begin,
                )
                return False
            time.sleep(min(0.02, deadline - now))
        return True

    def kill_everything(self) -> None:
        """SIGKILL rounds until a full sweep finds nobody alive (bounded)."""
        deadline = time.monotonic() + KILL_DEADLINE
        while not self.tree_gone(full=True):
            if time.monotonic() >= deadline:
                with self._lock:
                    left = sorted(pid for pid, st in self._members.items() if st.alive)
                logger.error("agent pid=%d: processes survived SIGKILL: %s", self.pid, left)
                return
            self.signal_tree(signal.SIGKILL)
            self.wait_tree_gone(min(0.5, max(0.0, deadline - time.monotonic())))

    def reap(self) -> None:
        """Reap the agent once it has exited; after this its pid no longer identifies the tree."""
        if self._poll_exit() is None:
            return
        with self._lock:
            if not self._tree.root_reaped:
                try:
                    self._popen.wait(timeout=1.0)
                except subprocess.TimeoutExpired:  # cannot happen once waitid saw the exit
                    logger.error("agent pid=%d: could not be reaped", self.pid)
                    return
                self._tree.root_reaped = True
            # Reaps members that were re-parented to us; an agent that started nothing (the
            # last sweep saw it alone) has none, and a sweep of /proc costs about a millisecond.
            if is_subreaper() and any(pid != self.pid for pid in self._members):
                self._refresh()

    # ----------------------------------------------------------------- threads

    def _sample(self) -> None:
        """Background: notice the exit, find new descendants, reap adopted zombies."""
        try:
            while not self._stopping.wait(_SAMPLE_INTERVAL):
                exited = self._poll_exit() is not None
                members = self._refresh()
                if exited and self._output.closed and not any(st.alive for st in members.values()):
                    return  # nothing left to watch; on-demand refreshes still work
        except Exception:  # a bug here must not take the run down; tracking goes on on demand
            logger.exception("agent pid=%d: process sampler failed", self.pid)


def _kill_and_reap(popen: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    popen.wait()
