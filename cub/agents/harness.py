"""What every agent adapter provides: a command line, and a parser for its output stream.

Adapters only build the invocation and read events; running and stopping the process is the
supervisor's job (cub/agents/supervisor.py).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cub.records.schemas import Usage

if TYPE_CHECKING:
    from cub.config.schema import ModelPrice

STUCK = re.compile(r"<stuck>(.*?)</stuck>", re.DOTALL)
PROMISE_COMPLETE = "<promise>COMPLETE</promise>"
# The system prompt names the signal with this placeholder; an agent echoing its prompt is not
# stuck.
_PLACEHOLDER_REASONS = {"REASON", "", "` + a one-sentence reason + `"}


_SIGNAL_TAGS = re.compile(r"<(/?)(stuck|promise)>")


def neutralize_signals(text: str) -> str:
    """``text`` (a task's or an issue's words) with its signal tags written ``&lt;stuck>``:
    an agent that echoes its task must not be taken to have said what the task said."""
    return _SIGNAL_TAGS.sub(r"&lt;\1\2>", text)


@dataclass(frozen=True)
class Invocation:
    argv: tuple[str, ...]
    stdin: bytes | None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamState:
    """What an adapter has learned from the output so far."""

    usage: Usage = field(default_factory=Usage)
    is_error: bool = False
    error_message: str | None = None
    result_seen: bool = False  # the agent reported its final result; output is over
    stuck_reason: str | None = None
    promise_complete: bool = False
    model: str | None = None  # the model the agent says it used, when its output names it

    def scan_signals(self, line: str) -> None:
        """The `<stuck>` and `<promise>` signals, whatever the adapter's format."""
        if "<stuck>" in line and self.stuck_reason is None:
            match = STUCK.search(line)
            if match and match.group(1).strip() not in _PLACEHOLDER_REASONS:
                self.stuck_reason = match.group(1).strip()
        if PROMISE_COMPLETE in line:
            self.promise_complete = True


class OutputParser(Protocol):
    state: StreamState

    def feed(self, line: str) -> bool:
        """Take one output line; return True when it changed the usage totals."""
        ...


class Harness(Protocol):
    name: str
    # The signal that asks this agent to stop (the first step of the stop ladder), and whether
    # it goes to the agent's main process only (which then stops its own tools and reports).
    stop_signal: int
    stop_leader_first: bool

    def invocation(
        self, *, system: str, task: str, prompt_file: Path, model: str | None
    ) -> Invocation: ...

    def parser(self) -> OutputParser: ...


class ProgramHarness:
    """What the adapters for agent CLIs share: the program, the extra arguments configured for
    it (`harness.extra_args`), and the price table for agents that report no cost."""

    name = ""
    stop_signal: int = int(signal.SIGINT)
    stop_leader_first: bool = False

    def __init__(
        self,
        program: str | None = None,
        *,
        extra_args: tuple[str, ...] = (),
        prices: Mapping[str, ModelPrice] | None = None,
    ) -> None:
        self.program = program or self.name
        self.extra_args = tuple(extra_args)
        self.prices = dict(prices or {})
        # parser() belongs to the latest invocation(): it prices that invocation's model.
        self._model: str | None = None


def combined(system: str, task: str) -> str:
    """What prompt.md holds, and what single-prompt agents get on stdin."""
    return f"{system.rstrip()}\n\n---\n\n{task}"
