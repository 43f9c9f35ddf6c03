"""GeminiParser fed the output Gemini CLI 0.61 really printed (`-o stream-json`, a 3-turn task
under "auto", captured against the scripted server of tests/helpers/model_servers/gemini.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cub.agents.gemini import CLI_CALL_CHARS, ROUTING_CALL_CHARS, GeminiHarness, GeminiParser
from cub.agents.stream import estimate_tokens
from cub.config.schema import ModelPrice
from cub.records.schemas import Usage

ROUTER, WORKER = "gemini-3.5-flash-lite", "gemini-3.1-pro-preview-customtools"
PROMPT = "x" * 6_000  # about the size of cub's prompt for a small task

INIT: dict[str, Any] = {"type": "init", "timestamp": "t", "session_id": "s1", "model": "auto"}
USER: dict[str, Any] = {
    "type": "message",
    "timestamp": "t",
    "role": "user",
    "content": "Do the task.",
}
WRITE: dict[str, Any] = {
    "type": "tool_use",
    "timestamp": "t",
    "tool_name": "write_file",
    "tool_id": "write_file__1",
    "parameters": {"file_path": "notes.txt", "content": "hello"},
}
WRITTEN: dict[str, Any] = {
    "type": "tool_result",
    "timestamp": "t",
    "tool_id": "write_file__1",
    "status": "success",
}
COMMIT: dict[str, Any] = {
    "type": "tool_use",
    "timestamp": "t",
    "tool_name": "run_shell_command",
    "tool_id": "run_shell_command__2",
    "parameters": {"command": "git add -A && git commit -qm 'add notes'"},
}
COMMITTED: dict[str, Any] = {
    "type": "tool_result",
    "timestamp": "t",
    "tool_id": "run_shell_command__2",
    "status": "success",
    "output": "",
}
ECHO: dict[str, Any] = {
    "type": "tool_use",
    "timestamp": "t",
    "tool_name": "run_shell_command",
    "tool_id": "run_shell_command__3",
    "parameters": {"command": "echo hi"},
}
ECHOED: dict[str, Any] = {
    "type": "tool_result",
    "timestamp": "t",
    "tool_id": "run_shell_command__3",
    "status": "success",
    "output": "hi",
}
FINAL: dict[str, Any] = {
    "type": "message",
    "timestamp": "t",
    "role": "assistant",
    "content": "All done.",
    "delta": True,
}
RESULT: dict[str, Any] = {
    "type": "result",
    "timestamp": "t",
    "status": "success",
    "stats": {
        "total_tokens": 19644,
        "input_tokens": 19310,
        "output_tokens": 334,
        "cached": 7400,
        "input": 11910,
        "duration_ms": 435,
        "tool_calls": 3,
        "models": {
            ROUTER: {
                "total_tokens": 634,
                "input_tokens": 610,
                "output_tokens": 24,
                "cached": 0,
                "input": 610,
            },
            WORKER: {
                "total_tokens": 19010,
                "input_tokens": 18700,
                "output_tokens": 310,
                "cached": 7400,
                "input": 11300,
            },
        },
    },
}
STREAM: list[dict[str, Any]] = [
    INIT,
    USER,
    WRITE,
    WRITTEN,
    COMMIT,
    COMMITTED,
    ECHO,
    ECHOED,
    FINAL,
    RESULT,
]
PRICES = {
    ROUTER: ModelPrice(input_per_mtok=0.1, output_per_mtok=0.4, cache_read_per_mtok=0.025),
    WORKER: ModelPrice(input_per_mtok=2.0, output_per_mtok=12.0, cache_read_per_mtok=0.2),
}


def line(event: dict[str, Any]) -> str:
    return json.dumps(event) + "\n"


def feed(parser: GeminiParser, events: list[dict[str, Any]]) -> list[Usage]:
    """The parser's usage after each event."""
    seen = []
    for event in events:
        parser.feed(line(event))
        seen.append(parser.state.usage)
    return seen


def test_only_the_result_carries_usage_and_it_replaces_the_estimate() -> None:
    parser = GeminiParser(prompt_chars=len(PROMPT))
    seen = feed(parser, STREAM)
    assert all(usage.estimated for usage in seen[:-1])
    usage = parser.state.usage
    # Both models' tokens: uncached input, cached input, output (= total - prompt).
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (11910, 7400, 334)
    assert usage.total_tokens == 19644
    assert usage.estimated is False
    assert parser.state.result_seen is True
    # The model that did the work, not "auto".
    assert parser.state.model == WORKER


def test_thinking_tokens_count_as_output_per_model() -> None:
    stats = {
        "models": {
            WORKER: {"total_tokens": 1300, "input_tokens": 1000, "output_tokens": 200, "cached": 0}
        }
    }
    parser = GeminiParser()
    parser.feed(line({"type": "result", "status": "success", "stats": stats}))
    assert (parser.state.usage.input_tokens, parser.state.usage.output_tokens) == (1000, 300)


def test_the_estimate_counts_the_cli_s_own_prompt_in_every_call() -> None:
    """Before: ≈ the prompt alone (1,500 tokens here). Gemini CLI sends ≈48,000 characters of
    its own (system instruction, tool declarations) with every model call."""
    parser = GeminiParser(prompt_chars=len(PROMPT))
    after_init = feed(parser, [INIT])[-1]
    # One routing check and the first chat call, under "auto".
    first = CLI_CALL_CHARS + ROUTING_CALL_CHARS + 2 * len(PROMPT)
    assert after_init.input_tokens == estimate_tokens(first)
    assert after_init.input_tokens > 10 * estimate_tokens(len(PROMPT))
    assert after_init.estimated is True
    assert after_init.cost_usd is None  # "auto": no model to price yet


