"""The one place that owns an agent's process tree (Linux).

An agent is an arbitrary program that may fork, ``setsid()`` its children out of its process
group, ignore signals, or exit while a grandchild still holds its stdout. This module starts it
in its own session, streams its output (redacted) to harness.log as it arrives, hands complete
lines to the caller, stops it with a grace ladder, kills the whole tree at once, and reaps it.

How the tree is found, and why three ways:

* **Parent links**: every ~100 ms (and on each ``read_lines``) /proc is scanned and every
  descendant of a known member is added to the known set. Members are remembered by
  (pid, start time), the same identity psutil uses, so a reused pid is never signalled.
* **Session / process group**: the agent leads its own session, so anything still in that
  session or group belongs to it, even after its parent died and it was re-parented to init.
  The agent is deliberately *not reaped* until we are done with the tree (its exit is observed
  with ``waitid(WNOWAIT)``): while its zombie exists the kernel cannot hand its pid, and so its
  session and group ids, to anyone else.
* **Environment marker**: the child gets ``CUB_AGENT_TREE=<token>`` in its environment, which
  descendants inherit even after ``setsid()``. A full sweep for that marker runs before every
  signal and kill, so an escapee that was never seen by the sampler is still found (the same
  trick as Jenkins' ProcessTreeKiller).

Subreaper: ``become_subreaper()`` makes the calling process a child subreaper, so orphaned
descendants are re-parented to cub instead of init and stay visible as cub's children. It is
process-wide, so it is the CLI's decision at start-up, and this module works with or without it.
When it is on, adopted members die as zombies of *this* process; they are reaped here with
``os.waitpid(pid, WNOHANG)`` on their exact pid, and only for pids known to be in the agent's
tree and not the agent itself (which its ``Popen`` reaps). ``waitpid(-1)`` is never used: it
would steal the exit status of other ``subprocess`` children of cub.

Adopted orphans: an escapee that cleared its environment, left the agent's session and whose
parent exited before the sampler saw it (``env -i setsid sh -c 'sleep 300 &'``) matches none of
the three ways above; but under a subreaper it becomes *our* child. So a child of ours that we
did not start is taken as a member of the current agent's tree. Our own other children (git,
hooks, parallel ``cub`` children) and whatever *they* leave behind are told apart by lineage:

* an agent's descendant can never be in cub's session (the agent starts a session of its own
  and a process can only ever create a new one, not join another);
* ``become_subreaper()`` puts ``CUB_RUNNER=<token>`` in cub's environment, which everything cub
  starts inherits and which the agent alone does not get (``AgentProcess.start`` removes it);
* a child caught between fork and exec has cub's own initial environment; it is ours too.

Only a live process that is younger than the agent is adopted; a zombie child of ours that was
never seen alive in the tree is left to whoever started it (it may be a ``Popen`` of cub's).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

import psutil

from cub.records.durable import open_log

__all__ = [
    "RUNNER_MARKER_VAR",
    "TREE_MARKER_VAR",
    "AgentProcess",
    "AgentRequest",
    "SentSignal",
    "StopReport",
    "become_subreaper",
    "kill_adopted_orphans",
    "kill_process_tree",
    "kill_processes_with_env",
    "process_matches",
]

logger = logging.getLogger("cub.agents")

TREE_MARKER_VAR = "CUB_AGENT_TREE"
"""Environment variable that marks every process of one agent's tree (see module docstring)."""

RUNNER_MARKER_VAR = "CUB_RUNNER"
"""Environment variable that marks everything a subreaper cub starts, except its agents: what
a re-parented child of ours without it came from an agent (see module docstring)."""

