"""The `claude` harness: Claude Code in print mode, streaming JSON events.

Command line::

    claude -p --output-format stream-json --verbose --append-system-prompt SYSTEM \
        --dangerously-skip-permissions [--model MODEL] [harness.extra_args.claude ...]

with the task prompt on stdin.

Usage: every ``assistant`` event carries its API message's usage at ``message.usage``. One
message can be printed as several events (one per content block) with the same ``message.id``,
so the running total counts each message id once (mid-stream a message's output count is 1
until the message ends, so this sum runs low). The final ``result`` event carries the run's
totals (``usage``, ``total_cost_usd``) and ``modelUsage`` per model, which replace the running
sum — but not blindly: after a broken stream Claude Code asks again without streaming, and then
its ``result.usage`` totals are 0 (or miss those turns) while ``modelUsage`` and the cost are
right. So the larger of the two totals wins, and zeros never replace a known non-zero count.
Before the result, a cost is known only when ``budget.prices`` has the model; that lets a cost
budget stop an agent mid-attempt.

Model: the ``system/init`` event names it (``claude-opus-4-8[1m]``: the bracket is Claude
Code's context-window tag, not part of the API's model id, and is dropped); failing that the API's
own answer (``message.model``; ``"<synthetic>"`` marks a message Claude Code made up itself, such
as an error), failing that the busiest ``modelUsage`` key.

Outcome: ``result.is_error: true`` is a failure even when ``subtype`` is ``"success"`` (Claude
Code reports "Not logged in" that way); a subtype starting with ``error`` (``error_max_turns``,
``error_during_execution``) is a failure too. An ``error`` field on an assistant event (e.g.
``"authentication_failed"``) is kept for the message.

Running as root: Claude Code refuses ``--dangerously-skip-permissions`` for uid 0 unless
``IS_SANDBOX=1`` is in its environment. cub does not set it behind the user's back; set it in
``.cub/config.json``::

    {"harness": {"env": {"IS_SANDBOX": "1"}}}

and the refusal, when it happens, is reported with exactly that advice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cub.agents.harness import (
    EVENT_PATTERN,
    SIGNAL_PATTERNS,
    EventParser,
    Invocation,
    ProgramHarness,
    StreamState,
)
from cub.agents.pricing import cost_of, price_for
from cub.agents.sieve import literal
from cub.agents.stream import count, mapping, number, string

if TYPE_CHECKING:
    from cub.config.schema import ModelPrice

ROOT_REFUSAL = "cannot be used with root/sudo privileges"
ROOT_HINT = (
    "claude refused --dangerously-skip-permissions because it runs as root; "
    'set harness.env.IS_SANDBOX=1 in .cub/config.json ({"harness": {"env": '
    '{"IS_SANDBOX": "1"}}}) to let it run unattended here'
)
_SUBTYPE_TEXT = {
    "error_max_turns": "claude stopped: it reached its maximum number of turns",
    "error_during_execution": "claude stopped: an error occurred during execution",
}

_Turn = tuple[int, int, int, int]  # input, output, cache read, cache creation
_NO_TOKENS: _Turn = (0, 0, 0, 0)
SYNTHETIC_MODEL = "<synthetic>"
_CONTEXT_TAG = re.compile(r"\[[^\[\]]*\]$")  # "claude-opus-4-8[1m]": a 1M-token context


def _tokens(usage: Mapping[str, Any]) -> _Turn:
    """(input, output, cache read, cache creation) tokens of a `usage` object."""
    return (
        count(usage.get("input_tokens")),
        count(usage.get("output_tokens")),
        count(usage.get("cache_read_input_tokens")),
        count(usage.get("cache_creation_input_tokens")),
    )


def _model_tokens(model: Mapping[str, Any]) -> _Turn:
    """(input, output, cache read, cache creation) tokens of one ``modelUsage`` entry."""
    return (
        count(model.get("inputTokens")),
        count(model.get("outputTokens")),
        count(model.get("cacheReadInputTokens")),
        count(model.get("cacheCreationInputTokens")),
    )


def _model_usage_tokens(model_usage: Mapping[str, Any]) -> _Turn:
    """The sum over models of a result's ``modelUsage``."""
    per_model = [_model_tokens(mapping(v)) for v in model_usage.values()]
    return tuple(sum(t[i] for t in per_model) for i in range(4))  # type: ignore[return-value]


def model_name(value: Any) -> str | None:
    """The API's model id in a name Claude Code printed, or None for none / a synthetic one."""
    name = string(value)
    if not name or name == SYNTHETIC_MODEL:
        return None
    return _CONTEXT_TAG.sub("", name).strip() or None


def _busiest_model(model_usage: Mapping[str, Any]) -> str | None:
    """The ``modelUsage`` key with the most tokens (the main model, not a helper's)."""
    ranked = sorted(
        model_usage.items(), key=lambda item: sum(_model_tokens(mapping(item[1]))), reverse=True
    )
    return next((m for m in (model_name(k) for k, _ in ranked) if m), None)


