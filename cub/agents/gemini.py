"""The `gemini` harness: Gemini CLI in headless mode.

Command line::

    gemini -p PROMPT -y -o stream-json [-m MODEL] [harness.extra_args.gemini ...]

with the combined (system + task) prompt as the ``-p`` value; ``-y`` approves every action.

What Gemini CLI (0.61) reports, and when. With ``-o stream-json`` it prints JSONL events:
``init`` (the model asked for: ``"auto"`` unless ``-m`` named one), ``message`` (the prompt,
then the model's text in pieces), ``tool_use`` and ``tool_result`` (one per tool call), ``error``
(warnings; a ``severity: "error"`` one names what went wrong) and, at the very end, ``result``.
**No event before ``result`` carries usage**: not per turn, not per model call. Only the
``result``'s ``stats`` do, as totals and per model (``stats.models``): ``input_tokens`` (the
prompt, including its cached part), ``cached``, ``input`` (the uncached part),
``output_tokens`` and ``total_tokens`` (which also counts thinking tokens). No cost, ever.

So, until the result arrives, the attempt's usage is an estimate (marked ``estimated``), four
characters to a token, and it accounts for what Gemini CLI really sends: every model call carries
the CLI's own system instruction and its tool declarations (≈48,000 characters together, measured
on 0.61: ≈12,000 tokens a call, far more than cub's prompt), then cub's prompt and the
conversation so far; under ``auto`` one routing call (≈3,000 characters) picks the model. A call
is counted when it starts: the first at the start, the next one when the tool results of a turn
come in. The estimate therefore grows turn by turn, and a token budget can stop Gemini mid-task
on it; a cost budget only when the model is known (``-m``) and priced. It remains an estimate:
a project's GEMINI.md, caching and a different CLI version all move the real figure.

When the ``result`` arrives, its stats replace the estimate: uncached input, ``cache_read_tokens``
= ``cached``, output = everything else in the total (so the total matches Gemini's own). The cost
is priced per model, each model's tokens at ``budget.prices[THAT MODEL]`` (under ``auto`` the
routing call and the work use different models); when a model that used tokens has no price the
cost stays unknown. The model recorded is the one that used the most tokens. ``result.status:
"error"`` fails the attempt with the result's error message.

When the output is not structured (an older CLI printing plain text) or ends before a result
(the attempt was stopped), the estimate stays, marked ``estimated``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cub.agents.harness import Invocation, LineParser, ProgramHarness, StreamState, combined
from cub.agents.pricing import cost_of, price_for
from cub.agents.stream import count, decode_event, estimate_tokens, mapping, positional, string
from cub.records.schemas import Usage

if TYPE_CHECKING:
    from cub.config.schema import ModelPrice

_EVENT_TYPES = {"init", "message", "tool_use", "tool_result", "error", "result"}
# How much earlier assistant text is kept to find a signal split across streamed chunks.
_SIGNAL_TAIL = 4096
# Characters Gemini CLI 0.61 adds to every model call of its own (measured on its requests): its
# system instruction (≈32,400), 15 tool declarations (≈15,200) and a session context (≈700).
CLI_CALL_CHARS = 48_000
# Its routing check under `auto`, once per task: a classifier prompt and the session context.
ROUTING_CALL_CHARS = 3_000
# What a tool call or result adds to the conversation besides its own text (names, ids, wrapping).
_TOOL_PART_CHARS = 100


def is_auto(model: str | None) -> bool:
    """Whether ``model`` is Gemini CLI's automatic choice ("auto", "auto-gemini-3"), not a model."""
    return model is None or model.startswith("auto")


@dataclass
class _Estimate:
    """What the output so far says about the calls Gemini CLI made, in characters."""

    prompt_chars: int
    input_chars: int = 0
    output_chars: int = 0
    history_chars: int = 0  # the conversation after the prompt; every later call resends it
    in_results: bool = False  # tool results are coming in: the next call has started

    def start(self, routing: bool) -> None:
        self.input_chars = CLI_CALL_CHARS + self.prompt_chars
        if routing:
            self.input_chars += ROUTING_CALL_CHARS + self.prompt_chars

    def model_text(self, chars: int) -> None:
        self.in_results = False
        self.output_chars += chars
        self.history_chars += chars

    def tool_result(self, chars: int) -> None:
        if not self.in_results:  # the first result of a turn: the next call starts with it
            self.in_results = True
            self.input_chars += CLI_CALL_CHARS + self.prompt_chars + self.history_chars
        self.input_chars += chars
        self.history_chars += chars

    def usage(self) -> Usage:
        return Usage(
            input_tokens=estimate_tokens(self.input_chars),
            output_tokens=estimate_tokens(self.output_chars),
            estimated=True,
        )


