"""The `opencode` harness: OpenCode's non-interactive `run`, JSON events.

Command line::

    opencode run --format json [-m PROVIDER/MODEL] [harness.extra_args.opencode ...] < PROMPT

with the combined (system + task) prompt on stdin. Not as the message argument: `opencode run`
(1.18) wraps every message argument that holds a space in double quotes and backslash-escapes
each ``"`` in it, so the model would get a mangled prompt; stdin it passes on as it is.
Permissions: newer versions approve tools with ``--auto``; add it through
``harness.extra_args.opencode`` when yours needs it.

Usage and cost: every ``step_finish`` event's part carries ``tokens`` (``input``, ``output``,
``reasoning``, ``cache.read``, ``cache.write``) and ``cost``; the attempt's usage is their sum.
Reasoning tokens are billed as output and counted there. When no step reports a cost and
``budget.prices`` has the model, the cost comes from that price table.

An ``error`` event (a session error: provider failure, authentication, …) fails the attempt.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cub.agents.harness import EventParser, Invocation, ProgramHarness, StreamState, combined
from cub.agents.pricing import cost_of, price_for
from cub.agents.stream import count, mapping, number, string

if TYPE_CHECKING:
    from cub.config.schema import ModelPrice


class OpenCodeParser(EventParser):
    def __init__(self, *, price: ModelPrice | None = None) -> None:
        self.state = StreamState()
        self._price = price
        self._reported_cost: float | None = None

    def event(self, event: dict[str, Any]) -> bool:
        kind = string(event.get("type"))
        part = mapping(event.get("part"))
        if kind == "step_finish":
            return self._step_finish(part)
        if kind == "text":
            text = string(part.get("text"))
            if text:
                self.state.scan_signals(text)
        elif kind == "error":
            self.state.is_error = True
            self.state.error_message = _error_text(event.get("error"))
        return False

    def _step_finish(self, part: Mapping[str, Any]) -> bool:
        tokens = mapping(part.get("tokens"))
        cache = mapping(tokens.get("cache"))
        step = (
            count(tokens.get("input")),
            count(tokens.get("output")) + count(tokens.get("reasoning")),
            count(cache.get("read")),
            count(cache.get("write")),
        )
        cost = number(part.get("cost"))
        if not any(step) and cost is None:
            return False
        usage = self.state.usage
        usage.input_tokens += step[0]
        usage.output_tokens += step[1]
        usage.cache_read_tokens += step[2]
        usage.cache_creation_tokens += step[3]
        if cost is not None:
            self._reported_cost = round((self._reported_cost or 0.0) + cost, 9)
        if self._reported_cost is not None:
            usage.cost_usd = self._reported_cost
        elif self._price is not None:
            usage.cost_usd = cost_of(usage, self._price)
        return True


def _error_text(error: Any) -> str:
    error = mapping(error)
    message = string(mapping(error.get("data")).get("message")) or string(error.get("message"))
    name = string(error.get("name"))
    if message and name:
        return f"{name}: {message}"
    return message or name or "opencode reported an error"


class OpenCodeHarness(ProgramHarness):
    name = "opencode"
    # OpenCode ignores SIGINT now and then and keeps working (and spending) through the grace;
    # SIGTERM stops it at once.
    stop_signal = int(signal.SIGTERM)

    def invocation(
        self, *, system: str, task: str, prompt_file: Path, model: str | None
    ) -> Invocation:
        self._model = model
        argv = [self.program, "run", "--format", "json"]
        if model:
            argv += ["-m", model]
        argv += self.extra_args
        return Invocation(argv=tuple(argv), stdin=combined(system, task).encode())

    def parser(self) -> OpenCodeParser:
        return OpenCodeParser(price=price_for(self.prices, self._model))
