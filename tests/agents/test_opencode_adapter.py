"""The opencode adapter against lines the real OpenCode 1.18.33 printed (captured against the
scripted Chat Completions server in tests/helpers/model_servers/openai_chat.py)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from cub.agents.harness import Invocation, combined
from cub.agents.opencode import OpenCodeHarness, OpenCodeParser

SESSION = "ses_dc4c59585ffeLBdzYB9AXsM8vy"


def _line(kind: str, part: dict[str, object]) -> str:
    return json.dumps(
        {"type": kind, "timestamp": 1796290016796, "sessionID": SESSION, "part": part}
    )


def _step_finish(reason: str, inp: int, out: int, read: int, reasoning: int = 0) -> str:
    tokens = {
        "total": inp + out + read + reasoning,
        "input": inp,
        "output": out,
        "reasoning": reasoning,
        "cache": {"write": 0, "read": read},
    }
    part = {"id": "prt_1", "reason": reason, "type": "step-finish", "tokens": tokens, "cost": 0}
    return _line("step_finish", part)


STEP_START = _line("step_start", {"id": "prt_0", "type": "step-start", "snapshot": "4b825dc"})
TOOL_USE = _line(
    "tool_use",
    {
        "type": "tool",
        "tool": "bash",
        "callID": "call_1_bash",
        "state": {
            "status": "completed",
            "input": {"command": "git add -A && git commit -qm 'add notes'", "description": "x"},
            "output": "(no output)",
            "metadata": {"output": "(no output)", "exit": 0, "truncated": False},
        },
    },
)
FINAL_TEXT = _line("text", {"type": "text", "text": "All done <promise>COMPLETE</promise>"})
# What 1.18.33 printed for a 401 from the provider (response headers trimmed).
AUTH_ERROR = json.dumps(
    {
        "type": "error",
        "timestamp": 1796290551190,
        "sessionID": SESSION,
        "error": {
            "name": "APIError",
            "data": {
                "message": "Incorrect API key provided: dummy.",
                "statusCode": 401,
                "isRetryable": False,
                "responseBody": '{"error": {"message": "Incorrect API key provided: dummy."}}',
                "metadata": {"url": "http://127.0.0.1:40337/v1/chat/completions"},
            },
        },
    }
)
# ... and for a stream that broke off with invalid JSON.
BROKEN_STREAM = json.dumps(
    {
        "type": "error",
        "sessionID": SESSION,
        "error": {
            "name": "UnknownError",
            "data": {"message": 'JSON parsing failed: Text: {"id".\nError message: JSON Parse'},
        },
    }
)


def _invoke(
    harness: OpenCodeHarness, system: str, task: str, model: str | None = None
) -> Invocation:
    return harness.invocation(
        system=system, task=task, prompt_file=Path("/tmp/prompt.md"), model=model
    )


def test_the_prompt_goes_on_stdin_verbatim_not_as_a_mangled_argument() -> None:
    # `opencode run MESSAGE` wraps a message holding a space in quotes and escapes each `"`.
    system = '- rule one: print "<promise>COMPLETE</promise>"'
    task = 'Task t1\n\nwrite {"a": 1}'
    inv = _invoke(OpenCodeHarness("/bin/opencode", extra_args=("--auto",)), system, task, "p/m")
    assert inv.argv == ("/bin/opencode", "run", "--format", "json", "-m", "p/m", "--auto")
    assert inv.stdin == combined(system, task).encode()


def test_without_a_model_no_model_flag() -> None:
    inv = _invoke(OpenCodeHarness("/bin/opencode"), "sys", "task")
    assert inv.argv == ("/bin/opencode", "run", "--format", "json")
    assert inv.stdin is not None and b"task" in inv.stdin


def test_opencode_is_stopped_with_sigterm() -> None:
    assert OpenCodeHarness("/bin/opencode").stop_signal == signal.SIGTERM


def test_a_real_three_step_stream_sums_usage_and_sees_the_promise() -> None:
    parser = OpenCodeParser()
    lines = [
        STEP_START,
        TOOL_USE,
        _step_finish("tool-calls", 1000, 50, 200),
        STEP_START,
        TOOL_USE,
        _step_finish("tool-calls", 1100, 60, 300, reasoning=5),
        STEP_START,
        FINAL_TEXT,
        _step_finish("stop", 1300, 70, 400),
    ]
    reported = [parser.feed(line) for line in lines]
    # Usage is reported per step, so a token budget can act mid-task.
    assert reported == [False, False, True, False, False, True, False, False, True]
    usage = parser.state.usage
    assert (usage.input_tokens, usage.output_tokens) == (3400, 185)
    assert (usage.cache_read_tokens, usage.cache_creation_tokens) == (900, 0)
    assert usage.cost_usd == 0.0
    assert parser.state.promise_complete
    assert not parser.state.is_error


def test_a_provider_401_fails_with_the_apis_message() -> None:
    parser = OpenCodeParser()
    parser.feed(STEP_START)
    parser.feed(AUTH_ERROR)
    assert parser.state.is_error
    assert parser.state.error_message == "APIError: Incorrect API key provided: dummy."


def test_a_broken_stream_fails_with_opencodes_message() -> None:
    parser = OpenCodeParser()
    parser.feed(BROKEN_STREAM)
    assert parser.state.is_error
    assert (parser.state.error_message or "").startswith("UnknownError: JSON parsing failed")
