"""A scripted OpenAI Chat Completions server, and the rig that runs the real OpenCode against it.

OpenCode (``opencode-ai`` 1.18.33) talks to a custom OpenAI-compatible provider through
streamed ``POST /v1/chat/completions``. Per task it first asks for a session title (a request
with no tools, whose usage never appears in OpenCode's own output), then one request per step.
The script's turn is the number of ``role: "tool"`` messages already in the conversation.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from tests.helpers.model_servers.base import (
    CliRig,
    FinalText,
    RecordedRequest,
    Reply,
    Script,
    ScriptedModelServer,
    ToolCall,
    TurnUsage,
    agent_program,
    find_script,
    path_with,
    pause,
    script_marker,
)

PROVIDER = "scripted"
MODEL = "scripted-model"
TITLE = "Scripted task"
# Usage reported for a title request (OpenCode never shows it; the ledger keeps it apart).
TITLE_USAGE = TurnUsage(150, 6, 0, 0)

# OpenCode's own tool names and argument shapes (as sent in its `tools` list).
WRITE_TOOL = "write"  # {"filePath": ..., "content": ...}
SHELL_TOOL = "bash"  # {"command": ..., "description": ...}


class ChatServer(ScriptedModelServer):
    """Answers ``POST /v1/chat/completions`` by the script in the conversation."""

    name: ClassVar[str] = "openai-chat"

    def handle(self, request: RecordedRequest, reply: Reply) -> None:
        if request.method != "POST" or not request.path.startswith("/v1/chat/completions"):
            reply.json({"error": {"message": "not found", "type": "invalid_request_error"}}, 404)
            return
        body = request.body if isinstance(request.body, dict) else {}
        script = find_script(body.get("messages")) or Script()
        pause(script.delay)
        if script.fail is not None:
            # OpenCode retries 429/5xx up to 5 times with backoff from 2 s, unless the answer
            # says when to retry; "now" keeps a failing test fast.
            retry_now = {"retry-after-ms": "0", "retry-after": "0"} if script.fail >= 429 else {}
            reply.json(_error_body(script.fail), script.fail, retry_now)
            return
        model = str(body.get("model") or MODEL)
        if not body.get("tools"):
            # Title generation (or any other call without tools): text only, kind "title".
            self._answer(request, reply, body, model, "title", 0, TITLE_USAGE, text=TITLE)
            return
        turn = _tool_results(body.get("messages"))
        usage = script.usage_for(turn)
        if script.malformed:
            reply.start_stream()
            reply.raw('data: {"id":"chatcmpl-broken","choices":[{"index":0,"delta":{"content"')
            reply.raw("\n\ndata: {not json at all\n\n")
            return
        action = script.action(turn)
        offered = _tool_names(body.get("tools"))
        if isinstance(action, ToolCall) and _tool_call(action)[0] not in offered:
            # The CLI changed its tools: say so loudly rather than call one it does not have.
            message = f"scripted server: no {_tool_call(action)[0]!r} among {sorted(offered)}"
            reply.json({"error": {"message": message, "type": "invalid_request_error"}}, 400)
            return
        if isinstance(action, FinalText):
            self._answer(request, reply, body, model, "final", turn, usage, text=action.text)
        else:
            self._answer(request, reply, body, model, "tool", turn, usage, call=action)

    def _answer(
        self,
        request: RecordedRequest,
        reply: Reply,
        body: Mapping[str, Any],
        model: str,
        kind: str,
        turn: int,
        usage: TurnUsage,
        *,
        text: str | None = None,
        call: ToolCall | None = None,
    ) -> None:
        stream_id = f"chatcmpl-{turn}-{kind}-{time.monotonic_ns()}"

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": stream_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        reply.start_stream()
        reply.event(chunk({"role": "assistant", "content": ""}))
        if call is not None:
            name, arguments = _tool_call(call)
            call_id = f"call_{turn}_{name}"
            head = {"index": 0, "id": call_id, "type": "function"}
            reply.event(chunk({"tool_calls": [{**head, "function": {"name": name}}]}))
            # The arguments arrive in two pieces, as real providers stream them.
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                reply.event(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
            reply.event(chunk({}, "tool_calls"))
        else:
            reply.event(chunk({"content": text or ""}))
            reply.event(chunk({}, "stop"))
        if mapping_of(body.get("stream_options")).get("include_usage"):
            reply.event(
                {
                    "id": stream_id,
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [],
                    "usage": _usage_body(usage),
                }
            )
            # The ledger holds what was reported: this API has no field for cache writes.
            reported = TurnUsage(usage.input, usage.output, usage.cache_read, 0)
            self.record_usage(request, model, turn, kind, reported)
        reply.raw("data: [DONE]\n\n")
        reply.end_stream()


def mapping_of(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _tool_results(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "tool")


def _tool_names(tools: Any) -> set[str]:
    if not isinstance(tools, list):
        return set()
    return {str(mapping_of(mapping_of(t).get("function")).get("name")) for t in tools}


def _tool_call(call: ToolCall) -> tuple[str, str]:
    if call.kind == "write":
        return WRITE_TOOL, json.dumps({"filePath": call.path, "content": call.content})
    arguments = {"command": call.command, "description": "Run a shell command"}
    return SHELL_TOOL, json.dumps(arguments)


def _usage_body(usage: TurnUsage) -> dict[str, Any]:
    """OpenAI's usage: ``prompt_tokens`` includes the cached ones; cache writes have no field."""
    prompt = usage.input + usage.cache_read
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output,
        "total_tokens": prompt + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read},
    }


