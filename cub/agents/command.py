"""The `command` harness: any program. The prompt arrives on stdin and in $CUB_PROMPT_FILE; the
exit code decides; a line `{"cub_usage": {...}}` adds to the attempt's usage."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from cub.agents.harness import SIGNAL_PATTERNS, Invocation, StreamState, combined
from cub.agents.sieve import literal
from cub.agents.stream import MAX_COST_USD, MAX_TOKENS, decode_event, number, token_count
from cub.records.schemas import Usage

_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")


def reported_usage(line: str) -> Usage | None:
    """The usage a `{"cub_usage": {...}}` line reports, or None for any other line.

    A report is refused whole when one of its figures is not a number, is negative or is not
    finite: a negative count would lower the totals the budgets are checked against. Figures
    above the caps (``MAX_TOKENS``, ``MAX_COST_USD``) are taken at the cap."""
    event = decode_event(line)
    fields: Any = event.get("cub_usage") if event is not None else None
    if not isinstance(fields, dict):
        return None
    usage = Usage()
    for name in _TOKEN_FIELDS:
        if name in fields:
            tokens = token_count(fields[name])
            if tokens is None:
                return None
            setattr(usage, name, tokens)
    if fields.get("cost_usd") is not None:
        usage.cost_usd = number(fields["cost_usd"])
        if usage.cost_usd is None:
            return None
    estimated = fields.get("estimated", False)
    if not isinstance(estimated, bool):
        return None
    usage.estimated = estimated
    return usage


class CommandParser:
    """Any program's output: only its signals, and the lines that report usage, matter (found
    in the whole text first, so plain output is never split into lines)."""

    looks_for: tuple[bytes, ...] | None = (literal('"cub_usage"'), *SIGNAL_PATTERNS)

    def __init__(self) -> None:
        self.state = StreamState()

    def feed_text(self, text: str) -> bool:
        self.state.scan_lines(text)
        if "{" not in text or '"cub_usage"' not in text:  # the first is one memchr
            return False
        changed = False
        for line in text.split("\n"):
            if '"cub_usage"' in line:
                changed = self._add(line) or changed
        return changed

    def feed(self, line: str) -> bool:
        """Take one line (without its newline)."""
        return self.feed_text(line + "\n")

    def _add(self, line: str) -> bool:
        reported = reported_usage(line)
        if reported is None:
            return False
        usage = self.state.usage
        for name in _TOKEN_FIELDS:
            total = getattr(usage, name) + getattr(reported, name)
            setattr(usage, name, min(total, MAX_TOKENS))
        if reported.cost_usd is not None:
            usage.cost_usd = min((usage.cost_usd or 0.0) + reported.cost_usd, MAX_COST_USD)
        usage.estimated = usage.estimated or reported.estimated
        return True


class CommandHarness:
    name = "command"
    # What a terminal's Ctrl+C does: SIGINT to the whole foreground process group.
    stop_signal: int = int(signal.SIGINT)
    stop_leader_first = False

    def __init__(self, argv: tuple[str, ...]) -> None:
        self.argv = argv

    def invocation(
        self, *, system: str, task: str, prompt_file: Path, model: str | None
    ) -> Invocation:
        env = {"CUB_PROMPT_FILE": str(prompt_file)}
        if model:
            env["CUB_MODEL"] = model
        return Invocation(argv=self.argv, stdin=combined(system, task).encode(), env=env)

    def parser(self) -> CommandParser:
        return CommandParser()
