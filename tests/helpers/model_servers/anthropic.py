"""A scripted Anthropic Messages API for the real Claude Code CLI (`cub run -H claude`).

What Claude Code 2.1.197 sends (logged from the real CLI): a ``HEAD /`` probe, then one
``POST /v1/messages?beta=true`` per turn with ``"stream": true``, the whole conversation,
a system prompt naming the working directory ("Primary working directory: /path") and its
tools (``Write`` {file_path, content} wants an absolute path; ``Bash`` {command}). After a
stream that breaks off with invalid data it asks the same question again without
``stream``, and takes a plain JSON message as the answer.

The answers follow the API: server-sent events ``message_start`` (usage with input and cache
fields, output 1 as the API reports it mid-stream), ``content_block_start/delta/stop`` for text
(``text_delta``) and tool calls (``input_json_delta``), ``message_delta`` (stop reason and the
final usage), ``message_stop``; errors as ``{"type": "error", "error": {...}}``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tests.helpers.model_servers.base import (
    Action,
    CliRig,
    FinalText,
    RecordedRequest,
    Reply,
    ScriptedModelServer,
    ToolCall,
    TurnUsage,
    agent_program,
    find_script,
    path_with,
    pause,
    texts_in,
)

# The API's error type for each status (docs: "Errors"); the message is what the API says.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "your API key does not have permission to use this resource"),
    404: ("not_found_error", "the requested resource could not be found"),
    429: ("rate_limit_error", "rate limit exceeded"),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}
WORKDIR = re.compile(r"Primary working directory: (\S+)")
_ids = itertools.count(1)


def tool_results(body: Any) -> int:
    """How many tool results the conversation holds (the turn number)."""
    count = 0
    for message in (body or {}).get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            count += sum(
                1 for b in content if isinstance(b, dict) and b.get("type") == "tool_result"
            )
    return count


def tool_named(body: Any, wanted: str, fields: set[str]) -> str:
    """The CLI's own name for a tool: ``wanted`` when offered, else one taking ``fields``."""
    tools = [t for t in (body or {}).get("tools") or () if isinstance(t, dict)]
    names = [t.get("name") for t in tools]
    if wanted in names:
        return wanted
    for tool in tools:
        properties = set((tool.get("input_schema") or {}).get("properties") or {})
        if fields <= properties:
            return str(tool["name"])
    raise AssertionError(f"no {wanted} tool among {names}")


def workdir(body: Any) -> str:
    """The directory Claude Code says it runs in (the Write tool wants absolute paths)."""
    match = WORKDIR.search("\n".join(texts_in((body or {}).get("system"))))
    if match is None:
        raise AssertionError("the system prompt names no working directory")
    return match.group(1)


@dataclass(frozen=True)
class Block:
    """One content block of an answer: text, or a tool call with its input."""

    type: str  # "text" or "tool_use"
    text: str = ""
    name: str = ""
    input: dict[str, Any] | None = None
    id: str = ""

    def start(self) -> dict[str, Any]:
        if self.type == "text":
            return {"type": "text", "text": ""}
        return {"type": "tool_use", "id": self.id, "name": self.name, "input": {}}

    def delta(self) -> dict[str, Any]:
        if self.type == "text":
            return {"type": "text_delta", "text": self.text}
        return {"type": "input_json_delta", "partial_json": json.dumps(self.input)}

    def whole(self) -> dict[str, Any]:
        if self.type == "text":
            return {"type": "text", "text": self.text}
        return {"type": "tool_use", "id": self.id, "name": self.name, "input": self.input}


def usage_fields(usage: TurnUsage, output: int | None = None) -> dict[str, int]:
    return {
        "input_tokens": usage.input,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cache_read,
        "output_tokens": usage.output if output is None else output,
    }


