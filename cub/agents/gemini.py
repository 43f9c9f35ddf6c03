"""The `gemini` harness: Gemini CLI in headless mode.

Command line::

    gemini -p PROMPT -y -o stream-json [-m MODEL] [harness.extra_args.gemini ...]

with the combined (system + task) prompt as the ``-p`` value; ``-y`` approves every action.

With ``-o stream-json`` the CLI prints JSONL events (``init``, ``message``, ``tool_use``,
``tool_result``, ``error``, ``result``). The ``result`` event's ``stats`` give the usage:
``input_tokens`` (prompt, including its cached part), ``cached``, ``input`` (the uncached
part), ``output_tokens`` and ``total_tokens`` (which also counts thinking tokens). They are
recorded as uncached input, ``cache_read_tokens``, and output = everything else in the total,
so the total matches Gemini's own. ``result.status: "error"`` fails the attempt; ``error``
events are warnings and only kept as the error message.

When the output is not structured (an older CLI printing plain text) or ends before a result,
usage is unknown: it is estimated at four characters to a token — the prompt as input, the
agent's text as output — and marked ``estimated``. Gemini reports no cost: it comes from
``budget.prices[MODEL]`` when configured, else stays unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cub.agents.adapters import (
    count,
    decode_event,
    estimate_tokens,
    mapping,
    positional,
    string,
)
from cub.agents.harness import Invocation, ProgramHarness, StreamState
from cub.agents.pricing import cost_of, price_for
from cub.loop.prompts import combined

if TYPE_CHECKING:
    from cub.config.schema import ModelPrice

_EVENT_TYPES = {"init", "message", "tool_use", "tool_result", "error", "result"}
# How much earlier assistant text is kept to find a signal split across streamed chunks.
_SIGNAL_TAIL = 4096


class GeminiParser:
    def __init__(
        self,
        *,
        prompt_chars: int = 0,
        model: str | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
    ) -> None:
        self.state = StreamState()
        self._model = model
        self._prices = prices or {}
        self._output_chars = 0
        self._tail = ""  # recent assistant text, for signals split across chunks
        self._exact = False  # the result's stats are in
        self._first = True
        usage = self.state.usage
        usage.input_tokens = estimate_tokens(prompt_chars)
        usage.estimated = True

    def feed(self, line: str) -> bool:
        first, self._first = self._first, False
        event = decode_event(line)
        kind = string(event.get("type")) if event is not None else None
        if event is None or kind not in _EVENT_TYPES:
            self.state.scan_signals(line)
            return self._estimate(len(line) + 1) or first
        if kind == "message":
            if event.get("role") == "assistant":
                text = string(event.get("content")) or ""
                self._assistant_text(text)
                return self._estimate(len(text)) or first
        elif kind == "init":
            self._model = self._model or string(event.get("model"))
        elif kind == "error":
            message = string(event.get("message"))
            if message and event.get("severity") != "warning":
                self.state.error_message = message
        elif kind == "result":
            return self._result(event) or first
        return first

    def _assistant_text(self, text: str) -> None:
        self._tail = (self._tail + text)[-_SIGNAL_TAIL:]
        self.state.scan_signals(self._tail)

    def _estimate(self, chars: int) -> bool:
        """More unstructured output: raise the output estimate (until exact stats arrive)."""
        self._output_chars += chars
        if self._exact:
            return False
        usage = self.state.usage
        tokens = estimate_tokens(self._output_chars)
        if tokens == usage.output_tokens:
            return False
        usage.output_tokens = tokens
        self._price()
        return True

    def _result(self, event: Mapping[str, Any]) -> bool:
        state = self.state
        state.result_seen = True
        if event.get("status") == "error":
            state.is_error = True
            error = mapping(event.get("error"))
            state.error_message = (
                string(error.get("message")) or state.error_message or "gemini reported an error"
            )
        stats = event.get("stats")
        if not isinstance(stats, dict):
            return False
        prompt = count(stats.get("input_tokens"))
        cached = min(count(stats.get("cached")), prompt)
        uncached = count(stats.get("input")) if "input" in stats else prompt - cached
        output = max(count(stats.get("output_tokens")), count(stats.get("total_tokens")) - prompt)
        usage = state.usage
        usage.input_tokens = uncached
        usage.cache_read_tokens = cached
        usage.cache_creation_tokens = 0
        usage.output_tokens = output
        usage.estimated = False
        self._exact = True
        self._price()
        return True

    def _price(self) -> None:
        price = price_for(self._prices, self._model)
        if price is not None:
            self.state.usage.cost_usd = cost_of(self.state.usage, price)


class GeminiHarness(ProgramHarness):
    name = "gemini"
    _prompt_chars = 0  # of the latest invocation's prompt

    def invocation(
        self, *, system: str, task: str, prompt_file: Path, model: str | None
    ) -> Invocation:
        # parser() belongs to the latest invocation(): it estimates that prompt and prices
        # that model.
        prompt = combined(system, task)
        self._model, self._prompt_chars = model, len(prompt)
        argv = [self.program, "-p", positional(prompt), "-y", "-o", "stream-json"]
        if model:
            argv += ["-m", model]
        argv += self.extra_args
        return Invocation(argv=tuple(argv), stdin=None)

    def parser(self) -> GeminiParser:
        return GeminiParser(prompt_chars=self._prompt_chars, model=self._model, prices=self.prices)