def _model_usage(stats: Mapping[str, Any]) -> Usage:
    """The exact usage in a result's stats (the totals, or one model's entry)."""
    prompt = count(stats.get("input_tokens"))
    cached = min(count(stats.get("cached")), prompt)
    uncached = min(count(stats.get("input")), prompt) if "input" in stats else prompt - cached
    output = max(count(stats.get("output_tokens")), count(stats.get("total_tokens")) - prompt)
    return Usage(input_tokens=uncached, output_tokens=output, cache_read_tokens=cached)


class GeminiParser(LineParser):
    def __init__(
        self,
        *,
        prompt_chars: int = 0,
        model: str | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
    ) -> None:
        self.state = StreamState()
        self._model = model  # the model asked for (-m), else the one `init` names
        self._prices = prices or {}
        self._estimate = _Estimate(prompt_chars)
        self._estimate.start(routing=False)
        self._tail = ""  # recent assistant text, for signals split across chunks
        self._exact = False  # the result's stats are in
        self._first = True
        self._set_estimate()

    def feed(self, line: str) -> bool:
        first, self._first = self._first, False
        event = decode_event(line)
        kind = string(event.get("type")) if event is not None else None
        if event is None or kind not in _EVENT_TYPES:
            self.state.scan_signals(line)
            self._estimate.model_text(len(line) + 1)
            return self._set_estimate() or first
        return self._event(kind, event) or first

    def _event(self, kind: str | None, event: Mapping[str, Any]) -> bool:
        estimate = self._estimate
        if kind == "init":
            self._model = self._model or string(event.get("model"))
            estimate.start(routing=is_auto(self._model))
        elif kind == "message" and event.get("role") == "assistant":
            text = string(event.get("content")) or ""
            self._assistant_text(text)
            estimate.model_text(len(text))
        elif kind == "tool_use":
            call = json.dumps(event.get("parameters"), ensure_ascii=False)
            estimate.model_text(len(call) + _TOOL_PART_CHARS)
        elif kind == "tool_result":
            error = mapping(event.get("error"))
            text = (string(event.get("output")) or "") + (string(error.get("message")) or "")
            estimate.tool_result(len(text) + _TOOL_PART_CHARS)
        elif kind == "error":
            message = string(event.get("message"))
            if message and event.get("severity") != "warning":
                self.state.error_message = message
            return False
        elif kind == "result":
            return self._result(event)
        else:
            return False
        return self._set_estimate()

    def _assistant_text(self, text: str) -> None:
        self._tail = (self._tail + text)[-_SIGNAL_TAIL:]
        self.state.scan_signals(self._tail)

    def _set_estimate(self) -> bool:
        """The running estimate as the attempt's usage (until exact stats arrive)."""
        if self._exact:
            return False
        usage, current = self._estimate.usage(), self.state.usage
        if (usage.input_tokens, usage.output_tokens) == (
            current.input_tokens,
            current.output_tokens,
        ):
            return False
        price = None if is_auto(self._model) else price_for(self._prices, self._model)
        usage.cost_usd = cost_of(usage, price) if price is not None else None
        self.state.usage = usage
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
        models = {
            name: _model_usage(mapping(entry))
            for name, entry in mapping(stats.get("models")).items()
            if isinstance(name, str)
        }
        used = {name: usage for name, usage in models.items() if usage.total_tokens}
        if used:
            usage = _sum(used.values())
            usage.cost_usd = self._cost(used)
            state.model = max(used, key=lambda name: used[name].total_tokens)
        else:
            usage = _model_usage(stats)
            price = None if is_auto(self._model) else price_for(self._prices, self._model)
            usage.cost_usd = cost_of(usage, price) if price is not None else None
        state.usage = usage
        self._exact = True
        return True

    def _cost(self, used: Mapping[str, Usage]) -> float | None:
        """Each model's tokens at that model's price; unknown when one of them has no price."""
        total = 0.0
        for name, usage in used.items():
            price = price_for(self._prices, name)
            if price is None:
                return None
            total += cost_of(usage, price)
        return round(total, 9)


def _sum(usages: Any) -> Usage:
    total = Usage()
    for usage in usages:
        total.input_tokens += usage.input_tokens
        total.output_tokens += usage.output_tokens
        total.cache_read_tokens += usage.cache_read_tokens
        total.cache_creation_tokens += usage.cache_creation_tokens
    return total


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