class AnthropicServer(ScriptedModelServer):
    name: ClassVar[str] = "anthropic"

    def handle(self, request: RecordedRequest, reply: Reply) -> None:
        if request.method == "HEAD":  # Claude Code's reachability probe
            reply.empty(200)
            return
        if request.method != "POST" or not request.path.startswith("/v1/messages"):
            reply.empty(404)
            return
        body = request.body if isinstance(request.body, dict) else {}
        script = find_script(body)
        if script is None:
            self._error(reply, 400, "no model-script marker in the conversation")
            return
        pause(script.delay)
        if script.fail is not None:
            self._error(reply, script.fail)
            return
        turn = tool_results(body)
        action = script.action(turn)
        blocks = self._blocks(body, action)
        model = str(body.get("model") or "claude-scripted")
        usage = script.usage_for(turn)
        streaming = body.get("stream") is True
        if streaming and script.malformed:
            # The stream breaks off inside its first event: no usage was reported.
            reply.start_stream()
            reply.raw('event: message_start\ndata: {"type": "message_start", "message": {"id"')
            reply.raw("\n\ndata: not json at all\n\n")
            return
        kind = "final" if isinstance(action, FinalText) else "tool"
        self.record_usage(request, model, turn, kind, usage)
        message = {
            "id": f"msg_scripted_{next(_ids):04d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "stop_reason": None,
            "stop_sequence": None,
        }
        stop = "end_turn" if isinstance(action, FinalText) else "tool_use"
        if streaming:
            self._stream(reply, message, blocks, usage, stop)
        else:
            reply.json(
                {
                    **message,
                    "content": [b.whole() for b in blocks],
                    "stop_reason": stop,
                    "usage": usage_fields(usage),
                }
            )

    # ---------------------------------------------------------------------- answers

    def _blocks(self, body: Any, action: Action) -> list[Block]:
        if isinstance(action, FinalText):
            return [Block("text", text=action.text)]
        assert isinstance(action, ToolCall)
        call_id = f"toolu_scripted_{next(_ids):04d}"
        if action.kind == "write":
            name = tool_named(body, "Write", {"file_path", "content"})
            path = str(Path(workdir(body)) / action.path)
            arguments: dict[str, Any] = {"file_path": path, "content": action.content}
            intro = f"Writing {action.path}."
        else:
            name = tool_named(body, "Bash", {"command"})
            arguments = {"command": action.command, "description": "scripted command"}
            intro = "Running a command."
        return [
            Block("text", text=intro),
            Block("tool_use", name=name, input=arguments, id=call_id),
        ]

    def _stream(
        self,
        reply: Reply,
        message: dict[str, Any],
        blocks: list[Block],
        usage: TurnUsage,
        stop: str,
    ) -> None:
        reply.start_stream()
        start = {**message, "content": [], "usage": usage_fields(usage, output=1)}
        reply.event({"type": "message_start", "message": start}, "message_start")
        reply.event({"type": "ping"}, "ping")
        for index, block in enumerate(blocks):
            reply.event(
                {"type": "content_block_start", "index": index, "content_block": block.start()},
                "content_block_start",
            )
            reply.event(
                {"type": "content_block_delta", "index": index, "delta": block.delta()},
                "content_block_delta",
            )
            reply.event({"type": "content_block_stop", "index": index}, "content_block_stop")
        reply.event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": usage_fields(usage),
            },
            "message_delta",
        )
        reply.event({"type": "message_stop"}, "message_stop")
        reply.end_stream()

    def _error(self, reply: Reply, status: int, message: str | None = None) -> None:
        kind, default = ERRORS.get(status, ("api_error", f"error {status}"))
        reply.json(
            {"type": "error", "error": {"type": kind, "message": message or default}}, status
        )


# ------------------------------------------------------------------------------ the rig

CLAUDE_ENV = {
    "ANTHROPIC_API_KEY": "dummy",
    # No telemetry, error reports, update checks, feature flags or other side traffic.
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    # API errors are retried 10 times over ≈3 minutes by default: fail at once instead.
    "CLAUDE_CODE_MAX_RETRIES": "0",
}


@contextlib.contextmanager
def claude_rig(tmp_path: Path) -> Iterator[CliRig]:
    """Start the scripted server; yield a CliRig for `cub run -H claude`; stop the server."""
    root = tmp_path / "claude-rig"
    programs = root / "bin"
    programs.mkdir(parents=True)
    (programs / "claude").symlink_to(agent_program("claude"))
    config_dir = root / "config"
    config_dir.mkdir()
    with AnthropicServer() as server:
        env = {
            **CLAUDE_ENV,
            "PATH": path_with(programs),
            "ANTHROPIC_BASE_URL": server.url,
            "CLAUDE_CONFIG_DIR": str(config_dir),
        }
        config = {"harness": {"env": {"IS_SANDBOX": "1"}}}
        yield CliRig(
            harness="claude",
            server=server,
            env=env,
            config=config,
            counted_kinds=("tool", "final"),
            usage_mid_task=True,
        )
