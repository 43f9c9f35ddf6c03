"""Agents' output reaches the parsers many lines at a time (whatever one read of the pipe held),
and is only split where something in it needs a line of its own. Whatever way a stream is cut
into such texts, every parser ends in the same state as when it is given one line at a time."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cub.agents.claude import ROOT_REFUSAL, ClaudeParser
from cub.agents.codex import CodexParser
from cub.agents.command import CommandParser
from cub.agents.gemini import GeminiParser
from cub.agents.harness import OutputParser, stuck_reason_in
from cub.agents.opencode import OpenCodeParser
from cub.agents.stream import event_lines
from tests.agents.test_claude_adapter import FALLBACK_STREAM, INIT, STREAMED
from tests.agents.test_codex_adapter import REAL_STREAM as CODEX_STREAM
from tests.agents.test_gemini_adapter import STREAM as GEMINI_STREAM
from tests.agents.test_opencode_adapter import AUTH_ERROR, FINAL_TEXT, STEP_START, TOOL_USE

# Plain output an agent's tools print between events, signals included: a `<stuck>` whose end
# is on another line is no signal, one on a single line is.
PLAIN = [
    "",
    "   ",
    "Running tests...",
    "<stuck>",
    "the build needs a token I do not have</stuck>",
    "<stuck>the database is down</stuck>",
    "<stuck>REASON</stuck>",
    "All done <promise>COMPLETE</promise>",
    f"Error: --dangerously-skip-permissions {ROOT_REFUSAL}",
    "{not json at all",
    '  {"type": "result", "truncated',
    "\x1c{ a file separator is white space to str.strip",
    "\u3000{ so is an ideographic space",
    '{"cub_usage": {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.25}}',
    '  {"cub_usage": {"input_tokens": -1}}',
    "[1] 12345 killed   node server.js",
]


def json_line(event: dict[str, Any]) -> str:
    return json.dumps(event)


STREAMS: dict[str, tuple[Callable[[], OutputParser], list[str]]] = {
    "claude": (ClaudeParser, [INIT, *FALLBACK_STREAM, *STREAMED]),
    "codex": (CodexParser, CODEX_STREAM),
    "opencode": (OpenCodeParser, [STEP_START, TOOL_USE, FINAL_TEXT, AUTH_ERROR]),
    "gemini": (GeminiParser, [json_line(event) for event in GEMINI_STREAM]),
    "command": (CommandParser, []),
}


def state_of(parser: OutputParser) -> tuple[Any, ...]:
    state = parser.state
    return (
        state.usage,
        state.is_error,
        state.error_message,
        state.result_seen,
        state.stuck_reason,
        state.promise_complete,
        state.model,
    )


@st.composite
def stream_and_cuts(draw: st.DrawFn, events: list[str]) -> tuple[list[str], list[int]]:
    pool = [*events, *PLAIN]
    lines = draw(st.lists(st.sampled_from(pool), max_size=30))
    cuts = draw(st.lists(st.integers(0, len(lines)), max_size=5))
    return lines, sorted(set(cuts))


def feed_in_pieces(parser: OutputParser, lines: list[str], cuts: list[int]) -> bool:
    changed = False
    for start, end in zip([0, *cuts], [*cuts, len(lines)], strict=True):
        if start < end:
            changed = parser.feed_text("".join(f"{line}\n" for line in lines[start:end])) or changed
    return changed


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_every_parser_ends_alike_however_its_output_is_cut(data: st.DataObject) -> None:
    for name, (make, events) in STREAMS.items():
        lines, cuts = data.draw(stream_and_cuts(events), label=name)
        one_by_one = make()
        changed_one_by_one = False
        for line in lines:
            changed_one_by_one = one_by_one.feed_text(line + "\n") or changed_one_by_one
        in_pieces = make()
        changed_in_pieces = feed_in_pieces(in_pieces, lines, cuts)
        assert state_of(in_pieces) == state_of(one_by_one), name
        assert changed_in_pieces == changed_one_by_one, name


def test_a_stuck_tag_ending_on_another_line_is_no_signal() -> None:
    parser = CommandParser()
    parser.feed_text("<stuck>\nthe build needs a token</stuck>\n")
    assert parser.state.stuck_reason is None
    parser.feed_text("x\n<stuck>the build needs a token</stuck>\n")
    assert parser.state.stuck_reason == "the build needs a token"


def test_usage_lines_are_found_among_plain_output() -> None:
    parser = CommandParser()
    text = "x\n" * 1000 + '{"cub_usage": {"input_tokens": 7}}\n' + "y\n" * 1000
    assert parser.feed_text(text)
    assert parser.state.usage.input_tokens == 7
    assert not parser.feed_text("z\n" * 100)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*PLAIN, INIT, ' \t{"a": 1}', "{}", "}{"]), max_size=20))
def test_event_lines_are_the_lines_that_start_with_a_brace(lines: list[str]) -> None:
    text = "".join(f"{line}\n" for line in lines)
    pieces = list(event_lines(text))
    assert (
        "".join(plain + (event + "\n" if event is not None else "") for plain, event in pieces)
        == text
    )
    events = [event for _, event in pieces if event is not None]
    assert events == [line for line in lines if line.strip().startswith("{")]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<stuck>", "</stuck>", "<", "stuck>", "/", "a", " ", "\n"])))
def test_a_stuck_reason_is_what_the_tags_enclose(pieces: list[str]) -> None:
    """Between the first `<stuck>` and the first `</stuck>` after it: what the lazy search
    ``<stuck>(.*?)</stuck>`` finds, without its cost."""
    text = "".join(pieces)
    match = re.search(r"<stuck>(.*?)</stuck>", text, re.DOTALL)
    assert stuck_reason_in(text) == (match.group(1) if match else None)


@pytest.mark.timeout(30)
def test_a_megabyte_line_of_unclosed_tags_is_read_in_one_pass() -> None:
    """A truncated tool result (Gemini's is cut at 1 MiB) full of `<stuck>` and no end tag:
    with a lazy regex each tag cost a pass to the line's end, minutes of the main thread."""
    line = "<stuck>x " * (1 << 17)
    parser = CommandParser()
    parser.feed_text(f"{line}\n{line}</stuck>\n")
    assert parser.state.stuck_reason == line[len("<stuck>") :].strip()