_PR_SET_CHILD_SUBREAPER = 36
_SAMPLE_INTERVAL = 0.1  # how often the background sampler looks for new descendants
_READ_POLL_MS = 200  # the reader wakes at least this often to flush partial lines
_READ_SIZE = 65536
_PARTIAL_LINE_AFTER = 1.0  # a line without newline reaches the log after this long
_MAX_LINE_BYTES = 1 << 20  # longer "lines" are cut so memory and redaction stay bounded
_ORPHAN_PIPE_WAIT = 2.0  # agent exited, pipe still held open: finished after this long
_KILL_DEADLINE = 3.0  # give up (and log) if SIGKILL cannot clear the tree in this long
_CREATE_TIME_TOLERANCE = 0.01
_JOIN_TIMEOUT = 2.0
# An agent still printing this long after a stop signal is taken to ignore it (see stop()).
_IGNORED_AFTER = 3.0


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

    def __repr__(self) -> str:
        # env holds API keys and the stdin is the prompt: show their size, never their content.
        stdin = "None" if self.stdin is None else f"<{len(self.stdin)} bytes>"
        return (
            f"AgentRequest(argv={self.argv!r}, cwd={str(self.cwd)!r}, "
            f"env=<{len(self.env)} variables, values hidden>, stdin={stdin}, "
            f"log_path={str(self.log_path)!r})"
        )


class SentSignal(NamedTuple):
    """One signal cub sent to the agent: to its main process only, or to its whole tree."""

    signal: int
    scope: str  # "main" or "tree"
    processes: int  # how many were alive to get it
    at: float  # wall-clock time

    @property
    def name(self) -> str:
        return _signame(self.signal)


@dataclass(frozen=True)
class StopReport:
    """What ``AgentProcess.stop`` had to do."""

    first_signal: int
    signals_sent: tuple[int, ...]  # in order; empty if the tree was already gone
    escalated_to: int | None  # SIGTERM or SIGKILL when the first signal was not enough
    returncode: int | None
    elapsed: float


# --------------------------------------------------------------------------------- /proc


class _Stat(NamedTuple):
    state: str
    ppid: int
    pgrp: int
    session: int
    starttime: int  # clock ticks since boot: with the pid, a process's identity

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


def _read_stat(pid: int) -> _Stat | None:
    # Plain os calls: a sweep reads one of these per process, and a buffered file object
    # doubles its cost. The line is a few hundred bytes; one read gets it whole.
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return _Stat(
            fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19])
        )
    except (IndexError, ValueError):
        return None


def _scan_proc() -> dict[int, _Stat]:
    procs: dict[int, _Stat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _read_stat(int(name))) is not None:
            procs[int(name)] = st
    return procs


