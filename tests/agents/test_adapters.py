"""The agent adapters: command lines, and parsers fed the agents' real output formats.

The sample lines are the ones captured from the real CLIs (shared/notes/harness-formats.md),
copied verbatim — including the "…" the capture trimmed fields to; where that makes a line
invalid JSON (``"tools":[…]``) the parser must simply ignore it, as it would any other garbage.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cub.agents.adapters import adapter_for
from cub.agents.claude import ROOT_HINT, ClaudeHarness, ClaudeParser
from cub.agents.codex import CodexHarness, CodexParser
from cub.agents.command import CommandHarness
from cub.agents.gemini import CLI_CALL_CHARS, GeminiHarness, GeminiParser
from cub.agents.harness import combined
from cub.agents.opencode import OpenCodeHarness, OpenCodeParser
from cub.agents.registry import HarnessChoice
from cub.agents.stream import decode_event, estimate_tokens
from cub.config.schema import BudgetConfig, Config, HarnessConfig, ModelPrice
from cub.records.schemas import Usage
from tests.helpers.agent_formats import (
    CLAUDE_NOT_LOGGED_IN,
    CODEX_SAMPLE,
    GEMINI_STREAM,
    OPENCODE_STREAM,
    json_line,
)

# ------------------------------------------------------------------ real captured samples
# CLAUDE_NOT_LOGGED_IN, CODEX_SAMPLE, GEMINI_STREAM, OPENCODE_STREAM: tests/helpers/agent_formats.py

_line = json_line


def _assistant(msg_id: str, usage: dict[str, int], *blocks: dict[str, object]) -> str:
    return _line(
        {
            "type": "assistant",
            "message": {
                "id": msg_id,
                "model": "claude-sonnet-4-5",
                "role": "assistant",
                "type": "message",
                "usage": usage,
                "content": list(blocks) or [{"type": "text", "text": "working"}],
            },
            "parent_tool_use_id": None,
            "session_id": "s",
        }
    )


def _claude_usage(inp: int, out: int, read: int = 0, write: int = 0) -> dict[str, int]:
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
    }


def _claude_result(
    usage: dict[str, int] | None, cost: float | None, *, is_error: bool = False, **extra: object
) -> str:
    event: dict[str, object] = {
        "type": "result",
        "subtype": "success",
        "is_error": is_error,
        "result": "done",
        "session_id": "s",
        **extra,
    }
    if usage is not None:
        event["usage"] = usage
    if cost is not None:
        event["total_cost_usd"] = cost
    return _line(event)


def feed_all(parser: object, lines: list[str]) -> list[bool]:
    return [parser.feed(line) for line in lines]  # type: ignore[attr-defined]


def usage_tuple(usage: Usage) -> tuple[int, int, int, int, float | None, bool]:
    return (
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_creation_tokens,
        usage.cost_usd,
        usage.estimated,
    )


PRICE = ModelPrice(
    input_per_mtok=3.0, output_per_mtok=15.0, cache_read_per_mtok=0.3, cache_write_per_mtok=3.75
)

# ============================================================================== claude


def test_claude_not_logged_in_capture() -> None:
    parser = ClaudeParser()
    changed = feed_all(parser, CLAUDE_NOT_LOGGED_IN)
    state = parser.state
    assert usage_tuple(state.usage) == (0, 0, 0, 0, 0.0, False)
    assert changed == [False, False, True]  # only the result's cost (0) is news
    assert state.is_error is True
    assert state.result_seen is True
    assert state.error_message == "Not logged in · Please run /login (authentication_failed)"
    assert state.stuck_reason is None


def test_claude_assistant_error_is_recorded_before_the_result() -> None:
    parser = ClaudeParser()
    feed_all(parser, CLAUDE_NOT_LOGGED_IN[:2])
    assert parser.state.error_message == "authentication_failed: Not logged in · Please run /login"
    assert parser.state.is_error is False  # decided by the result (or the exit code)
    assert parser.state.result_seen is False


def test_claude_valid_init_line_is_read() -> None:
    init = CLAUDE_NOT_LOGGED_IN[0].replace("[…]", "[]")
    assert decode_event(init) is not None
    parser = ClaudeParser()
    assert parser.feed(init) is False
    assert usage_tuple(parser.state.usage) == (0, 0, 0, 0, None, False)


def test_claude_turns_sum_by_message_id_and_result_replaces_them() -> None:
    parser = ClaudeParser()
    lines = [
        _assistant("msg_1", _claude_usage(10, 5, 100, 20)),
        # the same API message again (its tool_use block): not counted twice
        _assistant(
            "msg_1",
            _claude_usage(10, 7, 100, 20),
            {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}},
        ),
        _line(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a b"}],
                },
            }
        ),
        _assistant("msg_2", _claude_usage(3, 40, 200, 0)),
    ]
    assert feed_all(parser, lines) == [True, True, False, True]
    assert usage_tuple(parser.state.usage) == (13, 47, 300, 20, None, False)
    assert parser.state.result_seen is False

    assert parser.feed(_claude_result(_claude_usage(20, 50, 310, 25), 0.0421)) is True
    assert usage_tuple(parser.state.usage) == (20, 50, 310, 25, 0.0421, False)
    assert parser.state.result_seen is True
    assert parser.state.is_error is False
    # nothing after the final totals changes them
    assert parser.feed(_assistant("msg_3", _claude_usage(1000, 1000))) is False
    assert parser.state.usage.input_tokens == 20


def test_claude_result_without_usage_keeps_running_sum() -> None:
    parser = ClaudeParser()
    parser.feed(_assistant("m", _claude_usage(4, 6)))
    assert parser.feed(_claude_result(None, 0.5)) is True
    assert usage_tuple(parser.state.usage) == (4, 6, 0, 0, 0.5, False)


@pytest.mark.parametrize(
    ("subtype", "extra", "message"),
    [
        ("error_max_turns", {}, "claude stopped: it reached its maximum number of turns"),
        (
            "error_during_execution",
            {"errors": ["API Error: 529 overloaded"]},
            "API Error: 529 overloaded",
        ),
    ],
)
def test_claude_error_subtypes_fail(subtype: str, extra: dict[str, object], message: str) -> None:
    parser = ClaudeParser()
    line = _line(
        {"type": "result", "subtype": subtype, "is_error": False, "total_cost_usd": 1.25, **extra}
    )
    assert parser.feed(line) is True
    assert parser.state.is_error is True
    assert parser.state.error_message == message
    assert parser.state.result_seen is True
    assert parser.state.usage.cost_usd == 1.25


def test_claude_is_error_with_success_subtype_fails_with_result_text() -> None:
    parser = ClaudeParser()
    parser.feed(_claude_result(_claude_usage(1, 1), 0.01, is_error=True, result="boom: no key"))
    assert parser.state.is_error is True
    assert parser.state.error_message == "boom: no key"


def test_claude_root_refusal_gives_the_is_sandbox_hint() -> None:
    parser = ClaudeParser()
    parser.feed(
        "--dangerously-skip-permissions cannot be used with root/sudo privileges "
        "for security reasons"
    )
    assert parser.state.is_error is True
    assert parser.state.error_message == ROOT_HINT
    assert "harness.env.IS_SANDBOX=1" in ROOT_HINT


def test_claude_stuck_in_text_block_only() -> None:
    parser = ClaudeParser()
    # A tool result that merely contains the tag (the agent read a file) is not a signal...
    parser.feed(
        _line(
            {
                "type": "user",
                "message": {
                    "content": [{"type": "tool_result", "content": "<stuck>from a file</stuck>"}]
                },
            }
        )
    )
    assert parser.state.stuck_reason is None
    # ...the agent saying it is.
    parser.feed(
        _assistant(
            "m",
            _claude_usage(1, 1),
            {"type": "text", "text": 'I give up.\n<stuck>the "spec" file is missing</stuck>'},
        )
    )
    assert parser.state.stuck_reason == 'the "spec" file is missing'


def test_claude_promise_in_result_text() -> None:
    parser = ClaudeParser()
    parser.feed(_claude_result(None, None, result="all done <promise>COMPLETE</promise>"))
    assert parser.state.promise_complete is True


def test_claude_price_table_gives_a_running_cost_until_the_result() -> None:
    parser = ClaudeParser(model="claude-sonnet-4-5", prices={"claude-sonnet-4-5": PRICE})
    parser.feed(_assistant("m", _claude_usage(1000, 2000, 10000, 4000)))
    # 1000*3 + 2000*15 + 10000*0.3 + 4000*3.75 = 51000 per million
    assert parser.state.usage.cost_usd == pytest.approx(0.051)
    parser.feed(_claude_result(_claude_usage(1000, 2000, 10000, 4000), 0.0499))
    assert parser.state.usage.cost_usd == 0.0499


def test_claude_model_from_init_event_prices_turns() -> None:
    parser = ClaudeParser(prices={"claude-haiku-4-5": PRICE})
    parser.feed(_line({"type": "system", "subtype": "init", "model": "claude-haiku-4-5"}))
    parser.feed(_assistant("m", _claude_usage(1_000_000, 0)))
    assert parser.state.usage.cost_usd == pytest.approx(3.0)


def test_claude_no_price_no_cost_before_result() -> None:
    parser = ClaudeParser(model="claude-opus-4-1", prices={"other": PRICE})
    parser.feed(_assistant("m", _claude_usage(100, 100)))
    assert parser.state.usage.cost_usd is None


# =============================================================================== codex


def test_codex_capture_without_price_table() -> None:
    parser = CodexParser()
    changed = feed_all(parser, CODEX_SAMPLE)
    state = parser.state
    assert changed == [False, False, True, True, True, False]
    # input_tokens includes the cached part: recorded once, as cache reads
    assert usage_tuple(state.usage) == (400, 200, 100, 0, None, False)
    assert state.usage.total_tokens == 700
    assert state.is_error is False
    assert state.result_seen is True
    assert state.error_message == "Reconnecting... 2/5 (stream disconnected before completion: …)"


def test_codex_capture_with_price_table() -> None:
    price = ModelPrice(input_per_mtok=1.25, output_per_mtok=10.0, cache_read_per_mtok=0.125)
    harness = CodexHarness(prices={"gpt-5-codex": price})
    harness.invocation(system="s", task="t", prompt_file=Path("p"), model="gpt-5-codex")
    parser = harness.parser()
    feed_all(parser, CODEX_SAMPLE)
    # 400*1.25 + 200*10 + 100*0.125 = 2512.5 per million
    assert parser.state.usage.cost_usd == pytest.approx(0.0025125)
    # another model, no entry: no cost is invented
    harness.invocation(system="s", task="t", prompt_file=Path("p"), model="o4-mini")
    other = harness.parser()
    feed_all(other, CODEX_SAMPLE)
    assert other.state.usage.cost_usd is None


def test_codex_turns_are_summed() -> None:
    parser = CodexParser()
    feed_all(parser, [CODEX_SAMPLE[4], CODEX_SAMPLE[4]])
    assert usage_tuple(parser.state.usage) == (800, 400, 200, 0, None, False)


def test_codex_turn_failed_is_a_failure_and_errors_keep_the_last() -> None:
    parser = CodexParser()
    feed_all(
        parser,
        [
            _line({"type": "error", "message": "Reconnecting... 1/5"}),
            _line({"type": "error", "message": "Reconnecting... 5/5"}),
        ],
    )
    assert parser.state.error_message == "Reconnecting... 5/5"
    assert parser.state.is_error is False
    parser.feed(_line({"type": "turn.failed", "error": {"message": "stream disconnected"}}))
    assert parser.state.is_error is True
    assert parser.state.error_message == "stream disconnected"
    assert parser.state.result_seen is True


def test_codex_stuck_in_agent_message() -> None:
    parser = CodexParser()
    parser.feed(
        _line(
            {
                "type": "item.completed",
                "item": {"type": "agent_message", "text": "<stuck>no network</stuck>"},
            }
        )
    )
    assert parser.state.stuck_reason == "no network"


# ============================================================================== gemini


def test_gemini_stream_json_stats_are_exact() -> None:
    parser = GeminiParser(prompt_chars=400)
    changed = feed_all(parser, GEMINI_STREAM)
    state = parser.state
    # thinking tokens (total - prompt - output = 50) count as output
    assert usage_tuple(state.usage) == (500, 350, 1000, 0, None, False)
    assert state.usage.total_tokens == 1850
    assert changed[0] is True  # the first line accounts the prompt estimate
    assert changed[-1] is True
    assert state.result_seen is True
    assert state.is_error is False
    assert state.error_message is None  # a warning is not an error


def test_gemini_estimates_until_the_result() -> None:
    parser = GeminiParser(prompt_chars=400)
    feed_all(parser, GEMINI_STREAM[:3])
    # The CLI's own instructions and tool declarations go with every call: in the estimate.
    assert usage_tuple(parser.state.usage) == (
        estimate_tokens(CLI_CALL_CHARS + 400),
        1,
        0,
        0,
        None,
        True,
    )


def test_gemini_plain_text_is_estimated_at_four_chars_a_token() -> None:
    prompt = "x" * 1001
    out = ["Hello, I looked at the repository.", "", "Done: 3 files changed."]
    parser = GeminiParser(prompt_chars=len(prompt))
    assert feed_all(parser, out) == [True, False, True]
    output_chars = sum(len(line) + 1 for line in out)  # as printed, newlines included
    assert output_chars == 59
    assert usage_tuple(parser.state.usage) == (12251, 15, 0, 0, None, True)
    assert parser.state.usage.input_tokens == estimate_tokens(CLI_CALL_CHARS + len(prompt))
    assert parser.state.result_seen is False


def test_gemini_error_result_fails() -> None:
    parser = GeminiParser()
    parser.feed(
        _line(
            {
                "type": "result",
                "status": "error",
                "error": {"type": "FatalAuthenticationError", "message": "no credentials"},
            }
        )
    )
    assert parser.state.is_error is True
    assert parser.state.error_message == "no credentials"
    assert parser.state.result_seen is True
    assert parser.state.usage.estimated is True  # no stats: still an estimate


def test_gemini_signal_split_across_deltas() -> None:
    parser = GeminiParser()
    for chunk in ["I am <stu", "ck>the task is ambig", "uous</stuck> sorry"]:
        parser.feed(
            _line({"type": "message", "role": "assistant", "content": chunk, "delta": True})
        )
    assert parser.state.stuck_reason == "the task is ambiguous"


def test_gemini_price_table() -> None:
    price = ModelPrice(input_per_mtok=1.0, output_per_mtok=10.0, cache_read_per_mtok=0.1)
    harness = GeminiHarness(prices={"gemini-2.5-pro": price})
    harness.invocation(system="s", task="t", prompt_file=Path("p"), model=None)
    parser = harness.parser()
    feed_all(parser, GEMINI_STREAM)  # the model comes from the init event
    # 500*1 + 350*10 + 1000*0.1 = 4100 per million
    assert parser.state.usage.cost_usd == pytest.approx(0.0041)


# ============================================================================ opencode


def test_opencode_sums_step_finish_parts() -> None:
    parser = OpenCodeParser()
    assert feed_all(parser, OPENCODE_STREAM) == [False, False, False, True, True]
    assert usage_tuple(parser.state.usage) == (1300, 160, 1800, 50, pytest.approx(0.02), False)
    assert parser.state.is_error is False


def test_opencode_error_event_fails() -> None:
    parser = OpenCodeParser()
    parser.feed(
        _line(
            {
                "type": "error",
                "sessionID": "ses",
                "error": {"name": "ProviderAuthError", "data": {"message": "API key missing"}},
            }
        )
    )
    assert parser.state.is_error is True
    assert parser.state.error_message == "ProviderAuthError: API key missing"


def test_opencode_cost_from_price_table_only_when_unreported() -> None:
    price = ModelPrice(input_per_mtok=1.0, output_per_mtok=2.0)
    step = _line({"type": "step_finish", "part": {"tokens": {"input": 1000, "output": 500}}})
    parser = OpenCodeParser(price=price)
    parser.feed(step)
    assert parser.state.usage.cost_usd == pytest.approx(0.002)
    reported = OpenCodeParser(price=price)
    feed_all(reported, OPENCODE_STREAM)
    assert reported.state.usage.cost_usd == pytest.approx(0.02)


def test_opencode_stuck_in_text_part() -> None:
    parser = OpenCodeParser()
    parser.feed(_line({"type": "text", "part": {"text": "<stuck>tests need a database</stuck>"}}))
    assert parser.state.stuck_reason == "tests need a database"


# ========================================================================= invocations

SYSTEM, TASK = "You are an agent.", "## Task t1: fix it\n"
PROMPT = combined(SYSTEM, TASK)


def _invoke(harness: object, model: str | None) -> tuple[tuple[str, ...], bytes | None]:
    inv = harness.invocation(  # type: ignore[attr-defined]
        system=SYSTEM, task=TASK, prompt_file=Path("/tmp/prompt.md"), model=model
    )
    return inv.argv, inv.stdin


def test_claude_argv() -> None:
    base = (
        "/bin/claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--append-system-prompt",
        SYSTEM,
        "--dangerously-skip-permissions",
    )
    assert _invoke(ClaudeHarness("/bin/claude"), None) == (base, TASK.encode())
    harness = ClaudeHarness("/bin/claude", extra_args=("--max-turns", "5"))
    assert _invoke(harness, "opus") == (
        (*base, "--model", "opus", "--max-turns", "5"),
        TASK.encode(),
    )


def test_codex_argv() -> None:
    base = (
        "/bin/codex",
        "exec",
        "--json",
        "--dangerously-bypass-approvals-and-sandbox",
        "--skip-git-repo-check",
    )
    assert _invoke(CodexHarness("/bin/codex"), None) == ((*base, "-"), PROMPT.encode())
    harness = CodexHarness("/bin/codex", extra_args=("-c", "x=1"))
    assert _invoke(harness, "gpt-5") == ((*base, "-m", "gpt-5", "-c", "x=1", "-"), PROMPT.encode())


def test_gemini_argv() -> None:
    base = ("/bin/gemini", "-p", PROMPT, "-y", "-o", "stream-json")
    assert _invoke(GeminiHarness("/bin/gemini"), None) == (base, None)
    harness = GeminiHarness("/bin/gemini", extra_args=("--sandbox",))
    assert _invoke(harness, "gemini-2.5-pro") == (
        (*base, "-m", "gemini-2.5-pro", "--sandbox"),
        None,
    )


def test_opencode_argv() -> None:
    base = ("/bin/opencode", "run", "--format", "json")
    stdin = PROMPT.encode()
    assert _invoke(OpenCodeHarness("/bin/opencode"), None) == (base, stdin)
    harness = OpenCodeHarness("/bin/opencode", extra_args=("--auto",))
    assert _invoke(harness, "anthropic/claude-sonnet-4-5") == (
        (*base, "-m", "anthropic/claude-sonnet-4-5", "--auto"),
        stdin,
    )


def test_a_prompt_starting_with_a_dash_is_not_taken_for_an_option() -> None:
    argv, _ = _invoke_with(GeminiHarness("gemini"), system="- rule one")
    assert argv[2] == "\n" + combined("- rule one", TASK)


def _invoke_with(harness: object, system: str) -> tuple[tuple[str, ...], bytes | None]:
    inv = harness.invocation(  # type: ignore[attr-defined]
        system=system, task=TASK, prompt_file=Path("/tmp/prompt.md"), model=None
    )
    return inv.argv, inv.stdin


def test_adapter_for_takes_extra_args_and_prices_from_config() -> None:
    price = ModelPrice(input_per_mtok=1.0)
    config = Config(
        harness=HarnessConfig(extra_args={"codex": ["--oss"], "command": ["--fast"]}),
        budget=BudgetConfig(prices={"m": price}),
    )
    codex = adapter_for(HarnessChoice(name="codex", program="/x/codex"), config)
    assert isinstance(codex, CodexHarness)
    assert codex.extra_args == ("--oss",)
    assert codex.prices == {"m": price}
    claude = adapter_for(HarnessChoice(name="claude", program="/x/claude"), config)
    assert isinstance(claude, ClaudeHarness)
    assert claude.extra_args == ()
    command = adapter_for(
        HarnessChoice(name="command", program="/x/agent", command=("/x/agent", "-v")), config
    )
    assert isinstance(command, CommandHarness)
    assert command.argv == ("/x/agent", "-v", "--fast")
    for name, cls in [("gemini", GeminiHarness), ("opencode", OpenCodeHarness)]:
        assert isinstance(adapter_for(HarnessChoice(name=name, program=f"/x/{name}")), cls)
    # Validation refuses unknown names first (unknown_harness): here it is a programming error.
    with pytest.raises(AssertionError, match="aider"):
        adapter_for(HarnessChoice(name="aider", program="/x/aider"))


# ========================================================================= robustness

GARBAGE = [
    "",
    " ",
    "{",
    '{"type":',
    "[1, 2]",
    "null",
    "42",
    '"a string"',
    "not json at all <stuck>",
    '{"type": null}',
    '{"type": ["assistant"]}',
    '{"type":"assistant"}',
    '{"type":"assistant","message":[]}',
    '{"type":"assistant","message":{"usage":[],"content":"text"}}',
    '{"type":"assistant","message":{"usage":{"input_tokens":"12","output_tokens":null},'
    '"content":[1,null,{"type":"text","text":7}]},"error":5}',
    '{"type":"result","usage":"x","total_cost_usd":"1","is_error":"yes","subtype":3}',
    '{"type":"result","usage":{"input_tokens":-5,"output_tokens":1e400},"total_cost_usd":-1}',
    '{"type":"turn.completed","usage":null}',
    '{"type":"turn.completed","usage":{"input_tokens":true,"cached_input_tokens":99}}',
    '{"type":"turn.failed","error":"x"}',
    '{"type":"item.completed","item":"x"}',
    '{"type":"error","message":{"nested":1}}',
    '{"type":"step_finish","part":{"tokens":{"input":[],"cache":7},"cost":"free"}}',
    '{"type":"step_finish","part":null}',
    '{"type":"text","part":{"text":null}}',
    '{"type":"message","role":"assistant","content":null}',
    '{"type":"result","stats":{"input_tokens":"many"},"status":"error","error":null}',
    '{"type":"error","error":[1]}',
    '{"a": 123456789012345678901234567890}',
    "[" * 100_000,
    '{"x":' * 50_000,
    "\x00\x01\x02\ufffd",
    '{"type":"assistant","message":{"content":[{"type":"text","text":"\\ud800"}]}}',
]

PARSERS = [ClaudeParser, CodexParser, GeminiParser, OpenCodeParser]


@pytest.mark.parametrize("make", PARSERS)
def test_malformed_lines_are_ignored(make: type) -> None:
    parser = make()
    for line in GARBAGE:
        parser.feed(line)
    usage = parser.state.usage
    for value in (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens):
        assert isinstance(value, int)
        assert value >= 0
    assert usage.cost_usd is None or usage.cost_usd >= 0


@pytest.mark.parametrize("make", PARSERS)
def test_a_very_long_line_is_fine(make: type) -> None:
    text = "word " * 400_000  # 2 MB
    long_lines = [
        _assistant("m", _claude_usage(1, 2), {"type": "text", "text": text}),
        _line({"type": "item.completed", "item": {"type": "agent_message", "text": text}}),
        _line({"type": "message", "role": "assistant", "content": text}),
        _line({"type": "text", "part": {"text": text}}),
        text,
        _assistant("m", _claude_usage(1, 2), {"type": "text", "text": text})[: 1 << 20],
    ]
    parser = make()
    for line in long_lines:
        parser.feed(line)
    if make is ClaudeParser:
        assert parser.state.usage.output_tokens == 2


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=200),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                lambda children: (
                    st.lists(children, max_size=4)
                    | st.dictionaries(
                        st.sampled_from(
                            [
                                "type",
                                "message",
                                "usage",
                                "content",
                                "input_tokens",
                                "output_tokens",
                                "result",
                                "is_error",
                                "part",
                                "tokens",
                                "cost",
                                "stats",
                                "item",
                                "error",
                                "text",
                            ]
                        ),
                        children,
                        max_size=5,
                    )
                ),
                max_leaves=12,
            ).map(lambda obj: json.dumps(obj)),
        ),
        max_size=8,
    )
)
def test_no_input_makes_a_parser_raise(lines: list[str]) -> None:
    for make in PARSERS:
        parser = make()
        for line in lines:
            assert parser.feed(line) in (True, False)
