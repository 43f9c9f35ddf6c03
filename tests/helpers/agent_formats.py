"""Agent output captured on these machines (shared/notes/harness-formats.md), kept verbatim in
one place for every test that replays it; and, for the agents not captured (gemini, opencode),
streams written in their documented event formats, shared the same way."""

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


# `gemini -o stream-json` (written, not captured): one event of each kind (a warning is not an
# error), then the result with its stats: 1500 prompt tokens (1000 of them cached), 300 output,
# 50 thinking.
GEMINI_STREAM = [
    json_line({"type": "init", "timestamp": "t", "session_id": "g1", "model": "gemini-2.5-pro"}),
    json_line({"type": "message", "timestamp": "t", "role": "user", "content": "the prompt"}),
    json_line(
        {"type": "message", "timestamp": "t", "role": "assistant", "content": "Hel", "delta": True}
    ),
    json_line(
        {
            "type": "tool_use",
            "timestamp": "t",
            "tool_name": "run_shell_command",
            "tool_id": "x1",
            "parameters": {"command": "ls"},
        }
    ),
    json_line(
        {
            "type": "tool_result",
            "timestamp": "t",
            "tool_id": "x1",
            "status": "success",
            "output": "",
        }
    ),
    json_line({"type": "error", "timestamp": "t", "severity": "warning", "message": "slow"}),
    json_line(
        {
            "type": "result",
            "timestamp": "t",
            "status": "success",
            "stats": {
                "total_tokens": 1850,
                "input_tokens": 1500,
                "output_tokens": 300,
                "cached": 1000,
                "input": 500,
                "duration_ms": 900,
                "tool_calls": 1,
            },
        }
    ),
]


# `opencode run --format json` (written, not captured): two steps, whose step_finish parts carry
# tokens and cost (0.02 in all: 1300 input, 160 output with reasoning, 1800 cache reads, 50 cache
# writes).
OPENCODE_STREAM = [
    json_line(
        {"type": "step_start", "timestamp": 1, "sessionID": "ses", "part": {"type": "step-start"}}
    ),
    json_line(
        {
            "type": "text",
            "timestamp": 2,
            "sessionID": "ses",
            "part": {"type": "text", "text": "Looking at the tests."},
        }
    ),
    json_line(
        {
            "type": "tool_use",
            "timestamp": 3,
            "sessionID": "ses",
            "part": {"type": "tool", "tool": "bash", "state": {"status": "completed"}},
        }
    ),
    json_line(
        {
            "type": "step_finish",
            "timestamp": 4,
            "sessionID": "ses",
            "part": {
                "type": "step-finish",
                "reason": "tool-calls",
                "cost": 0.0123,
                "tokens": {
                    "input": 1200,
                    "output": 80,
                    "reasoning": 20,
                    "cache": {"read": 300, "write": 50},
                },
            },
        }
    ),
    json_line(
        {
            "type": "step_finish",
            "timestamp": 5,
            "sessionID": "ses",
            "part": {
                "type": "step-finish",
                "reason": "stop",
                "cost": 0.0077,
                "tokens": {"input": 100, "output": 60, "reasoning": 0, "cache": {"read": 1500}},
            },
        }
    ),
]
