"""The sieve in front of the parsers: a piece of output it passes over must be one its parser
would have taken nothing from, and a piece holding anything a parser takes must reach it,
wherever the reads cut it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cub.agents.claude import ROOT_REFUSAL, ClaudeParser
from cub.agents.codex import CodexParser
from cub.agents.command import CommandParser
from cub.agents.gemini import GeminiParser
from cub.agents.harness import OutputParser
from cub.agents.opencode import OpenCodeParser
from cub.agents.output import SIEVE_FROM_BYTES, LineAssembler, Output
from cub.agents.registry import KNOWN_HARNESSES
from cub.agents.sieve import literal, sieve_for
from cub.records.redact import Redactor
from cub.records.secret_search import AnyMatch
from tests.agents.test_output import output_on_a_pipe
from tests.agents.test_output_text import PLAIN, STREAMS, state_of
from tests.helpers.agents import write_script
from tests.helpers.cli import make_project, read_attempt, read_run, run_cub, task

SIEVED: dict[str, Callable[[], OutputParser]] = {
    "command": CommandParser,
    "claude": ClaudeParser,
    "codex": CodexParser,
    "opencode": OpenCodeParser,
}

# Lines close to what the parsers look for, but not it: each must be passed over.
NEAR_MISSES = [
    "    assert response.status_code == 200, f'unexpected {response.status_code}'",
    "{ not json }",
    "{\x0b}",
    "cub_usage: 10 tokens",
    "<stuck the end tag is missing",
    "<promise>complete</promise>",
    "cannot be used with root",
    "}{",
]

# What random lines are made of: the characters the patterns are built from, the white space
# JSON and str.strip differ on, and pieces of what the parsers look for.
PIECES = [
    *'{}"<>/: \t\r\x0b\x0c\x1c\u3000\x85é_',
    "cub_usage",
    '"cub_usage"',
    "<stuck>",
    "</stuck>",
    "<promise>COMPLETE</promise>",
    "type",
    '"type": "result"',
    ROOT_REFUSAL,
    "1",
]


def sieve_of(parser: OutputParser) -> AnyMatch:
    assert parser.looks_for is not None
    sieve = sieve_for(parser.looks_for)
    assert sieve is not None, "hyperscan is a dependency on this platform"
    return sieve


def sieved_out(parser: OutputParser, lines: list[str]) -> tuple[bool, str]:
    text = "".join(f"{line}\n" for line in lines)
    return not sieve_of(parser).found_in(text.encode()), text


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([*PLAIN, *NEAR_MISSES]),
            st.lists(st.sampled_from(PIECES), max_size=8).map("".join),
        ),
        max_size=12,
    )
)
def test_what_the_sieve_passes_over_changes_no_parser(lines: list[str]) -> None:
    for name, make in SIEVED.items():
        parser = make()
        passed_over, text = sieved_out(parser, lines)
        if passed_over:
            fresh = make()
            assert not parser.feed_text(text), name
            assert state_of(parser) == state_of(fresh), name


def test_near_misses_are_passed_over_and_what_parsers_take_is_not() -> None:
    for name, make in SIEVED.items():
        assert sieved_out(make(), NEAR_MISSES)[0], name
        for line in [*PLAIN, *STREAMS[name][1]]:
            parser = make()
            if not sieved_out(parser, [line])[0]:
                continue
            assert not parser.feed_text(line + "\n"), (name, line)
            assert state_of(parser) == state_of(make()), (name, line)
    for line in (
        '{"cub_usage": {"input_tokens": 1}}',
        "x <stuck>no access</stuck>",
        "<promise>COMPLETE</promise>",
    ):
        assert not sieved_out(CommandParser(), [line])[0], line
    assert not sieved_out(ClaudeParser(), [f"Error: {ROOT_REFUSAL}"])[0]


def test_events_with_white_space_after_the_brace_are_not_passed_over() -> None:
    """JSON allows space, tab and CR there (and msgspec takes them): the same event."""
    for name, make in SIEVED.items():
        events = [line for line in STREAMS[name][1] if line.startswith("{")]
        for line in events:
            spaced = "\t{ \t\r" + line[1:]
            assert make().feed_text(spaced + "\n") == make().feed_text(line + "\n")
            assert not sieved_out(make(), [spaced])[0], (name, line)


def test_a_parser_that_reads_every_line_gets_no_sieve() -> None:
    assert GeminiParser().looks_for is None  # it estimates tokens from all of the text


def test_every_parser_with_a_sieve_is_checked_here() -> None:
    """A new parser (or an old one that starts looking at plain text) gets a sieve only with
    its place in `SIEVED`, and so in the property test above."""
    for name, (make, _) in STREAMS.items():
        assert (make().looks_for is not None) == (name in SIEVED), name
    assert set(KNOWN_HARNESSES) == set(STREAMS), "a harness whose parser these tests do not know"


def test_literal_matches_exactly_its_text() -> None:
    text = 'a.b*c (d) [e] {f} "g" é\\'
    sieve = AnyMatch(__import__("hyperscan"), (literal(text),))
    assert sieve.found_in(f"before {text} after".encode())
    assert not sieve.found_in(text.replace(".", "x").encode())
    assert not sieve.found_in(text[:-1].encode())


# -------------------------------------------------------------------- the reader's side

FILLER = b"tests/unit/test_module.py::TestCase::test_behaviour PASSED [ 50%]\n"
USAGE = b'{"cub_usage": {"input_tokens": 7}}\n'


def assembled(chunks: list[bytes]) -> tuple[str, bool]:
    """The caller's text from ``chunks`` read one after another, and whether any of it was
    to be parsed."""
    lines = LineAssembler(Redactor(), 1.0, CommandParser.looks_for)
    pieces = [lines.feed(chunk, now=0.0) for chunk in chunks] + [lines.finish()]
    return "".join(p.lines for p in pieces), any(p.to_parse for p in pieces)


def test_bulk_output_without_anything_to_parse_is_passed_over() -> None:
    bulk = FILLER * (2 * SIEVE_FROM_BYTES // len(FILLER))
    text, to_parse = assembled([bulk, bulk])
    assert text == (bulk * 2).decode()
    assert not to_parse


@pytest.mark.parametrize("cut", [0, 1, 5, len(USAGE) - 1])
def test_a_usage_line_cut_across_two_reads_is_parsed(cut: int) -> None:
    bulk = FILLER * (2 * SIEVE_FROM_BYTES // len(FILLER))
    text, to_parse = assembled([bulk + USAGE[:cut], USAGE[cut:] + bulk])
    assert to_parse
    parser = CommandParser()
    assert parser.feed_text(text) and parser.state.usage.input_tokens == 7


def test_small_output_is_always_parsed() -> None:
    assert assembled([FILLER * 3])[1]


def test_the_flag_reaches_the_caller_with_the_text(tmp_path: Path) -> None:
    """Through the reader thread and its queue: a batch is to be parsed when any text in it is."""
    output, write_fd = output_on_a_pipe(tmp_path / "harness.log", CommandParser.looks_for)
    reader = threading.Thread(target=output.drain, daemon=True)
    reader.start()
    bulk = FILLER * (4 * SIEVE_FROM_BYTES // len(FILLER))
    os.write(write_fd, bulk)
    first = output.wait_for_output(10, lambda: False)
    while len(first.text) < len(bulk):  # the reader may hand it on in more than one read
        more = output.wait_for_output(10, lambda: False)
        first = Output(first.text + more.text, first.to_parse or more.to_parse)
    assert not first.to_parse
    os.write(write_fd, bulk + USAGE + bulk)
    os.close(write_fd)
    reader.join(10)
    output.log.close()
    rest = output.remaining_output(0)
    assert rest.to_parse and rest.text.count("cub_usage") == 1


def test_usage_and_signal_amid_bulk_output_are_recorded(tmp_path: Path) -> None:
    """The whole way, through `cub run -H command`: megabytes of plain output around a usage
    report and a stuck signal."""
    project = make_project(tmp_path / "project", [task("T-1")])
    agent = write_script(
        tmp_path / "agent.py",
        f"""
        import sys
        bulk = {FILLER!r} * 40000
        out = sys.stdout.buffer
        out.write(bulk)
        out.write({USAGE!r})
        out.write(bulk)
        out.write(b"<stuck>the fixture server is down</stuck>\\n")
        out.write(bulk)
        """,
    )
    result = run_cub(["run", "-H", "command", "--harness-cmd", f"python3 {agent}"], project)
    assert "Traceback" not in result.stderr
    record = read_run(project)
    assert (record.state, record.reason_code) == ("failed", "agent_stuck")
    attempt = read_attempt(project, "T-1")
    assert attempt.stuck_reason == "the fixture server is down"
    assert attempt.usage.input_tokens == 7
