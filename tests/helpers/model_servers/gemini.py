"""A scripted Gemini API (generativelanguage v1beta) for the real Gemini CLI.

Gemini CLI 0.61 sends, per task:

* under "auto" (no ``-m``) one ``POST /v1beta/models/gemini-3.5-flash-lite:generateContent``
  first: its model-routing check, a classifier asked for JSON by
  ``generationConfig.responseJsonSchema`` (``complexity_reasoning``, ``complexity_score``
  1-100); answered with JSON for that schema, ledger kind ``routing``. The score answered (90,
  the CLI's threshold) keeps the work on ``gemini-3.1-pro-preview-customtools``;
* then one ``POST /v1beta/models/MODEL:streamGenerateContent?alt=sse`` per turn, with its tools
  as ``functionDeclarations`` (``write_file {file_path, content}``, ``run_shell_command
  {command}``, …). Answered as server-sent events: ``data: {candidates: [{content: {role:
  "model", parts: [...]}, finishReason}], usageMetadata: {...}, modelVersion}``.

Script ``fail`` answers every call, the routing check included, with the API's error body;
``malformed`` breaks the chat stream off inside a JSON string.

The turn of a request is the number of ``functionResponse`` parts in its ``contents``. Usage
goes in ``usageMetadata``: ``promptTokenCount`` counts the whole prompt *including* its cached
part (``cachedContentTokenCount``), as the real API does. Gemini's usage has no cache writes: a
script's cache_write is not reported, and the ledger holds it as 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Iterator
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
)

_CALL = re.compile(r"^/v1beta/models/(?P<model>[^:/?]+):(?P<method>[A-Za-z]+)")
# The usage the routing check reports (it names no script turn).
ROUTING_USAGE = TurnUsage(input=610, output=24, cache_read=0, cache_write=0)
ERROR_STATUS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "API key not valid. Please pass a valid API key."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}


def error_body(status: int) -> dict[str, Any]:
    """The Gemini API's error body for an HTTP ``status``."""
    name, message = ERROR_STATUS.get(status, ("UNKNOWN", f"HTTP {status}"))
    return {"error": {"code": status, "message": message, "status": name}}


def usage_metadata(usage: TurnUsage) -> dict[str, int]:
    """``usageMetadata`` for ``usage`` (prompt count includes its cached part)."""
    prompt = usage.input + usage.cache_read
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": usage.output,
        "cachedContentTokenCount": usage.cache_read,
        "totalTokenCount": prompt + usage.output,
        "thoughtsTokenCount": 0,
    }


def turn_of(body: Any) -> int:
    """How many tool results the conversation holds (``functionResponse`` parts)."""
    turns = 0
    for content in body.get("contents", []) if isinstance(body, dict) else []:
        for part in content.get("parts", []) if isinstance(content, dict) else []:
            if isinstance(part, dict) and "functionResponse" in part:
                turns += 1
    return turns


def declared_tools(body: Any) -> dict[str, dict[str, Any]]:
    """The function declarations the CLI offered, by name."""
    tools: dict[str, dict[str, Any]] = {}
    for tool in body.get("tools", []) if isinstance(body, dict) else []:
        for declaration in tool.get("functionDeclarations", []):
            tools[declaration["name"]] = declaration
    return tools


class GeminiServer(ScriptedModelServer):
    name: ClassVar[str] = "gemini"
    # The model name the answers report in ``modelVersion`` (None: the requested model).
    model_version: str | None = None

    def handle(self, request: RecordedRequest, reply: Reply) -> None:
        match = _CALL.match(request.path)
        if request.method != "POST" or match is None:
            reply.json(error_body(404), status=404)
            return
        model, method = match["model"], match["method"]
        script = find_script(request.body) or Script()
        pause(script.delay)
        if script.fail is not None:
            reply.json(error_body(script.fail), status=script.fail)
        elif method == "generateContent":
            self._routing(request, reply, model)
        elif method == "streamGenerateContent":
            self._turn(request, reply, model, script)
        else:
            reply.json(error_body(404), status=404)

    def _routing(self, request: RecordedRequest, reply: Reply, model: str) -> None:
        """The CLI's classifier: a JSON answer to its response schema."""
        config = request.body.get("generationConfig", {}) if isinstance(request.body, dict) else {}
        schema = config.get("responseJsonSchema") or config.get("responseSchema") or {}
        answer = json.dumps(example_of(schema))
        self.record_usage(request, model, 0, "routing", ROUTING_USAGE)
        reply.json(
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": answer}]},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": usage_metadata(ROUTING_USAGE),
                "modelVersion": self.model_version or model,
            }
        )

    def _turn(self, request: RecordedRequest, reply: Reply, model: str, script: Script) -> None:
        turn = turn_of(request.body)
        action = script.action(turn)
        # Gemini's usage has no cache writes: the ledger holds what the answer reported.
        usage = dataclasses.replace(script.usage_for(turn), cache_write=0)
        version = self.model_version or model
        if isinstance(action, FinalText):
            kind = "final"
            # Two pieces, as the API streams text (a signal may be split between them).
            half = len(action.text) // 2
            pieces: list[list[dict[str, Any]]] = [
                [{"text": action.text[:half]}],
                [{"text": action.text[half:]}],
            ]
        else:
            kind = "tool"
            call = self._call(request.body, action)
            if isinstance(call, str):  # the CLI did not offer the tool the script needs
                reply.json(
                    {"error": {"code": 400, "message": call, "status": "INVALID_ARGUMENT"}}, 400
                )
                return
            pieces = [[{"functionCall": call}]]
        reply.start_stream()
        if script.malformed:
            reply.raw('data: {"candidates": [{"content": {"role": "model", "parts": [{"te\n\n')
            return
        for piece in pieces[:-1]:
            reply.event(_chunk(piece, version))
        # The last chunk ends the answer and carries its usage.
        reply.event({**_chunk(pieces[-1], version, "STOP"), "usageMetadata": usage_metadata(usage)})
        self.record_usage(request, version, turn, kind, usage)

    @staticmethod
    def _call(body: Any, action: ToolCall) -> dict[str, Any] | str:
        """The function call for ``action``, with the CLI's own tool names and arguments, or
        what is wrong when the CLI did not declare that tool."""
        tools = declared_tools(body)
        if action.kind == "write":
            name, args = "write_file", {"file_path": action.path, "content": action.content}
        else:
            name, args = "run_shell_command", {"command": action.command}
        if name not in tools:
            return f"scripted server: no {name} tool among {sorted(tools)}"
        return {"name": name, "args": args}


