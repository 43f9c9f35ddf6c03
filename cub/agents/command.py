"""The `command` harness: any program. The prompt arrives on stdin and in $CUB_PROMPT_FILE; the
exit code decides; a line `{"cub_usage": {...}}` adds to the attempt's usage."""

from __future__ import annotations

import signal
from pathlib import Path

import msgspec

from cub.agents.harness import Invocation, StreamState
from cub.loop.prompts import combined
from cub.records.schemas import Usage


class _UsageLine(msgspec.Struct):
    cub_usage: Usage


_decode_usage_line = msgspec.json.Decoder(_UsageLine).decode


class CommandParser:
    def __init__(self) -> None:
        self.state = StreamState()

    def feed(self, line: str) -> bool:
        self.state.scan_signals(line)
        if '"cub_usage"' not in line:
            return False
        try:
            reported = _decode_usage_line(line.strip()).cub_usage
        except msgspec.DecodeError:
            return False
        usage = self.state.usage
        usage.input_tokens += reported.input_tokens
        usage.output_tokens += reported.output_tokens
        usage.cache_read_tokens += reported.cache_read_tokens
        usage.cache_creation_tokens += reported.cache_creation_tokens
        if reported.cost_usd is not None:
            usage.cost_usd = (usage.cost_usd or 0.0) + reported.cost_usd
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
