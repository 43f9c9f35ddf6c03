"""Claude Code's stream as the real CLI (2.1.197) printed it against the scripted Anthropic
server (tests/helpers/model_servers/anthropic.py): the final usage after the non-streaming
fallback, and the model it names.

The lines below are trimmed copies of real output (long fields such as the tool list dropped).
"""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from cub.agents.claude import ClaudeHarness, ClaudeParser, model_name
from cub.config.schema import ModelPrice
from cub.records.schemas import Usage


def line(event: dict[str, Any]) -> str:
    return json.dumps(event)


INIT = line(
    {
        "type": "system",
        "subtype": "init",
        "cwd": "/tmp/proj",
        "session_id": "s1",
        "tools": ["Task", "Bash", "Write"],
        "model": "claude-opus-4-8[1m]",
        "permissionMode": "bypassPermissions",
        "apiKeySource": "ANTHROPIC_API_KEY",
        "claude_code_version": "2.1.197",
    }
)


def usage(inp: int, out: int, read: int, write: int) -> dict[str, int]:
    return {
        "input_tokens": inp,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "output_tokens": out,
    }


def assistant(
    msg_id: str,
    turn: dict[str, int],
    block: dict[str, Any],
    *,
    model: str = "claude-opus-4-8",
    parent: str | None = None,
    **extra: Any,
) -> str:
    return line(
        {
            "type": "assistant",
            "message": {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [block],
                "usage": turn,
            },
            "parent_tool_use_id": parent,
            "session_id": "s1",
            **extra,
        }
    )


def result(
    totals: dict[str, int] | None,
    model_usage: dict[str, dict[str, Any]],
    cost: float,
    *,
    is_error: bool = False,
    text: str = "All done.",
) -> str:
    event: dict[str, Any] = {
        "type": "result",
        "subtype": "success",
        "is_error": is_error,
        "num_turns": 2,
        "result": text,
        "session_id": "s1",
        "total_cost_usd": cost,
        "modelUsage": model_usage,
    }
    if totals is not None:
        event["usage"] = totals
    return line(event)


def per_model(inp: int, out: int, read: int, write: int, cost: float) -> dict[str, Any]:
    return {
        "inputTokens": inp,
        "outputTokens": out,
        "cacheReadInputTokens": read,
        "cacheCreationInputTokens": write,
        "webSearchRequests": 0,
        "costUSD": cost,
        "contextWindow": 1000000,
        "maxOutputTokens": 64000,
    }


WRITE = {
    "type": "tool_use",
    "id": "toolu_1",
    "name": "Write",
    "input": {"file_path": "/tmp/proj/notes.txt", "content": "hello"},
}
TOOL_RESULT = line(
    {
        "type": "user",
        "message": {
            "role": "user",
            "content": [{"tool_use_id": "toolu_1", "type": "tool_result", "content": "ok"}],
        },
        "parent_tool_use_id": None,
        "session_id": "s1",
    }
)
COST = 0.01506875

# Every turn's stream broke off; Claude asked again without streaming, so each message carries
# its whole usage, but the result's `usage` totals are 0 while `modelUsage` and the cost are right.
FALLBACK_STREAM = [
    INIT,
    assistant("msg_1", usage(1000, 50, 200, 30), {"type": "text", "text": "Writing notes.txt."}),
    assistant("msg_1", usage(1000, 50, 200, 30), WRITE),
    TOOL_RESULT,
    assistant("msg_2", usage(1300, 70, 500, 5), {"type": "text", "text": "All done."}),
    result(
        usage(0, 0, 0, 0),
        {"claude-opus-4-8[1m]": per_model(2300, 120, 700, 35, COST)},
        COST,
    ),
]

# A streamed answer: mid-stream each message's output count is 1; the result has the totals.
STREAMED = [
    INIT,
    assistant("msg_1", usage(1000, 1, 200, 30), {"type": "text", "text": "Writing notes.txt."}),
    assistant("msg_1", usage(1000, 1, 200, 30), WRITE),
    TOOL_RESULT,
    assistant("msg_2", usage(1300, 1, 500, 5), {"type": "text", "text": "All done."}),
    result(
        usage(2300, 120, 700, 35),
        {"claude-opus-4-8[1m]": per_model(2300, 120, 700, 35, COST)},
        COST,
    ),
]


def tokens(u: Usage) -> tuple[int, int, int, int, float | None]:
    return (
        u.input_tokens,
        u.output_tokens,
        u.cache_read_tokens,
        u.cache_creation_tokens,
        u.cost_usd,
    )


def feed(lines: list[str], parser: ClaudeParser | None = None) -> ClaudeParser:
    parser = parser or ClaudeParser()
    for text in lines:
        parser.feed(text)
    return parser


# ===================================================================== usage (defect 3)


def test_zero_result_totals_after_the_fallback_do_not_replace_the_known_usage() -> None:
    parser = feed(FALLBACK_STREAM[:-1])
    assert tokens(parser.state.usage) == (2300, 120, 700, 35, None)
    assert parser.feed(FALLBACK_STREAM[-1]) is True  # the cost is news
    assert tokens(parser.state.usage) == (2300, 120, 700, 35, COST)
    assert parser.state.result_seen is True
    assert parser.state.is_error is False


