"""A scripted OpenAI Responses API (``POST /v1/responses``, streamed), and the rig for `codex`.

Codex 0.171 (``wire_api = "responses"``) sends one streamed ``POST /v1/responses`` per model
call and nothing else. Its request carries the conversation as ``input`` items; the turn of a
request is the number of tool outputs already in it (``function_call_output`` and
``custom_tool_call_output`` items), so a retry gets the same answer.

Tools, as codex 0.171 declares them for a model it knows (``gpt-5.5``):

* ``apply_patch`` is a *custom* (freeform) tool: the call is a ``custom_tool_call`` item whose
  ``input`` is the patch text (``*** Begin Patch`` / ``*** Add File: PATH`` / ``+line`` /
  ``*** End Patch``). For a model it has no metadata for, codex declares no ``apply_patch``
  (and prints a warning item); then the file is written with ``exec_command`` and a heredoc.
* ``exec_command`` is a function tool with arguments ``{"cmd": "..."}``.

Usage goes into ``response.completed``'s ``usage`` the way the API reports it: ``input_tokens``
is the whole prompt (uncached + cache reads + cache writes), ``input_tokens_details`` splits
out ``cached_tokens`` and ``cache_write_tokens``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from tests.helpers.model_servers.base import (
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
)

MODEL = "gpt-5.5"  # a model codex 0.171 has metadata for (so it offers apply_patch)
API_KEY_VAR = "SCRIPTED_OPENAI_KEY"
_TOOL_OUTPUTS = {"function_call_output", "custom_tool_call_output"}

ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided: dummy.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to use this model.", "invalid_request_error", None),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
    503: ("The engine is currently overloaded.", "server_error", None),
}


def error_body(status: int) -> dict[str, Any]:
    """The API's error body for ``status``."""
    message, kind, code = ERRORS.get(status, (f"HTTP {status}", "server_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def turn_of(body: Any) -> int:
    """How many tool outputs the conversation already holds."""
    items = body.get("input") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return 0
    return sum(1 for item in items if isinstance(item, dict) and item.get("type") in _TOOL_OUTPUTS)


def tool_names(body: Any) -> set[str]:
    tools = body.get("tools") if isinstance(body, dict) else None
    return {str(t.get("name")) for t in tools or [] if isinstance(t, dict)}


def api_usage(usage: TurnUsage) -> dict[str, Any]:
    """``usage`` in the Responses API's own fields (input counts the cached parts too)."""
    prompt = usage.input + usage.cache_read + usage.cache_write
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read,
            "cache_write_tokens": usage.cache_write,
        },
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + usage.output,
    }


def patch_adding(path: str, content: str) -> str:
    """An apply_patch text that creates ``path`` with ``content``."""
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # apply_patch ends every added line with a newline itself
    added = "".join(f"+{line}\n" for line in lines)
    return f"*** Begin Patch\n*** Add File: {path}\n{added}*** End Patch"


def heredoc_writing(path: str, content: str) -> str:
    return f"cat > '{path}' <<'CUB_EOF'\n{content}\nCUB_EOF"


class ResponsesServer(ScriptedModelServer):
    name: ClassVar[str] = "openai-responses"

    def handle(self, request: RecordedRequest, reply: Reply) -> None:
        if request.method != "POST" or not request.path.split("?")[0].endswith("/responses"):
            reply.json({"error": {"message": "not found", "type": "invalid_request_error"}}, 404)
            return
        body = request.body if isinstance(request.body, dict) else {}
        script = find_script(body.get("input"))
        if script is None:
            reply.json(error_body(400), 400)
            return
        pause(script.delay)
        if script.fail is not None:
            reply.json(error_body(script.fail), script.fail)
            return
        turn = turn_of(body)
        model = body.get("model") if isinstance(body.get("model"), str) else None
        stream = _Stream(reply, f"resp_{len(self.requests)}", model)
        stream.start()
        if script.malformed:
            reply.raw('event: response.output_text.delta\ndata: {"type": "response.output_te\n\n')
            return  # the chunked stream ends without response.completed
        action = script.action(turn)
        if isinstance(action, FinalText):
            stream.message(action.text)
            kind = "final"
        else:
            stream.tool_call(action, turn, apply_patch="apply_patch" in tool_names(body))
            kind = "tool"
        usage = script.usage_for(turn)
        stream.complete(usage)
        self.record_usage(request, model, turn, kind, usage)