def test_the_estimate_grows_with_each_model_call() -> None:
    parser = GeminiParser(prompt_chars=len(PROMPT))
    seen = feed(parser, STREAM[:-1])
    inputs = [usage.input_tokens for usage in seen]
    # A call starts when a turn's tool results come in: after WRITTEN, COMMITTED and ECHOED.
    per_call = estimate_tokens(CLI_CALL_CHARS)
    for before, after in [(2, 3), (4, 5), (6, 7)]:
        assert inputs[after] - inputs[before] >= per_call
    # A tool call or the final text adds output, not a call.
    assert inputs[2] == inputs[1]
    assert seen[2].output_tokens > seen[1].output_tokens
    assert inputs[8] == inputs[7]
    # Four chat calls and the routing check, each with the CLI's own prompt and cub's.
    calls = 4 * (CLI_CALL_CHARS + len(PROMPT)) + ROUTING_CALL_CHARS + len(PROMPT)
    assert inputs[-1] >= estimate_tokens(calls)


def test_tool_results_of_one_turn_start_one_call() -> None:
    parser = GeminiParser(prompt_chars=100, model="gemini-2.5-pro")
    second = {**WRITE, "tool_id": "w2", "parameters": {"file_path": "b", "content": "c"}}
    done_second = {**WRITTEN, "tool_id": "w2"}
    seen = feed(parser, [{**INIT, "model": "gemini-2.5-pro"}, WRITE, second, WRITTEN, done_second])
    # A named model: no routing check.
    assert seen[0].input_tokens == estimate_tokens(CLI_CALL_CHARS + 100)
    assert seen[3].input_tokens - seen[2].input_tokens >= estimate_tokens(CLI_CALL_CHARS)
    assert seen[4].input_tokens - seen[3].input_tokens < 100


def test_cost_is_priced_per_model_the_stats_name() -> None:
    """Before: priced under "auto" (no price: unknown; a price for "auto": wrong)."""
    harness = GeminiHarness(prices={**PRICES, "auto": PRICES[WORKER]})
    harness.invocation(system="s", task="t", prompt_file=Path("p"), model=None)
    parser = harness.parser()
    feed(parser, STREAM)
    router = (610 * 0.1 + 24 * 0.4) / 1e6
    worker = (11300 * 2.0 + 7400 * 0.2 + 310 * 12.0) / 1e6
    assert parser.state.usage.cost_usd == pytest.approx(router + worker)


def test_cost_is_unknown_when_a_model_that_used_tokens_has_no_price() -> None:
    harness = GeminiHarness(prices={WORKER: PRICES[WORKER], "auto": PRICES[WORKER]})
    harness.invocation(system="s", task="t", prompt_file=Path("p"), model=None)
    parser = harness.parser()
    feed(parser, STREAM)
    assert parser.state.usage.cost_usd is None
    assert parser.state.usage.total_tokens == 19644


def test_a_named_model_prices_the_estimate_too() -> None:
    harness = GeminiHarness(prices={"gemini-2.5-pro": PRICES[WORKER]})
    harness.invocation(system="s", task="t", prompt_file=Path("p"), model="gemini-2.5-pro")
    parser = harness.parser()
    feed(parser, [{**INIT, "model": "gemini-2.5-pro"}, WRITE, WRITTEN])
    usage = parser.state.usage
    assert usage.estimated is True
    expected = (usage.input_tokens * 2.0 + usage.output_tokens * 12.0) / 1e6
    assert usage.cost_usd == pytest.approx(expected)


def test_a_refused_request_reports_exact_zeros_and_the_api_message() -> None:
    message = (
        '[API Error: {"error":{"code":401,"message":"API key not valid. Please pass a valid API '
        'key.","status":"UNAUTHENTICATED"}}]'
    )
    zero = {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0, "cached": 0, "input": 0}
    result = {
        "type": "result",
        "status": "error",
        "error": {"type": "unknown", "message": message},
        "stats": {**zero, "models": {ROUTER: zero, WORKER: zero}},
    }
    harness = GeminiHarness(prices={})
    harness.invocation(system="s", task="t", prompt_file=Path("p"), model=None)
    parser = harness.parser()
    feed(parser, [INIT, USER, result])
    state = parser.state
    assert state.is_error is True
    assert state.error_message == message
    assert state.usage == Usage()  # exact: nothing was used
    assert state.model is None


def test_without_a_result_the_estimate_stays() -> None:
    parser = GeminiParser(prompt_chars=len(PROMPT))
    feed(parser, [INIT, USER, WRITE, WRITTEN, COMMIT])
    assert parser.state.usage.estimated is True
    assert parser.state.result_seen is False
    assert parser.state.usage.input_tokens > 2 * estimate_tokens(CLI_CALL_CHARS)


def test_plain_text_output_is_estimated_with_one_call() -> None:
    parser = GeminiParser(prompt_chars=len(PROMPT))
    for text in ["I updated the parser.", "Done."]:
        parser.feed(text)  # as the supervisor passes lines: without their newline
    usage = parser.state.usage
    assert usage.input_tokens == estimate_tokens(CLI_CALL_CHARS + len(PROMPT))
    assert usage.output_tokens == estimate_tokens(len("I updated the parser.\nDone.\n"))
    assert usage.estimated is True
