"""Agent output captured on these machines (shared/notes/harness-formats.md), kept verbatim in
one place for every test that replays it."""

from __future__ import annotations

import json

# `claude -p --output-format stream-json --verbose` when not logged in (2.1.197); the "tools"
# list of the first line is trimmed in the capture, so that line is not valid JSON.
CLAUDE_NOT_LOGGED_IN = [
    '{"type":"system","subtype":"init","cwd":"/tmp/x","session_id":"…","tools":[…],"model":"…","permissionMode":"bypassPermissions","apiKeySource":"none","claude_code_version":"2.1.197"}',
    '{"type":"assistant","message":{"id":"…","model":"<synthetic>","role":"assistant","type":"message","usage":{"input_tokens":0,"output_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0},"content":[{"type":"text","text":"Not logged in · Please run /login"}]},"parent_tool_use_id":null,"session_id":"…","error":"authentication_failed"}',  # noqa: E501
    '{"type":"result","subtype":"success","is_error":true,"duration_ms":111,"num_turns":1,"result":"Not logged in · Please run /login","session_id":"…","total_cost_usd":0,"usage":{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0},"modelUsage":{},"permission_denials":[],"terminal_reason":"completed"}',  # noqa: E501
]

# `codex exec --json` events, in the order of the capture.
CODEX_SAMPLE = [
    '{"type":"thread.started","thread_id":"01a2…"}',
    '{"type":"turn.started"}',
    '{"type":"item.started","item":{"type":"command_execution","command":"npm test"}}',
    '{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"…"}}',
    '{"type":"turn.completed","usage":{"input_tokens":500,"cached_input_tokens":100,"output_tokens":200}}',
    '{"type":"error","message":"Reconnecting... 2/5 (stream disconnected before completion: …)"}',
]


def json_line(obj: object) -> str:
    """One event as an agent prints it (UTF-8 kept as is)."""
    return json.dumps(obj, ensure_ascii=False)
