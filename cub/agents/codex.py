"""The `codex` harness: OpenAI Codex CLI, non-interactive, JSONL events.

Command line::

    codex exec --json --dangerously-bypass-approvals-and-sandbox --skip-git-repo-check \
        [-m MODEL] [harness.extra_args.codex ...] -

with the combined (system + task) prompt on stdin (``-``).

``--skip-git-repo-check`` is always passed: Codex refuses to run outside a git repository, but
whether a git repository is needed is cub's decision (a run commits on a branch and was already
refused if it has no repository; ``--direct`` may run anywhere). Inside a repository the flag
changes nothing.

What ``codex exec --json`` (0.171) reports, and when — measured against a scripted Responses
API server with a four-call task (write a file, two shell commands, final message)::

    thread.started
    turn.started
    item.started / item.completed   file_change (paths only), command_execution (command,
                                    aggregated_output, exit_code), agent_message (text),
                                    reasoning, error (a warning, e.g. unknown model metadata)
    turn.completed {"usage": {"input_tokens", "cached_input_tokens",
                              "cache_write_input_tokens", "output_tokens",
                              "reasoning_output_tokens"}}

Usage comes **only** in ``turn.completed``, once, at the end of the task: no per-model-call
figure is printed (the CLI's internal token counts never reach ``--json``). Its
``input_tokens`` is the whole prompt of every model call summed (cache reads and writes
included); ``output_tokens`` already includes ``reasoning_output_tokens``. They are recorded as
uncached input (``input_tokens - cached - cache_write``), ``cache_read_tokens``,
``cache_creation_tokens`` and output, so that no token is counted twice and the total equals
codex's own ``input_tokens + output_tokens``. Several ``turn.completed`` events are summed.

Until that figure arrives — and for good when codex is stopped: on SIGINT it exits at once
without ``turn.completed``, on SIGTERM it dies — usage is an estimate at four characters to a
token, marked ``estimated``: input is the prompt cub sent plus the tool output codex fed back to
the model (command output), output is what the model wrote (messages, reasoning, commands).
It is a lower bound: codex's own instructions and tool list (about 10k tokens) and the
conversation it re-sends on every model call are not in the stream. So a token budget acts on
codex mid-task only through this estimate; the exact figure replaces it when the task ends.

Codex reports no cost: it is computed from ``budget.prices[MODEL]`` when configured (estimated
while the usage is), and otherwise stays unknown (null), never invented.

``error`` events (often "Reconnecting... n/5") are kept as the error message (the last one
wins) without failing the attempt by themselves; ``turn.failed`` is a failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cub.agents.harness import EventParser, Invocation, ProgramHarness, StreamState, combined
from cub.agents.pricing import cost_of, price_for
from cub.agents.stream import count, estimate_tokens, mapping, string

if TYPE_CHECKING:
    from cub.config.schema import ModelPrice

# The parts of an item the model wrote (its output) and the parts a tool gave back to it
# (input of its next call), by item type.
_WRITTEN = {
    "agent_message": ("text",),
    "reasoning": ("text",),
    "command_execution": ("command",),
    "mcp_tool_call": ("arguments",),
    "web_search": ("query",),
}
_READ_BACK = {"command_execution": ("aggregated_output",), "mcp_tool_call": ("result",)}


class CodexParser(EventParser):
    def __init__(self, *, price: ModelPrice | None = None, prompt_chars: int = 0) -> None:
        self.state = StreamState()
        self._price = price
        self._input_chars = prompt_chars
        self._output_chars = 0
        self._counted: set[tuple[str, str]] = set()  # (item id, field) already estimated
        self._exact = False  # a turn.completed figure is in; estimates no longer apply
        usage = self.state.usage
        usage.input_tokens = estimate_tokens(prompt_chars)
        usage.estimated = True
        self._set_cost()

    def event(self, event: dict[str, Any]) -> bool:
        kind = string(event.get("type"))
        if kind == "turn.completed":
            # `codex exec` runs one turn; once it completed, the output is over.
            self.state.result_seen = True
            return self._add_usage(mapping(event.get("usage")))
        if kind == "turn.failed":
            self.state.result_seen = True
            self.state.is_error = True
            self.state.error_message = (
                string(mapping(event.get("error")).get("message"))
                or self.state.error_message
                or "codex reported that the turn failed"
            )
        elif kind == "error":
            message = string(event.get("message"))
            if message:
                self.state.error_message = message
        elif kind in ("item.completed", "item.updated", "item.started"):
            return self._item(mapping(event.get("item")), final=kind == "item.completed")
        return False

    def _item(self, item: Mapping[str, Any], *, final: bool) -> bool:
        kind = string(item.get("type")) or ""
        if kind == "agent_message" and final:
            text = string(item.get("text"))
            if text:
                self.state.scan_signals(text)
        elif kind == "error":
            message = string(item.get("message"))
            if message:
                self.state.error_message = message
        item_id = string(item.get("id")) or ""
        written = self._new_chars(item_id, item, _WRITTEN.get(kind, ()), final=final)
        read_back = self._new_chars(item_id, item, _READ_BACK.get(kind, ()), final=final)
        return self._estimate(written, read_back)

    def _new_chars(
        self, item_id: str, item: Mapping[str, Any], fields: tuple[str, ...], *, final: bool
    ) -> int:
        """Characters of ``fields`` not estimated yet. A text field is counted once per item
        (started/updated/completed repeat it); a streaming message only when completed."""
        chars = 0
        for name in fields:
            value = item.get(name)
            text = value if isinstance(value, str) else "" if value is None else str(value)
            if not text or (item.get("type") in ("agent_message", "reasoning") and not final):
                continue
            if name == "aggregated_output" and not final:
                continue  # the output is only complete when the command is
            key = (item_id, name)
            if item_id and key in self._counted:
                continue
            self._counted.add(key)
            chars += len(text)
        return chars

    def _estimate(self, written: int, read_back: int) -> bool:
        """More text went through the model: raise the estimate (until the exact figure)."""
        self._output_chars += written
        self._input_chars += read_back
        if self._exact or not (written or read_back):
            return False
        usage = self.state.usage
        usage.input_tokens = estimate_tokens(self._input_chars)
        usage.output_tokens = estimate_tokens(self._output_chars)
        self._set_cost()
        return True

    def _add_usage(self, usage: Mapping[str, Any]) -> bool:
        prompt = count(usage.get("input_tokens"))
        cached = min(count(usage.get("cached_input_tokens")), prompt)
        written = min(count(usage.get("cache_write_input_tokens")), prompt - cached)
        output = count(usage.get("output_tokens"))
        if not (prompt or output):
            return False
        total = self.state.usage
        if not self._exact:
            # The first real figure replaces the estimate entirely.
            self._exact = True
            total.input_tokens = total.output_tokens = 0
            total.cache_read_tokens = total.cache_creation_tokens = 0
            total.estimated = False
        total.input_tokens += prompt - cached - written
        total.cache_read_tokens += cached
        total.cache_creation_tokens += written
        total.output_tokens += output
        self._set_cost()
        return True

    def _set_cost(self) -> None:
        if self._price is not None:
            self.state.usage.cost_usd = cost_of(self.state.usage, self._price)


class CodexHarness(ProgramHarness):
    name = "codex"
    _prompt_chars = 0  # of the latest invocation's prompt

    def invocation(
        self, *, system: str, task: str, prompt_file: Path, model: str | None
    ) -> Invocation:
        prompt = combined(system, task)
        # parser() belongs to the latest invocation(): it estimates that prompt and prices
        # that model.
        self._model, self._prompt_chars = model, len(prompt)
        argv = [
            self.program,
            "exec",
            "--json",
            "--dangerously-bypass-approvals-and-sandbox",
            "--skip-git-repo-check",
        ]
        if model:
            argv += ["-m", model]
        # Extra arguments go before the prompt argument `-`, where options always parse.
        argv += [*self.extra_args, "-"]
        return Invocation(argv=tuple(argv), stdin=prompt.encode())

    def parser(self) -> CodexParser:
        return CodexParser(
            price=price_for(self.prices, self._model), prompt_chars=self._prompt_chars
        )
