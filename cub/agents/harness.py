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
from typing import TYPE_CHECKING, Any, Protocol

from cub.agents.sieve import literal
from cub.agents.stream import decode_event, event_lines
from cub.records.schemas import Usage

if TYPE_CHECKING:
    from cub.config.schema import ModelPrice

STUCK_OPEN, STUCK_CLOSE = "<stuck>", "</stuck>"
PROMISE_COMPLETE = "<promise>COMPLETE</promise>"
# The system prompt names the signal with this placeholder; an agent echoing its prompt is not
# stuck.
_PLACEHOLDER_REASONS = {"REASON", "", "` + a one-sentence reason + `"}


# What plain output must hold for `StreamState.scan_lines` to take anything from it (patterns
# for `cub.agents.sieve`).
SIGNAL_PATTERNS = (literal(STUCK_OPEN), literal(PROMISE_COMPLETE))
# What a line that decodes to a JSON object with something in it holds: "{", JSON's whitespace
# (only these four), then a key or the object's end.
EVENT_PATTERN = rb'\{[\t\n\r ]*["}]'

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

    def scan_signals(self, text: str) -> None:
        """The `<stuck>` and `<promise>` signals in one piece of the agent's text (a message,
        a line), whatever the adapter's format: a `<stuck>` reason may span its lines."""
        if STUCK_OPEN in text and self.stuck_reason is None:
            reason = stuck_reason_in(text)
            if reason is not None and reason.strip() not in _PLACEHOLDER_REASONS:
                self.stuck_reason = reason.strip()
        if PROMISE_COMPLETE in text:
            self.promise_complete = True

    def scan_lines(self, text: str) -> None:
        """``scan_signals`` for each line of ``text`` (plain output, whole lines): a `<stuck>`
        on one line and its end on another is no signal. Only the lines that hold a tag are
        looked at one by one."""
        if "<" not in text:  # one memchr: most output holds neither tag
            return
        if STUCK_OPEN in text and self.stuck_reason is None:
            for line in text.split("\n"):
                if STUCK_OPEN in line:
                    self.scan_signals(line)
        if PROMISE_COMPLETE in text:
            self.promise_complete = True


def stuck_reason_in(text: str) -> str | None:
    """What ``text`` says between its first `<stuck>` and the first `</stuck>` after it; None
    without such a pair. Two finds, never a regex: with the search ``<stuck>(.*?)</stuck>`` a
    line holding many tags and no end tag costs a pass to its end for each tag (a megabyte of
    them, minutes of the main thread, deaf to Ctrl+C). A first tag with no end after it means
    no later one has one either."""
    start = text.find(STUCK_OPEN)
    if start < 0:
        return None
    start += len(STUCK_OPEN)
    end = text.find(STUCK_CLOSE, start)
    return None if end < 0 else text[start:end]


class OutputParser(Protocol):
    state: StreamState
    # Patterns (`cub.agents.sieve`) that every piece of output the parser takes anything from
    # holds: a piece holding none of them may be passed over. None: every piece is parsed.
    looks_for: tuple[bytes, ...] | None

    def feed_text(self, text: str) -> bool:
        """Take whole output lines (each ending in "\n"); return True when they changed the
        usage totals."""
        ...


class EventParser:
    """A parser for agents that print one JSON event per line, with plain text between (their
    warnings, a tool's output on the merged stderr). Events go to ``event`` in order; the
    plain lines, many at a time and never split unless they hold a signal, to ``plain``."""

    state: StreamState
    looks_for: tuple[bytes, ...] | None = (EVENT_PATTERN, *SIGNAL_PATTERNS)

    def event(self, event: dict[str, Any]) -> bool:
        """Take one event; return True when it changed the usage totals."""
        raise NotImplementedError

    def plain(self, text: str) -> None:
        """Take whole lines of plain output."""
        self.state.scan_lines(text)

    def feed_text(self, text: str) -> bool:
        if "{" not in text:  # one memchr: plain output only, no line to look at on its own
            self.plain(text)
            return False
        changed = False
        for plain, line in event_lines(text):
            if plain:
                self.plain(plain)
            if line is None:
                continue
            event = decode_event(line)
            if event is None:  # a "{" that is not JSON: plain text after all
                self.plain(line + "\n")
            else:
                changed = self.event(event) or changed
        return changed

    def feed(self, line: str) -> bool:
        """Take one line (without its newline)."""
        return self.feed_text(line + "\n")


class LineParser:
    """A parser that reads its agent's output one line at a time (``feed``)."""

    state: StreamState
    looks_for: tuple[bytes, ...] | None = None  # each line may count (an estimate of tokens)

    def feed(self, line: str) -> bool:
        raise NotImplementedError

    def feed_text(self, text: str) -> bool:
        changed = False
        for line in text.split("\n")[:-1]:
            changed = self.feed(line) or changed
        return changed


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