def _read_proc_file(pid: int, name: str) -> bytes | None:
    """/proc/<pid>/<name>; None when the process is gone or another user's."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return None


def _environ(pid: int) -> list[bytes]:
    """The process's environment entries; empty when it is gone or another user's."""
    data = _read_proc_file(pid, "environ")
    return [] if data is None else data.split(b"\0")


def _environ_has(pid: int, marker: bytes) -> bool:
    return marker in _environ(pid)


def _read_marker(pid: int) -> bytes | None:
    prefix = TREE_MARKER_VAR.encode() + b"="
    return next((e for e in _environ(pid) if e.startswith(prefix)), None)


def _ancestors_and_self(procs: Mapping[int, _Stat]) -> set[int]:
    found, pid = set(), os.getpid()
    while pid > 0 and pid not in found:
        found.add(pid)
        pid = procs[pid].ppid if pid in procs else 0
    return found


def _signal_if_same(pid: int, starttime: int, sig: int) -> bool:
    """Signal pid only if it is still the process we identified (pid + start time)."""
    st = _read_stat(pid)
    if st is None or st.starttime != starttime:
        return False
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):  # gone, or setuid: not ours to stop
        return False
    return True


class _TreeTracker:
    """The known members of one agent's tree, by (pid, start time).

    ``adopt``: the agent is this process's child, so orphans re-parented to us (when we are a
    subreaper) that none of our own children left are members too (see module docstring).
    """

    def __init__(
        self, root: int, root_start: int, marker: bytes | None, *, adopt: bool = False
    ) -> None:
        self.root = root
        self.root_start = root_start
        self.marker = marker
        self.adopt = adopt
        # Set once the root is reaped: from then on its pid, hence its session and group ids,
        # may belong to someone else, so they no longer identify members.
        self.root_reaped = False
        self.known: dict[int, int] = {root: root_start}

    def refresh(self, full: bool) -> dict[int, _Stat]:
        """Rescan /proc; returns every member (zombies included) with its current stat.

        ``full`` also reads the environment of every process to find escapees; otherwise only
        this process's own children (adopted orphans, when we are a subreaper) are checked.
        """
        procs = _scan_proc()
        me = os.getpid()
        members = {pid for pid, start in self.known.items() if _same(procs, pid, start)}
        for pid, st in procs.items():
            if pid in members:
                continue
            if (
                self._in_root_session(st)
                or self._marked(pid, st, me, full)
                or self._adopted(pid, st, me)
            ):
                members.add(pid)
        _add_descendants(members, procs)
        # Never ourselves or an ancestor (cub could run inside an agent's session).
        members -= _ancestors_and_self(procs)
        self.known = {pid: procs[pid].starttime for pid in members}
        return {pid: procs[pid] for pid in members}

    def _in_root_session(self, st: _Stat) -> bool:
        if self.root_reaped:
            return False
        return (st.session == self.root or st.pgrp == self.root) and st.starttime >= self.root_start

    def _marked(self, pid: int, st: _Stat, me: int, full: bool) -> bool:
        if self.marker is None or not (full or st.ppid == me):
            return False
        if st.starttime < self.root_start:
            return False  # older than the agent: cannot be one of its descendants
        return _environ_has(pid, self.marker)

    def _adopted(self, pid: int, st: _Stat, me: int) -> bool:
        """A live orphan re-parented to us that is not of our own making (module docstring)."""
        if not (self.adopt and _is_subreaper) or st.ppid != me or pid == self.root:
            return False
        if not st.alive or st.starttime < self.root_start or st.session == os.getsid(0):
            return False
        environ = _read_proc_file(pid, "environ")
        if environ is None:
            return False  # gone, or another user's: nothing we could stop anyway
        if not environ and not _read_proc_file(pid, "cmdline"):
            return False  # exiting (its memory is gone): what it was cannot be told any more
        if _runner_entry in environ.split(b"\0") or environ == _own_initial_environ:
            return False  # started by cub (a hook, git, a child cub) or by one of those
        # Still the same live process, so what was read is its own.
        again = _read_stat(pid)
        return again is not None and again.alive and again.starttime == st.starttime


def _same(procs: Mapping[int, _Stat], pid: int, starttime: int) -> bool:
    st = procs.get(pid)
    return st is not None and st.starttime == starttime


def _add_descendants(members: set[int], procs: Mapping[int, _Stat]) -> None:
    children: dict[int, list[int]] = {}
    for pid, st in procs.items():
        children.setdefault(st.ppid, []).append(pid)
    stack = list(members)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in members:
                members.add(child)
                stack.append(child)


# ------------------------------------------------------------------------------- output


def _utf8_cut(buf: bytes | bytearray, end: int) -> int:
    """The largest cut <= end that does not split a UTF-8 sequence."""
    for back in range(1, min(4, end) + 1):
        byte = buf[end - back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        if byte < 0x80:
            return end
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4
        return end if back >= need else end - back
    return end


def _decode(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", "replace")


class _LineAssembler:
    """Turns output chunks into redacted lines for the caller and redacted text for the log.

    Redaction works on whole lines, so a secret split across reads is still masked: the log is
    written per complete line. A line that stays incomplete for ``partial_after`` seconds (a
    progress bar) is written anyway so the log shows it, in two ways:

    * while output keeps coming, only up to the last whitespace (a secret is one token, so the
      token being written is held back until it is finished);
    * once output has been quiet that long, all of it.

    Each partial write redacts the whole line so far and appends only what is new; if redacting
    with more context changes what was already written (``Bearer`` then its token), the whole
    line is written again, redacted, on a new line rather than leak the rest of the secret.
    """

    def __init__(self, redact: Callable[[str], str], partial_after: float) -> None:
        self._redact = redact
        self._partial_after = partial_after
        self._buf = bytearray()  # the current incomplete line
        self._logged = 0  # bytes of _buf already written to the log...
        self._written = ""  # ...as this redacted text
        self._pending_since: float | None = None
        self._last_data = 0.0

    def feed(self, chunk: bytes, now: float) -> tuple[list[str], str]:
        self._last_data = now
        lines: list[str] = []
        log: list[str] = []
        *complete, rest = chunk.split(b"\n")
        for part in complete:
            self._buf += part
            self._end_line(lines, log, terminator="\n")
        self._buf += rest
        if len(self._buf) >= _MAX_LINE_BYTES:
            self._end_line(lines, log, terminator="\n")
        if self._buf and self._pending_since is None:
            self._pending_since = now
        return lines, "".join(log)

    def tick(self, now: float) -> str:
        """Log text for a partial line that has waited long enough ("" if none)."""
        if self._pending_since is None or now - self._pending_since < self._partial_after:
            return ""
        if now - self._last_data >= self._partial_after:
            cut = _utf8_cut(self._buf, len(self._buf))
        else:
            cut = max(self._buf.rfind(b" "), self._buf.rfind(b"\t"), self._buf.rfind(b"\r")) + 1
        if cut <= self._logged:
            return ""
        text = self._redact(_decode(self._buf[:cut]))
        piece = self._continuation(text)
        self._logged, self._written, self._pending_since = cut, text, now
        return piece

    def finish(self) -> tuple[list[str], str]:
        """At end of output: the final line without newline, if any, and its log text."""
        lines: list[str] = []
        log: list[str] = []
        if self._buf:
            self._end_line(lines, log, terminator="")
        return lines, "".join(log)

    def _end_line(self, lines: list[str], log: list[str], terminator: str) -> None:
        text = _decode(self._buf)
        if text.endswith("\r"):  # a CRLF line: the caller gets it without its line ending
            text, terminator = text[:-1], "\r" + terminator
        line = self._redact(text)
        lines.append(line)
        log.append(self._continuation(line + terminator))
        self._buf.clear()
        self._logged, self._written, self._pending_since = 0, "", None

    def _continuation(self, redacted: str) -> str:
        if redacted.startswith(self._written):
            return redacted[len(self._written) :]
        return "\n" + redacted


# ------------------------------------------------------------------------------ process


class AgentProcess:
    """A running agent and its whole process tree. Create with ``AgentProcess.start``.

    Typical use::

        with AgentProcess.start(request) as agent:
            while not agent.finished():
                for line in agent.read_lines(timeout=0.5):
                    ...
            lines = agent.read_lines(0)  # whatever arrived with the end of output

    Lines already queued stay readable after ``finished()`` and after ``close()``.
    """

    pid: int
    create_time: float
    started_at: float
    last_output_at: float

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
        self.last_output_at = self.started_at
        # The child is not reaped before we say so, so both lookups see it even if it has exited.
        try:
            self.create_time = psutil.Process(self.pid).create_time()
        except psutil.Error:
            self.create_time = time.time()
        root = _read_stat(self.pid)
        self._tree = _TreeTracker(self.pid, root.starttime if root else 0, marker, adopt=True)
        self._lock = threading.RLock()  # guards the tree tracker and the exit status
        self._members: dict[int, _Stat] = {}
        self._last_refresh = 0.0
        self._exit_status: int | None = None
        self._exited_at: float | None = None
        self._signals: list[SentSignal] = []

        self._log = log
        self._log_lock = threading.Lock()
        self._log_failed = False
        self._log_max = request.log_max_bytes
        self._log_size = log.tell()  # opened for appending: what the file already holds
        self._log_ends_line = True
        self._log_dropped = 0
        self._assembler = _LineAssembler(request.redact, _PARTIAL_LINE_AFTER)
        self._cond = threading.Condition()
        self._lines: deque[str] = deque()
        self._output_closed = False
        self._reader_waiting = False
        assert popen.stdout is not None
        self._stdout = popen.stdout
        self._stopping = threading.Event()
        self._closed = False

        self._threads = [
            threading.Thread(target=self._drain_output, name=f"cub-agent-{self.pid}-output"),
            threading.Thread(target=self._sample, name=f"cub-agent-{self.pid}-sampler"),
        ]
        if request.stdin is not None:
            assert popen.stdin is not None
            # A thread, so a child that never reads its stdin cannot block us on a full pipe.
            self._threads.append(
                threading.Thread(
                    target=_feed_stdin,
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

    def read_lines(self, timeout: float) -> list[str]:
        """Complete lines that have arrived; waits up to ``timeout`` for one (or for the end)."""
        if time.monotonic() - self.started_at >= _SAMPLE_INTERVAL / 2:
            # Not at once: an agent done within the first moments (a short command) then
            # costs one /proc sweep, the full one at close.
            self._refresh_if_stale()
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while not self._lines:
                remaining = deadline - time.monotonic()
                if self._output_closed or remaining <= 0 or self.finished():
                    return []
                # The end can come without a notification (agent exited, pipe held open),
                # so wake up regularly to re-check it.
                self._cond.wait(min(remaining, _SAMPLE_INTERVAL))
            lines = list(self._lines)
            self._lines.clear()
            return lines

    def finished(self) -> bool:
        """The agent exited and its output is drained (or can no longer be waited for)."""
        if self._poll_exit() is None:
            return False
        if self._output_closed:
            return True
        exited_at = self._exited_at if self._exited_at is not None else time.monotonic()
        if time.monotonic() - exited_at >= _ORPHAN_PIPE_WAIT:
            return True  # a leftover holds the pipe open; close() will kill it
        self._refresh_if_stale()
        with self._lock:
            members_alive = any(st.alive for st in self._members.values())
        # Nothing we know of is alive, yet the pipe is open: an unknown holder. Finished once
        # the reader has handled everything the pipe had (it is idle and nothing is pending).
        return not members_alive and not self._pipe_readable() and self._reader_waiting

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
                    _signal_if_same(pid, st.starttime, sig)

    def stop(
        self,
        first_signal: int,
        grace: float,
        term_wait: float = 2.0,
        *,
        leader_first: bool = False,
        ignored_after: float | None = _IGNORED_AFTER,
    ) -> StopReport:
        """The stop ladder: ``first_signal``, wait ``grace``; SIGTERM, wait ``term_wait``;
        SIGKILL. Each step waits for the *whole tree* to be gone, not just the agent.

        ``leader_first`` sends the first signal to the agent's own process only, so that it
        can wind down its tools itself and report (Claude Code prints its final result with
        the usage only when its tools did not die of the same signal first). ``ignored_after``:
        an agent still printing that long after a signal is taken to ignore it, and the next
        step comes at once instead of after the whole wait (OpenCode now and then keeps
        working through SIGINT).
        """
        begin = time.monotonic()
        steps = [(first_signal, grace)]
        if first_signal not in (signal.SIGTERM, signal.SIGKILL):
            steps.append((signal.SIGTERM, term_wait))
        sent: list[int] = []
        gone = self._tree_gone(full=True)
        for index, (sig, wait) in enumerate(steps):
            if gone:
                break
            leader_only = leader_first and index == 0 and not self._tree.root_reaped
            logger.info(
                "agent pid=%d: sending %s to its %s, waiting up to %.1fs",
                self.pid,
                _signame(sig),
                "main process" if leader_only else "process tree",
                wait,
            )
            if leader_only:
                self._signal_leader(sig)
            else:
                self.signal_tree(sig)
            sent.append(sig)
            # Once the main process is gone, its tools get the next step at once.
            gone = self._wait_tree_gone(
                wait, ignored_after, until_leader_exits=leader_only
            ) and self._tree_gone(full=True)
        if not gone:
            logger.warning(
                "agent pid=%d: process tree still alive after %s; sending SIGKILL (up to %.1fs)",
                self.pid,
                _signame(sent[-1]),
                _KILL_DEADLINE,
            )
            self._kill_everything()
            sent.append(signal.SIGKILL)
        self._reap()
        escalated = sent[-1] if sent and sent[-1] != first_signal else None
        return StopReport(
            first_signal, tuple(sent), escalated, self.returncode, time.monotonic() - begin
        )

    def remaining_lines(self, timeout: float) -> list[str]:
        """Every line not read yet, waiting up to ``timeout`` for the output to end: what an
        agent printed while it was being stopped (its final usage, a last commit) still
        counts."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while not self._output_closed and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(min(remaining, _SAMPLE_INTERVAL))
            lines = list(self._lines)
            self._lines.clear()
            return lines

    @property
    def log_dropped_bytes(self) -> int:
        """Bytes of (redacted) output not written to harness.log because of its cap."""
        with self._log_lock:
            return self._log_dropped

    def take_signals(self) -> list[SentSignal]:
        """The signals sent to the agent since the last call, oldest first."""
        with self._lock:
            sent, self._signals = self._signals, []
        return sent

    def kill_tree(self) -> None:
        """SIGKILL the whole tree at once, no grace, and reap it."""
        logger.warning(
            "agent pid=%d: killing its process tree with SIGKILL (up to %.1fs)",
            self.pid,
            _KILL_DEADLINE,
        )
        self._kill_everything()
        self._reap()

    def close(self) -> None:
        """Make sure the tree is dead, stop the threads, close the log. Idempotent."""
        if self._closed:
            return
        try:
            if not self._tree_gone(full=True):
                logger.warning("agent pid=%d: closing with processes left; killing them", self.pid)
                self._kill_everything()
            self._reap()
        finally:
            self._stopping.set()
            for thread in self._threads:
                thread.join(_JOIN_TIMEOUT)
            with self._log_lock:
                self._write_cut_notice()
                self._log.close()
            if not self._threads[0].is_alive():  # never close an fd a live thread may read
                self._stdout.close()
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

    def _refresh(self, full: bool = False) -> dict[int, _Stat]:
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

    def _tree_gone(self, full: bool = False) -> bool:
        if self._poll_exit() is None:
            return False
        return not any(st.alive for st in self._refresh(full).values())

    def _signal_leader(self, sig: int) -> None:
        with self._lock:
            self._signals.append(SentSignal(sig, "main", 1, time.time()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)  # safe: unreaped, so the pid is still the agent's

    def _wait_tree_gone(
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
        while not self._tree_gone():
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

    def _kill_everything(self) -> None:
        """SIGKILL rounds until a full sweep finds nobody alive (bounded)."""
        deadline = time.monotonic() + _KILL_DEADLINE
        while not self._tree_gone(full=True):
            if time.monotonic() >= deadline:
                with self._lock:
                    left = sorted(pid for pid, st in self._members.items() if st.alive)
                logger.error("agent pid=%d: processes survived SIGKILL: %s", self.pid, left)
                return
            self.signal_tree(signal.SIGKILL)
            self._wait_tree_gone(min(0.5, max(0.0, deadline - time.monotonic())))

    def _reap(self) -> None:
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
            if _is_subreaper:
                self._refresh()  # reaps members that were re-parented to us

    # ----------------------------------------------------------------- threads

    def _sample(self) -> None:
        """Background: notice the exit, find new descendants, reap adopted zombies."""
        try:
            while not self._stopping.wait(_SAMPLE_INTERVAL):
                exited = self._poll_exit() is not None
                members = self._refresh()
                if exited and self._output_closed and not any(st.alive for st in members.values()):
                    return  # nothing left to watch; on-demand refreshes still work
        except Exception:  # a bug here must not take the run down; tracking goes on on demand
            logger.exception("agent pid=%d: process sampler failed", self.pid)

    def _drain_output(self) -> None:
        """Background: read the merged stdout/stderr until EOF, so the child never blocks."""
        fd = self._stdout.fileno()
        try:
            self._read_until_closed(fd)
        except Exception:
            logger.exception("agent pid=%d: output reader failed; discarding output", self.pid)
            _discard_until_closed(fd, self._stopping)
        finally:
            with self._cond:
                self._output_closed = True
                self._cond.notify_all()

    def _read_until_closed(self, fd: int) -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        stop_seen: float | None = None
        while True:
            self._reader_waiting = True
            ready = poller.poll(_READ_POLL_MS)
            self._reader_waiting = False
            now = time.monotonic()
            if ready:
                chunk = os.read(fd, _READ_SIZE)
                if not chunk:
                    break
                self.last_output_at = now
                self._emit(*self._assembler.feed(chunk, now))
            if self._stopping.is_set():
                # close() has killed the tree; an unknown holder may keep the pipe open, so
                # drain what is there and leave.
                stop_seen = now if stop_seen is None else stop_seen
                if not ready or now - stop_seen > 1.0:
                    break
            self._emit([], self._assembler.tick(now))
        self._emit(*self._assembler.finish())

    def _emit(self, lines: list[str], log_text: str) -> None:
        if log_text:
            self._write_log(log_text)
        if lines:
            with self._cond:
                self._lines.extend(lines)
                self._cond.notify_all()

    def _write_log(self, text: str) -> None:
        with self._log_lock:
            if self._log.closed or self._log_failed:
                return
            self._append_to_log(self._within_cap(text.encode("utf-8", "replace")))

    def _append_to_log(self, data: bytes) -> None:
        """Write to the open log (the caller holds the log lock)."""
        if not data:
            return
        try:
            self._log.write(data)
            self._log.flush()  # streamed: the log shows output while the agent runs
        except OSError as exc:  # disk full etc.: keep draining the agent, stop logging
            self._log_failed = True
            logger.warning("agent pid=%d: cannot write harness.log: %s", self.pid, exc)
            return
        self._log_size += len(data)
        self._log_ends_line = data.endswith(b"\n")

    def _within_cap(self, data: bytes) -> bytes:
        """What of ``data`` still fits under the log's cap; the rest is counted as dropped."""
        if self._log_max is None:
            return data
        room = max(0, self._log_max - self._log_size)
        if len(data) <= room:
            return data
        cut = _utf8_cut(data, room)
        if not self._log_dropped:
            logger.warning(
                "agent pid=%d: harness.log reached its cap of %d bytes; not writing more",
                self.pid,
                self._log_max,
            )
        self._log_dropped += len(data) - cut
        return data[:cut]

    def _write_cut_notice(self) -> None:
        """The log's last line says how much of the output its cap kept out."""
        if not self._log_dropped or self._log.closed or self._log_failed:
            return
        notice = (
            f"[cub] harness.log reached its cap of {self._log_max} bytes "
            f"(loop.log_max_bytes): {self._log_dropped} more bytes of output were not written\n"
        )
        self._append_to_log(("" if self._log_ends_line else "\n").encode() + notice.encode())

    def _pipe_readable(self) -> bool:
        if self._stdout.closed:
            return False
        readable, _, _ = select.select([self._stdout.fileno()], [], [], 0)
        return bool(readable)


def _feed_stdin(pipe: IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
    except OSError:  # the agent exited or closed its stdin early: its business, not an error
        pass
    finally:
        with contextlib.suppress(OSError):
            pipe.close()


def _discard_until_closed(fd: int, stopping: threading.Event) -> None:
    while not stopping.is_set():
        ready, _, _ = select.select([fd], [], [], _READ_POLL_MS / 1000)
        if ready and not os.read(fd, _READ_SIZE):
            return


def _kill_and_reap(popen: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    popen.wait()


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


# ------------------------------------------------------------- crash recovery, subreaper


def process_matches(pid: int, create_time: float | None) -> bool:
    """Whether ``pid`` is alive (not a zombie) and, if given, was created at ``create_time``."""
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > (
            _CREATE_TIME_TOLERANCE
        ):
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_process_tree(pid: int, create_time: float | None, sig: int = signal.SIGKILL) -> list[int]:
    """Kill a process (only if its create_time matches, so a reused pid is never hit) and all
    its descendants; returns the pids signalled. Used by crash recovery on processes a dead
    runner left behind.

    Besides descendants, this finds the members of the process's session/group and, if it was
    started by ``AgentProcess``, every process carrying its tree marker (setsid escapees).
    """
    if pid <= 1 or pid == os.getpid() or not process_matches(pid, create_time):
        return []
    root = _read_stat(pid)
    if root is None:
        return []
    marker = _read_marker(pid)
    tracker = _TreeTracker(pid, root.starttime, marker)
    members = tracker.refresh(full=marker is not None)
    signalled = [
        member
        for member, st in members.items()
        if st.alive and _signal_if_same(member, st.starttime, sig)
    ]
    if sig == signal.SIGKILL:
        _wait_dead([(p, members[p].starttime) for p in signalled], timeout=1.0)
    return signalled


def kill_processes_with_env(entry: str, rounds: int = 5) -> list[int]:
    """SIGKILL every agent process whose environment holds ``entry`` (``NAME=value``), and its
    descendants; returns the pids signalled. Used by crash recovery: it finds what a dead
    runner's agents left even after their root exited or they escaped with setsid().

    Only processes started as part of an agent's tree (they carry its marker) count, so a
    service a hook started with the same variable is left alone. Sweeps again until one finds
    nobody, so a process that forked while being killed does not get away.
    """
    wanted = entry.encode()
    marker = TREE_MARKER_VAR.encode() + b"="
    signalled: list[int] = []
    for _ in range(rounds):
        procs = _scan_proc()
        found = {
            pid for pid, st in procs.items() if st.alive and _environ_matches(pid, wanted, marker)
        }
        _add_descendants(found, procs)
        found -= _ancestors_and_self(procs)
        killed = [
            pid
            for pid in found
            if procs[pid].alive and _signal_if_same(pid, procs[pid].starttime, signal.SIGKILL)
        ]
        if not killed:
            break
        signalled += killed
        _wait_dead([(pid, procs[pid].starttime) for pid in killed], timeout=1.0)
    return signalled


def _environ_matches(pid: int, entry: bytes, marker_prefix: bytes) -> bool:
    entries = _environ(pid)
    return entry in entries and any(e.startswith(marker_prefix) for e in entries)


def _wait_dead(procs: Iterable[tuple[int, int]], timeout: float) -> None:
    """Wait (without reaping: they are not ours) until each process is gone or a zombie."""
    pending = list(procs)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = [
            (pid, start)
            for pid, start in pending
            if (st := _read_stat(pid)) is not None and st.starttime == start and st.alive
        ]
        if pending:
            time.sleep(0.01)


def kill_adopted_orphans() -> list[int]:
    """Kill the live orphans re-parented to this subreaper that none of cub's own processes
    started (the test of `_TreeTracker._adopted`), with everything below them, and reap them.
    For a parallel parent once a child cub has died: an escapee its agent left is re-parented
    here, its own runner no longer there to stop it. Returns the pids killed."""
    if not _is_subreaper:
        return []
    me = os.getpid()
    members = _TreeTracker(-1, 0, None, adopt=True).refresh(full=False)
    killed = [
        pid
        for pid, st in members.items()
        if st.alive and _signal_if_same(pid, st.starttime, signal.SIGKILL)
    ]
    _wait_dead(((pid, members[pid].starttime) for pid in killed), timeout=2.0)
    for pid in killed:
        if members[pid].ppid == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
    return killed


def become_subreaper(enabled: bool = True) -> bool:
    """Make this process a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``).

    Orphaned descendants are then re-parented to this process rather than to init, so an
    agent's grandchildren stay findable after their parent dies, and an orphan re-parented to
    us while an agent runs is taken as the agent's. So that this never takes what cub's own
    children leave behind, ``CUB_RUNNER`` is set in this process's environment, for everything
    it starts from now on but its agents. Returns whether it worked.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return False
    zero = ctypes.c_ulong(0)
    done = prctl(_PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(int(enabled)), zero, zero, zero) == 0
    if done:
        global _is_subreaper
        _is_subreaper = enabled
        _mark_own_children(enabled)
    return done


def _mark_own_children(enabled: bool) -> None:
    """Put (or take) cub's runner marker in the environment its own children inherit."""
    global _runner_entry, _own_initial_environ
    if not enabled:
        os.environ.pop(RUNNER_MARKER_VAR, None)
        return
    if _runner_entry is None:  # one token per process: children already started keep theirs
        token = f"{os.getpid()}-{uuid.uuid4().hex}"
        _runner_entry = f"{RUNNER_MARKER_VAR}={token}".encode()
        # What /proc shows for a child of ours between fork and exec: our own starting
        # environment (changes to os.environ do not show in /proc/self/environ).
        _own_initial_environ = _read_proc_file(os.getpid(), "environ")
    os.environ[RUNNER_MARKER_VAR] = _runner_entry.decode().partition("=")[2]


# Whether `become_subreaper` made this process one: only then can agent processes be
# re-parented to us and need reaping after the agent itself is gone.
_is_subreaper = False
# `CUB_RUNNER=<token>` as our own children carry it, and our own starting environment.
_runner_entry: bytes | None = None
_own_initial_environ: bytes | None = None