class ClaudeParser(EventParser):
    looks_for: tuple[bytes, ...] | None = (EVENT_PATTERN, *SIGNAL_PATTERNS, literal(ROOT_REFUSAL))

    def __init__(
        self, *, model: str | None = None, prices: Mapping[str, ModelPrice] | None = None
    ) -> None:
        self.state = StreamState()
        self._model = model
        self._prices = prices or {}
        self._turns: dict[str, _Turn] = {}
        self._final = False  # the result's totals are in; later usage is ignored
        self._error_code: str | None = None

    def event(self, event: dict[str, Any]) -> bool:
        kind = string(event.get("type"))
        if kind == "assistant":
            return self._assistant(event)
        if kind == "result":
            return self._result(event)
        if kind == "system" and event.get("subtype") == "init":
            self._init(event)
        return False

    # -------------------------------------------------------------------------- events

    def plain(self, text: str) -> None:
        self.state.scan_lines(text)
        if ROOT_REFUSAL in text:
            self.state.is_error = True
            self.state.error_message = ROOT_HINT

    def _init(self, event: Mapping[str, Any]) -> None:
        model = model_name(event.get("model"))
        if model:
            self.state.model = model
            if self._model is None:  # the configured model prices turns, else the agent's
                self._model = model

    def _assistant(self, event: Mapping[str, Any]) -> bool:
        message = mapping(event.get("message"))
        if self.state.model is None and event.get("parent_tool_use_id") is None:
            self.state.model = model_name(message.get("model"))
        texts = [
            block["text"]
            for block in message.get("content") or ()
            if isinstance(block, dict)
            and block.get("type") == "text"
            and isinstance(block.get("text"), str)
        ]
        for text in texts:
            self.state.scan_signals(text)
        error = string(event.get("error"))
        if error:
            self._error_code = error
            detail = " ".join(t.strip() for t in texts if t.strip())
            self.state.error_message = f"{error}: {detail}" if detail else error
        usage = message.get("usage")
        if self._final or not isinstance(usage, dict):
            return False
        turn = _tokens(usage)
        key = string(message.get("id")) or f"#{len(self._turns)}"
        seen = self._turns.get(key)
        if seen is not None:  # the same message again (another content block): keep maxima
            turn = tuple(max(a, b) for a, b in zip(seen, turn, strict=True))  # type: ignore[assignment]
            if turn == seen:
                return False
        self._turns[key] = turn
        return self._set_tokens(*(sum(t[i] for t in self._turns.values()) for i in range(4)))

    def _result(self, event: Mapping[str, Any]) -> bool:
        state = self.state
        state.result_seen = True
        model_usage = mapping(event.get("modelUsage"))
        if state.model is None:
            state.model = _busiest_model(model_usage)
        totals = self._final_tokens(event, model_usage)
        changed = totals is not None and self._set_tokens(*totals)
        cost = number(event.get("total_cost_usd"))
        if cost is not None and cost != state.usage.cost_usd:
            state.usage.cost_usd = cost
            changed = True
        self._final = True
        text = string(event.get("result")) or ""
        if text:
            state.scan_signals(text)
        subtype = string(event.get("subtype")) or ""
        if event.get("is_error") is True or subtype.startswith("error"):
            state.is_error = True
            state.error_message = self._failure_text(event, text, subtype)
        return changed

    @staticmethod
    def _final_tokens(event: Mapping[str, Any], model_usage: Mapping[str, Any]) -> _Turn | None:
        """The result's totals: ``usage`` or the ``modelUsage`` sums, whichever counted more
        (after the non-streaming fallback ``usage`` is 0 or short); None when both are
        empty, so the running sum stands."""
        usage = event.get("usage")
        candidates = [_model_usage_tokens(model_usage)]
        if isinstance(usage, dict):
            candidates.insert(0, _tokens(usage))  # first: on a tie the result's own totals
        best = max(candidates, key=sum)
        return None if best == _NO_TOKENS else best

    def _failure_text(self, event: Mapping[str, Any], text: str, subtype: str) -> str:
        message = text.strip()
        if not message:
            errors = event.get("errors")
            if isinstance(errors, list):
                message = "; ".join(str(e) for e in errors if e)
        if not message:
            message = (
                self.state.error_message
                or _SUBTYPE_TEXT.get(subtype)
                or f"claude reported an error (subtype {subtype or 'unknown'})"
            )
        if self._error_code and self._error_code not in message:
            message = f"{message} ({self._error_code})"
        return message

    def _set_tokens(self, input_: int, output: int, cache_read: int, cache_creation: int) -> bool:
        usage = self.state.usage
        before = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_creation_tokens,
        )
        after = (input_, output, cache_read, cache_creation)
        if after == before:
            return False
        (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_creation_tokens,
        ) = after
        if not self._final:
            price = price_for(self._prices, self._model)
            if price is not None:
                usage.cost_usd = cost_of(usage, price)
        return True


class ClaudeHarness(ProgramHarness):
    name = "claude"
    # SIGINT to Claude's own process only: it stops its tools and prints its final result
    # (usage, cost). Sent to its whole tree at once, its Bash tool dies of the same signal
    # first and Claude often exits 0 without a result (measured: 3 of 5 times), so its usage
    # is lost.
    stop_leader_first = True

    def invocation(
        self, *, system: str, task: str, prompt_file: Path, model: str | None
    ) -> Invocation:
        self._model = model
        argv = [
            self.program,
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--append-system-prompt",
            system,
            "--dangerously-skip-permissions",
        ]
        if model:
            argv += ["--model", model]
        argv += self.extra_args
        return Invocation(argv=tuple(argv), stdin=task.encode())

    def parser(self) -> ClaudeParser:
        return ClaudeParser(model=self._model, prices=self.prices)