def _chunk(parts: list[dict[str, Any]], version: str, finish: str | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "modelVersion": version}


def example_of(schema: Any) -> Any:
    """A value valid for a (simple) JSON schema: the first enum value, a string, an object…"""
    if not isinstance(schema, dict):
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    kind = str(schema.get("type", "object")).lower()
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: example_of(sub) for name, sub in properties.items()}
    if kind == "array":
        return [example_of(schema.get("items", {}))]
    if kind in ("integer", "number"):
        # The routing check wants a complexity score from 1 to 100; a high one keeps the task
        # on the main (pro) model.
        return max(90, schema.get("minimum", 0))
    if kind == "boolean":
        return False
    return "scripted"


@contextlib.contextmanager
def gemini_rig(tmp_path: Path) -> Iterator[CliRig]:
    """Start the scripted server; yield a CliRig for `cub run -H gemini`; stop the server.

    Without ``-m`` Gemini CLI runs under "auto": a routing check on ``gemini-3.5-flash-lite``
    first, then the work on ``gemini-3.1-pro-preview-customtools`` (the server's answer to the
    check keeps the task on the pro model). Its stats count the routing check, so
    ``counted_kinds`` includes "routing". It prints no usage before its final result, so
    ``usage_mid_task`` is False (cub's own estimate grows per turn, though).

    Retries: ``general.maxAttempts: 1`` makes a named model (``-m``) fail at the first 5xx. Under
    "auto" the CLI's built-in model policies override it (routing check 5 attempts, chat 3, with
    5 s backoff: ≈54 s for a 500); only ``experimental.dynamicModelConfiguration`` with
    ``modelConfigs.modelChains`` could change that, and in 0.61 that made it loop forever over
    its fallback model. So tests of 5xx pass ``-m``. A 401 is never retried.
    """
    with GeminiServer() as server:
        env = gemini_env(tmp_path / "gemini-cli", server.url)
        yield CliRig(
            harness="gemini",
            server=server,
            env=env,
            config={},
            counted_kinds=("tool", "final", "routing"),
            usage_mid_task=False,
        )


def gemini_env(root: Path, url: str) -> dict[str, str]:
    """The environment for Gemini CLI against ``url``, with everything of its own in ``root``."""
    bin_dir, home, tmp = root / "bin", root / "home", root / "tmp"
    for path in (bin_dir, home / ".gemini", tmp):
        path.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "gemini"
    if not link.exists():
        link.symlink_to(agent_program("gemini"))
    # GEMINI_CLI_HOME replaces the home directory for everything of the CLI's: settings.json
    # in GEMINI_CLI_HOME/.gemini, its history, its trusted folders.
    (home / ".gemini" / "settings.json").write_text(json.dumps(SETTINGS, indent=2))
    return {
        "PATH": path_with(bin_dir),
        "GOOGLE_GEMINI_BASE_URL": url,
        "GEMINI_API_KEY": "dummy",
        "GEMINI_CLI_HOME": str(home),
        # Else -y is overridden in an untrusted folder (exit 55).
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
        # It writes an error report to the temporary directory on every API error.
        "TMPDIR": str(tmp),
    }


SETTINGS: dict[str, Any] = {
    # Else it refuses a custom base URL (exit 41).
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    # No retries of the chat model (a named one; see gemini_rig), no update checks.
    "general": {"maxAttempts": 1, "enableAutoUpdate": False, "enableAutoUpdateNotification": False},
    "telemetry": {"enabled": False},
    "privacy": {"usageStatisticsEnabled": False},
}
