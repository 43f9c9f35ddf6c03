"""The `codex` harness: OpenAI Codex CLI, non-interactive, JSONL events.

Command line::

    codex exec --json --dangerously-bypass-approvals-and-sandbox --skip-git-repo-check \
        [-m MODEL] [harness.extra_args.codex ...] -

with the combined (system + task) prompt on stdin (``-``).

``--skip-git-repo-check`` is always passed: Codex refuses to run outside a git repository, but
whether a git repository is needed is cub's decision (a run commits on a branch and was already
refused if it has no repository; ``--direct`` may run anywhere). Inside a repository the flag
changes nothing.

Usage: each ``turn.completed`` event reports ``input_tokens`` (which includes the cached part),
``cached_input_tokens`` and ``output_tokens``; they are summed over turns, recorded as
uncached input (``input_tokens - cached_input_tokens``), ``cache_read_tokens`` and output, so
that no token is counted twice in the total. Codex reports no cost: it is computed from
``budget.prices[MODEL]`` when configured, and otherwise stays unknown (null), never invented.

``error`` events (often "Reconnecting... n/5") are kept as the error message (the last one
wins) without failing the attempt by themselves; ``turn.failed`` is a failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cub.agents.adapters import count, decode_event, mapping, string
from cub.agents.harness import Invocation, ProgramHarness, StreamState
from cub.agents.pricing import cost_of, price_for
from cub.loop.prompts import combined

if TYPE_CHECKING:
    from cub.config.schema import ModelPrice


class CodexParser:
    def __init__(self, *, price: ModelPrice | None = None) -> None:
        self.state = StreamState()
        self._price = price

    def feed(self, line: str) -> bool:
        event = decode_event(line)
        if event is None:
            self.state.scan_signals(line)
            return False
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
            self._item(mapping(event.get("item")), final=kind == "item.completed")
        return False

    def _item(self, item: Mapping[str, Any], *, final: bool) -> None:
        kind = item.get("type")
        if kind == "agent_message" and final:
            text = string(item.get("text"))
            if text:
                self.state.scan_signals(text)
        elif kind == "error":
            message = string(item.get("message"))
            if message:
                self.state.error_message = message

    def _add_usage(self, usage: Mapping[str, Any]) -> bool:
        input_tokens = count(usage.get("input_tokens"))
        cached = min(count(usage.get("cached_input_tokens")), input_tokens)
        output = count(usage.get("output_tokens"))
        if not (input_tokens or output):
            return False
        total = self.state.usage
        total.input_tokens += input_tokens - cached
        total.cache_read_tokens += cached
        total.output_tokens += output
        if self._price is not None:
            total.cost_usd = cost_of(total, self._price)
        return True


class CodexHarness(ProgramHarness):
    name = "codex"

    def invocation(
        self, *, system: str, task: str, prompt_file: Path, model: str | None
    ) -> Invocation:
        self._model = model
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
        return Invocation(argv=tuple(argv), stdin=combined(system, task).encode())

    def parser(self) -> CodexParser:
        return CodexParser(price=price_for(self.prices, self._model))
