"""The stop ladder: how cub stops an agent's whole process tree, gently first.

The first signal (SIGINT or SIGTERM, per harness) and a grace; then SIGTERM and a short wait;
then SIGKILL, repeated until a full sweep finds nobody. Each step waits for the *whole tree* to
be gone, not only the agent.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from typing import NamedTuple, Protocol

logger = logging.getLogger("cub.agents")

KILL_DEADLINE = 3.0  # give up (and log) if SIGKILL cannot clear the tree in this long
# An agent still printing this long after a stop signal is taken to ignore it (see climb()).
IGNORED_AFTER = 3.0


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


class SentSignal(NamedTuple):
    """One signal cub sent to the agent: to its main process only, or to its whole tree."""

    signal: int
    scope: str  # "main" or "tree"
    processes: int  # how many were alive to get it
    at: float  # wall-clock time

    @property
    def name(self) -> str:
        return signal_name(self.signal)


@dataclass(frozen=True)
class StopReport:
    """What a climb of the ladder had to do."""

    first_signal: int
    signals_sent: tuple[int, ...]  # in order; empty if the tree was already gone
    escalated_to: int | None  # SIGTERM or SIGKILL when the first signal was not enough
    returncode: int | None
    elapsed: float


class Stoppable(Protocol):
    """What the ladder needs of an agent (`cub.agents.supervisor.AgentProcess`)."""

    pid: int

    @property
    def returncode(self) -> int | None: ...
    @property
    def root_reaped(self) -> bool: ...
    def tree_gone(self, full: bool = False) -> bool: ...
    def signal_leader(self, sig: int) -> None: ...
    def signal_tree(self, sig: int) -> None: ...
    def wait_tree_gone(
        self,
        timeout: float,
        ignored_after: float | None = None,
        *,
        until_leader_exits: bool = False,
    ) -> bool: ...
    def kill_everything(self) -> None: ...
    def reap(self) -> None: ...


def climb(
    agent: Stoppable,
    first_signal: int,
    grace: float,
    term_wait: float = 2.0,
    *,
    leader_first: bool = False,
    ignored_after: float | None = IGNORED_AFTER,
) -> StopReport:
    """``first_signal``, wait ``grace``; SIGTERM, wait ``term_wait``; SIGKILL.

    ``leader_first`` sends the first signal to the agent's own process only, so that it can
    wind down its tools itself and report (Claude Code prints its final result with the usage
    only when its tools did not die of the same signal first). ``ignored_after``: an agent
    still printing that long after a signal is taken to ignore it, and the next step comes at
    once instead of after the whole wait (OpenCode now and then keeps working through SIGINT).
    """
    begin = time.monotonic()
    steps = [(first_signal, grace)]
    if first_signal not in (signal.SIGTERM, signal.SIGKILL):
        steps.append((signal.SIGTERM, term_wait))
    sent: list[int] = []
    gone = agent.tree_gone(full=True)
    for index, (sig, wait) in enumerate(steps):
        if gone:
            break
        leader_only = leader_first and index == 0 and not agent.root_reaped
        logger.info(
            "agent pid=%d: sending %s to its %s, waiting up to %.1fs",
            agent.pid,
            signal_name(sig),
            "main process" if leader_only else "process tree",
            wait,
        )
        if leader_only:
            agent.signal_leader(sig)
        else:
            agent.signal_tree(sig)
        sent.append(sig)
        # Once the main process is gone, its tools get the next step at once.
        gone = agent.wait_tree_gone(
            wait, ignored_after, until_leader_exits=leader_only
        ) and agent.tree_gone(full=True)
    if not gone:
        logger.warning(
            "agent pid=%d: process tree still alive after %s; sending SIGKILL (up to %.1fs)",
            agent.pid,
            signal_name(sent[-1]),
            KILL_DEADLINE,
        )
        agent.kill_everything()
        sent.append(signal.SIGKILL)
    agent.reap()
    escalated = sent[-1] if sent and sent[-1] != first_signal else None
    return StopReport(
        first_signal, tuple(sent), escalated, agent.returncode, time.monotonic() - begin
    )