def _error_body(status: int) -> dict[str, Any]:
    kinds = {401: ("invalid_api_key", "Incorrect API key provided: dummy.")}
    code, message = kinds.get(status, ("server_error", f"The scripted server failed ({status})."))
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


# What keeps OpenCode on 127.0.0.1: no models.dev catalogue fetch, no default plugins, no
# auto-update, no sharing, no LSP downloads, nothing read from a Claude Code setup.
QUIET_ENV = {
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_CLAUDE_CODE": "1",
    "OPENCODE_DISABLE_EXTERNAL_SKILLS": "1",
    # Belt and braces for the plugin install below: npm may use its cache only.
    "npm_config_offline": "true",
}


def opencode_config(base_url: str) -> dict[str, Any]:
    """opencode.json: one OpenAI-compatible provider at ``base_url`` (…/v1), tools unattended."""
    return {
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": False,
        "share": "disabled",
        "model": f"{PROVIDER}/{MODEL}",
        "small_model": f"{PROVIDER}/{MODEL}",
        "provider": {
            PROVIDER: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Scripted",
                "options": {"baseURL": base_url, "apiKey": "dummy"},
                "models": {MODEL: {"name": "Scripted model"}},
            }
        },
        "permission": {
            "edit": "allow",
            "bash": "allow",
            "external_directory": "allow",
            "doom_loop": "allow",
            "webfetch": "deny",
        },
    }


def _seed_config_dir(config_dir: Path) -> None:
    """Make OpenCode's config directory look as if its plugin package were installed.

    At every start OpenCode runs, in the background, an npm install of ``@opencode-ai/plugin``
    into each config directory — unless the directory already has ``node_modules`` and both
    package.json and package-lock.json name the package (1.18.33's Npm.install). So: seed them.
    """
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "node_modules").mkdir(exist_ok=True)
    deps = {"@opencode-ai/plugin": "1.18.33"}
    (config_dir / "package.json").write_text(json.dumps({"dependencies": deps}))
    lock = {"lockfileVersion": 3, "packages": {"": {"dependencies": deps}}}
    (config_dir / "package-lock.json").write_text(json.dumps(lock))


def create_database(rig: CliRig, cwd: Path) -> None:
    """Use OpenCode once, as a user's has been: two OpenCode processes starting at once on a
    fresh data directory race on its database schema (1.18: "Failed query: CREATE TABLE
    `workspace`", exit 1), and only a real `opencode run` creates all of it. The server's
    ledger and request log are cleared afterwards, so the test counts only its own run."""
    model = rig.config["harness"]["model"]
    subprocess.run(
        ["opencode", "run", "--format", "json", "-m", model],
        input=script_marker(final="ready"),
        text=True,
        cwd=cwd,
        env={**os.environ, **rig.env},
        check=True,
        capture_output=True,
        timeout=120,
    )
    del rig.server.ledger[:]
    del rig.server.requests[:]


@contextlib.contextmanager
def opencode_rig(tmp_path: Path) -> Iterator[CliRig]:
    """Start the scripted server; yield a CliRig for `cub run -H opencode`; stop the server."""
    root = tmp_path / "opencode-rig"
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "opencode").symlink_to(agent_program("opencode"))
    dirs = {name: root / name for name in ("config", "data", "cache", "state", "pwd-trap")}
    for path in dirs.values():
        path.mkdir()
    _seed_config_dir(dirs["config"] / "opencode")
    with ChatServer() as server:
        config_file = root / "opencode.json"
        config_file.write_text(json.dumps(opencode_config(f"{server.url}/v1"), indent=2))
        env = {
            "PATH": path_with(bin_dir),
            # OpenCode works in $PWD, not in the directory it was started in. Whatever PWD
            # the caller had (pytest's: possibly a real repository) must never reach it; a
            # test sets PWD as a shell would, and cub must give the agent its own work dir.
            "PWD": str(dirs["pwd-trap"]),
            "OPENCODE_CONFIG": str(config_file),
            "XDG_CONFIG_HOME": str(dirs["config"]),
            "XDG_DATA_HOME": str(dirs["data"]),
            "XDG_CACHE_HOME": str(dirs["cache"]),
            "XDG_STATE_HOME": str(dirs["state"]),
            **QUIET_ENV,
        }
        yield CliRig(
            harness="opencode",
            server=server,
            env=env,
            config={"harness": {"model": f"{PROVIDER}/{MODEL}"}},
            # The title request's usage never appears in OpenCode's output.
            counted_kinds=("tool", "final"),
            usage_mid_task=True,
        )