def test_model_usage_sums_beat_short_result_totals() -> None:
    # Only the streamed turn reached the result's totals; modelUsage counted both turns, and a
    # helper model (a subagent) too.
    parser = feed(
        [
            INIT,
            result(
                usage(1000, 50, 200, 30),
                {
                    "claude-opus-4-8[1m]": per_model(2300, 120, 700, 35, 0.015),
                    "claude-haiku-4-5": per_model(400, 20, 0, 0, 0.0005),
                },
                0.0155,
            ),
        ]
    )
    assert tokens(parser.state.usage) == (2700, 140, 700, 35, 0.0155)


def test_zero_result_without_model_usage_keeps_the_running_sum() -> None:
    parser = feed([*FALLBACK_STREAM[:-1], result(usage(0, 0, 0, 0), {}, COST)])
    assert tokens(parser.state.usage) == (2300, 120, 700, 35, COST)


def test_streamed_result_totals_replace_the_low_running_sum() -> None:
    parser = feed(STREAMED[:-1])
    assert tokens(parser.state.usage) == (2300, 2, 700, 35, None)  # output 1 per message
    assert parser.feed(STREAMED[-1]) is True
    assert tokens(parser.state.usage) == (2300, 120, 700, 35, COST)


def test_result_totals_win_a_tie_with_model_usage() -> None:
    parser = feed(
        [result(usage(10, 20, 30, 40), {"claude-opus-4-8": per_model(40, 30, 20, 10, 0.1)}, 0.1)]
    )
    assert tokens(parser.state.usage) == (10, 20, 30, 40, 0.1)


def test_nothing_after_the_result_changes_the_totals() -> None:
    parser = feed(FALLBACK_STREAM)
    assert parser.feed(assistant("msg_9", usage(5000, 5000, 0, 0), {"type": "text"})) is False
    assert tokens(parser.state.usage) == (2300, 120, 700, 35, COST)


def test_all_zero_everywhere_stays_zero() -> None:
    parser = feed(
        [
            INIT,
            assistant(
                "e1",
                usage(0, 0, 0, 0),
                {"type": "text", "text": "Invalid API key · Fix external API key"},
                model="<synthetic>",
                error="authentication_failed",
            ),
            result(usage(0, 0, 0, 0), {}, 0, is_error=True, text="Invalid API key"),
        ]
    )
    assert tokens(parser.state.usage) == (0, 0, 0, 0, 0.0)
    assert parser.state.is_error is True


# ===================================================================== the model (defect 9)


def test_model_from_init_without_the_context_window_tag() -> None:
    parser = feed(FALLBACK_STREAM)
    assert parser.state.model == "claude-opus-4-8"


def test_init_model_stands_when_a_subagent_answers_with_another() -> None:
    parser = feed(
        [INIT, assistant("m", usage(1, 1, 0, 0), WRITE, model="claude-haiku-4-5", parent="t1")]
    )
    assert parser.state.model == "claude-opus-4-8"


def test_model_from_the_api_answer_without_init() -> None:
    parser = ClaudeParser()
    parser.feed(
        assistant("e", usage(0, 0, 0, 0), {"type": "text", "text": "x"}, model="<synthetic>")
    )
    assert parser.state.model is None  # made up by Claude Code, not the API's
    parser.feed(
        assistant("s", usage(1, 1, 0, 0), {"type": "text"}, model="claude-haiku-4-5", parent="t")
    )
    assert parser.state.model is None  # a subagent's model is not the task's
    parser.feed(FALLBACK_STREAM[1])
    assert parser.state.model == "claude-opus-4-8"


def test_model_from_model_usage_when_nothing_else_names_it() -> None:
    parser = feed(
        [
            result(
                usage(1, 1, 0, 0),
                {
                    "claude-haiku-4-5": per_model(10, 1, 0, 0, 0.0),
                    "claude-sonnet-4-5[1m]": per_model(900, 50, 0, 0, 0.0),
                },
                0.0,
            )
        ]
    )
    assert parser.state.model == "claude-sonnet-4-5"


def test_no_model_named_anywhere() -> None:
    parser = feed([result(usage(0, 0, 0, 0), {}, 0.0)])
    assert parser.state.model is None


@pytest.mark.parametrize(
    ("printed", "model"),
    [
        ("claude-opus-4-8[1m]", "claude-opus-4-8"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("<synthetic>", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_model_name(printed: object, model: str | None) -> None:
    assert model_name(printed) == model


def test_init_model_without_tag_prices_turns() -> None:
    price = ModelPrice(input_per_mtok=3.0, output_per_mtok=15.0)
    parser = feed([INIT, FALLBACK_STREAM[1]], ClaudeParser(prices={"claude-opus-4-8": price}))
    # 1000 * 3 + 50 * 15 = 3750 per million
    assert parser.state.usage.cost_usd == pytest.approx(0.00375)


def test_claude_is_asked_to_stop_in_its_main_process_only() -> None:
    # It then stops its own tools and prints its final result with the usage.
    assert ClaudeHarness().stop_leader_first is True
    assert ClaudeHarness().stop_signal == signal.SIGINT
