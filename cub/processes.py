"""Processes on this machine (Linux): who a pid is, the tree an agent's processes form, killing
that tree, and cub as a child subreaper.

How the tree is found, and why three ways:

* **Parent links**: every ~100 ms (and on each ``read_output``) /proc is scanned and every
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
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import psutil

TREE_MARKER_VAR = "CUB_AGENT_TREE"
"""Environment variable that marks every process of one agent's tree (see module docstring)."""

RUNNER_MARKER_VAR = "CUB_RUNNER"
"""Environment variable that marks everything a subreaper cub starts, except its agents: what
a re-parented child of ours without it came from an agent (see module docstring)."""

_PR_SET_CHILD_SUBREAPER = 36
_CREATE_TIME_TOLERANCE = 0.01


class Stat(NamedTuple):
    state: str
    ppid: int
    pgrp: int
    session: int
    starttime: int  # clock ticks since boot: with the pid, a process's identity

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


def read_stat(pid: int) -> Stat | None:
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
        return Stat(
            fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19])
        )
    except (IndexError, ValueError):
        return None


def _scan_proc() -> dict[int, Stat]:
    procs: dict[int, Stat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := read_stat(int(name))) is not None:
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


def _ancestors_and_self(procs: Mapping[int, Stat]) -> set[int]:
    found, pid = set(), os.getpid()
    while pid > 0 and pid not in found:
        found.add(pid)
        pid = procs[pid].ppid if pid in procs else 0
    return found


def signal_if_same(pid: int, starttime: int, sig: int) -> bool:
    """Signal pid only if it is still the process we identified (pid + start time)."""
    st = read_stat(pid)
    if st is None or st.starttime != starttime:
        return False
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):  # gone, or setuid: not ours to stop
        return False
    return True


class TreeTracker:
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

    def refresh(self, full: bool) -> dict[int, Stat]:
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

    def _in_root_session(self, st: Stat) -> bool:
        if self.root_reaped:
            return False
        return (st.session == self.root or st.pgrp == self.root) and st.starttime >= self.root_start

    def _marked(self, pid: int, st: Stat, me: int, full: bool) -> bool:
        if self.marker is None or not (full or st.ppid == me):
            return False
        if st.starttime < self.root_start:
            return False  # older than the agent: cannot be one of its descendants
        return _environ_has(pid, self.marker)

    def _adopted(self, pid: int, st: Stat, me: int) -> bool:
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
        again = read_stat(pid)
        return again is not None and again.alive and again.starttime == st.starttime


def _same(procs: Mapping[int, Stat], pid: int, starttime: int) -> bool:
    st = procs.get(pid)
    return st is not None and st.starttime == starttime


def _add_descendants(members: set[int], procs: Mapping[int, Stat]) -> None:
    children: dict[int, list[int]] = {}
    for pid, st in procs.items():
        children.setdefault(st.ppid, []).append(pid)
    stack = list(members)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in members:
                members.add(child)
                stack.append(child)


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
    root = read_stat(pid)
    if root is None:
        return []
    marker = _read_marker(pid)
    tracker = TreeTracker(pid, root.starttime, marker)
    members = tracker.refresh(full=marker is not None)
    signalled = [
        member
        for member, st in members.items()
        if st.alive and signal_if_same(member, st.starttime, sig)
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
            if procs[pid].alive and signal_if_same(pid, procs[pid].starttime, signal.SIGKILL)
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
            if (st := read_stat(pid)) is not None and st.starttime == start and st.alive
        ]
        if pending:
            time.sleep(0.01)


def kill_adopted_orphans() -> list[int]:
    """Kill the live orphans re-parented to this subreaper that none of cub's own processes
    started (the test of `TreeTracker._adopted`), with everything below them, and reap them.
    For a parallel parent once a child cub has died: an escapee its agent left is re-parented
    here, its own runner no longer there to stop it. Returns the pids killed."""
    if not _is_subreaper:
        return []
    me = os.getpid()
    members = TreeTracker(-1, 0, None, adopt=True).refresh(full=False)
    killed = [
        pid
        for pid, st in members.items()
        if st.alive and signal_if_same(pid, st.starttime, signal.SIGKILL)
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


def is_subreaper() -> bool:
    """Whether `become_subreaper` made this process one."""
    return _is_subreaper