class _Stream:
    """One response as server-sent events, in the order the API sends them."""

    def __init__(self, reply: Reply, response_id: str, model: str | None) -> None:
        self._reply = reply
        self._id = response_id
        self._model = model
        self._output: list[dict[str, Any]] = []
        self._sequence = 0

    def _send(self, kind: str, **fields: Any) -> None:
        self._reply.event({"type": kind, "sequence_number": self._sequence, **fields}, kind)
        self._sequence += 1

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "response",
            "status": status,
            "model": self._model,
            "output": list(self._output),
            **extra,
        }

    def start(self) -> None:
        self._reply.start_stream()
        self._send("response.created", response=self._response("in_progress"))
        self._send("response.in_progress", response=self._response("in_progress"))

    def message(self, text: str) -> None:
        index, item_id = len(self._output), f"msg_{self._id}"
        self._send(
            "response.output_item.added",
            output_index=index,
            item={
                "type": "message",
                "id": item_id,
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            },
        )
        part = {"type": "output_text", "text": "", "annotations": []}
        common = {"item_id": item_id, "output_index": index, "content_index": 0}
        self._send("response.content_part.added", part=part, **common)
        for piece in _pieces(text):
            self._send("response.output_text.delta", delta=piece, **common)
        self._send("response.output_text.done", text=text, **common)
        part = {**part, "text": text}
        self._send("response.content_part.done", part=part, **common)
        item = {
            "type": "message",
            "id": item_id,
            "role": "assistant",
            "status": "completed",
            "content": [part],
        }
        self._done(index, item)

    def tool_call(self, action: ToolCall, turn: int, *, apply_patch: bool) -> None:
        index, call_id = len(self._output), f"call_{self._id}_{turn}"
        if action.kind == "write" and apply_patch:
            patch = patch_adding(action.path, action.content)
            item = {
                "type": "custom_tool_call",
                "id": f"ctc_{self._id}",
                "call_id": call_id,
                "name": "apply_patch",
                "status": "completed",
                "input": patch,
            }
            self._send(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "input": ""},
            )
            self._send(
                "response.custom_tool_call_input.delta",
                item_id=item["id"],
                output_index=index,
                delta=patch,
            )
            self._send(
                "response.custom_tool_call_input.done",
                item_id=item["id"],
                output_index=index,
                input=patch,
            )
            self._done(index, item)
            return
        command = (
            heredoc_writing(action.path, action.content)
            if action.kind == "write"
            else action.command
        )
        arguments = json.dumps({"cmd": command})
        item = {
            "type": "function_call",
            "id": f"fc_{self._id}",
            "call_id": call_id,
            "name": "exec_command",
            "status": "completed",
            "arguments": arguments,
        }
        self._send(
            "response.output_item.added",
            output_index=index,
            item={**item, "status": "in_progress", "arguments": ""},
        )
        self._send(
            "response.function_call_arguments.delta",
            item_id=item["id"],
            output_index=index,
            delta=arguments,
        )
        self._send(
            "response.function_call_arguments.done",
            item_id=item["id"],
            output_index=index,
            arguments=arguments,
        )
        self._done(index, item)

    def _done(self, index: int, item: dict[str, Any]) -> None:
        self._output.append(item)
        self._send("response.output_item.done", output_index=index, item=item)

    def complete(self, usage: TurnUsage) -> None:
        self._send(
            "response.completed", response=self._response("completed", usage=api_usage(usage))
        )


def _pieces(text: str, size: int = 16) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


# ------------------------------------------------------------------------- the rig


def codex_config(base_url: str) -> str:
    """CODEX_HOME/config.toml: the scripted provider, and nothing that reaches past 127.0.0.1."""
    return f"""\
model = "{MODEL}"
model_provider = "scripted"
# What codex would otherwise do on its own: check for updates, send analytics, fetch plugins
# and apps (a `git ls-remote` to a public host), search the web.
check_for_update_on_startup = false
web_search = "disabled"

[model_providers.scripted]
name = "scripted"
base_url = "{base_url}/v1"
wire_api = "responses"
env_key = "{API_KEY_VAR}"
# A failing request fails at once (codex retries up to 30 times by default).
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 20000

[features]
plugins = false
remote_plugin = false
apps = false

[analytics]
enabled = false

[otel]
exporter = "none"
"""


@contextlib.contextmanager
def codex_rig(tmp_path: Path) -> Iterator[CliRig]:
    """Start the scripted server; yield a CliRig for `cub run -H codex`; stop the server."""
    root = tmp_path / "codex-rig"
    bin_dir, home = root / "bin", root / "codex-home"
    bin_dir.mkdir(parents=True)
    home.mkdir()
    os.symlink(agent_program("codex"), bin_dir / "codex")
    with ResponsesServer() as server:
        (home / "config.toml").write_text(codex_config(server.url))
        env = {
            "PATH": path_with(bin_dir),
            "CODEX_HOME": str(home),
            API_KEY_VAR: "dummy",
            # Never the real provider, whatever else is in the environment.
            "OPENAI_BASE_URL": f"{server.url}/v1",
            "OPENAI_API_KEY": "dummy",
        }
        yield CliRig(
            harness="codex",
            server=server,
            env=env,
            config={},
            counted_kinds=("tool", "final"),
            usage_mid_task=False,
        )
