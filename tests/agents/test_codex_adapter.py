"""The codex adapter's usage: an honest running estimate, replaced by codex's exact figure.

``REAL_STREAM`` is what `codex exec --json` 0.171 printed for a four-call task against the
scripted Responses server (tests/helpers/model_servers/openai_responses.py): write a file with
apply_patch, commit, one more shell command, final message. Per-call usage was (input, output,
cache read, cache write): (100, 10, 20, 5), (200, 20, 40, 0), (300, 30, 60, 0), (400, 40, 80, 0);
codex printed it only once, summed, in ``turn.completed``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cub.agents.codex import CodexHarness, CodexParser
from cub.agents.stream import estimate_tokens
from cub.config.schema import ModelPrice
from cub.records.schemas import Usage

_COMMIT = "/bin/bash -lc \"git add -A && git commit -qm 'add notes'\""
_ECHO = "/bin/bash -lc 'echo extra'"
_FINAL = "All done <promise>COMPLETE</promise>"


def _command(event: str, item_id: str, command: str, output: str, code: int | None) -> str:
    item = {
        "id": item_id,
        "type": "command_execution",
        "command": command,
        "aggregated_output": output,
        "exit_code": code,
        "status": "in_progress" if code is None else "completed",
    }
    return json.dumps({"type": event, "item": item})


REAL_STREAM = [
    '{"type":"thread.started","thread_id":"01a23b39-846a-7d71-8ed7-8423f1c5257f"}',
    '{"type":"turn.started"}',
    '{"type":"item.started","item":{"id":"item_0","type":"file_change","changes":[{"path":"/p/notes.txt","kind":"add"}],"status":"in_progress"}}',
    '{"type":"item.completed","item":{"id":"item_0","type":"file_change","changes":[{"path":"/p/notes.txt","kind":"add"}],"status":"completed"}}',
    _command("item.started", "item_1", _COMMIT, "", None),
    _command("item.completed", "item_1", _COMMIT, "", 0),
    _command("item.started", "item_2", _ECHO, "", None),
    _command("item.completed", "item_2", _ECHO, "extra\n", 0),
    json.dumps(
        {
            "type": "item.completed",
            "item": {"id": "item_3", "type": "agent_message", "text": _FINAL},
        }
    ),
    '{"type":"turn.completed","usage":{"input_tokens":1205,"cached_input_tokens":200,"cache_write_input_tokens":5,"output_tokens":100,"reasoning_output_tokens":0}}',
]
TURN_COMPLETED = REAL_STREAM[-1]
PRICE = ModelPrice(
    input_per_mtok=1.0, output_per_mtok=10.0, cache_read_per_mtok=0.1, cache_write_per_mtok=2.0
)


def usage_of(usage: Usage) -> tuple[int, int, int, int, bool]:
    return (
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_creation_tokens,
        usage.estimated,
    )


def test_the_exact_figure_splits_cache_reads_and_writes_out_of_input() -> None:
    parser = CodexParser()
    assert parser.feed(TURN_COMPLETED) is True
    # 1205 = 1000 uncached + 200 cache reads + 5 cache writes; output already counts reasoning.
    assert usage_of(parser.state.usage) == (1000, 100, 200, 5, False)
    assert parser.state.usage.total_tokens == 1205 + 100


def test_before_any_figure_the_prompt_is_an_estimate() -> None:
    parser = CodexParser(prompt_chars=4001)
    assert usage_of(parser.state.usage) == (1001, 0, 0, 0, True)


def test_the_estimate_rises_with_each_step_of_the_real_stream() -> None:
    parser = CodexParser(prompt_chars=400)
    totals: list[int] = []
    for line in REAL_STREAM[:-1]:
        parser.feed(line)
        totals.append(parser.state.usage.total_tokens)
    usage = parser.state.usage
    assert usage.estimated is True
    written = (
        len(_COMMIT)
        + len("/bin/bash -lc 'echo extra'")
        + len("All done <promise>COMPLETE</promise>")
    )
    # input: the prompt plus the command output fed back; output: what the model wrote
    assert usage_of(usage) == (
        estimate_tokens(400 + len("extra\n")),
        estimate_tokens(written),
        0,
        0,
        True,
    )
    assert totals == sorted(totals) and totals[-1] > totals[0]
    assert parser.state.promise_complete is True


def test_started_and_completed_of_one_item_are_estimated_once() -> None:
    once, twice = CodexParser(), CodexParser()
    once.feed(REAL_STREAM[5])
    twice.feed(REAL_STREAM[4])
    twice.feed(REAL_STREAM[5])
    twice.feed(REAL_STREAM[5])
    assert usage_of(twice.state.usage) == usage_of(once.state.usage)
    assert twice.state.usage.output_tokens == estimate_tokens(len(_COMMIT))


def test_the_exact_figure_replaces_the_estimate() -> None:
    parser = CodexParser(prompt_chars=10_000)
    changed = [parser.feed(line) for line in REAL_STREAM]
    assert usage_of(parser.state.usage) == (1000, 100, 200, 5, False)
    assert changed[-1] is True
    # every item that went through the model moved the estimate
    assert changed == [False, False, False, False, True, False, True, True, True, True]


def test_nothing_after_the_exact_figure_turns_it_back_into_an_estimate() -> None:
    parser = CodexParser(prompt_chars=100)
    parser.feed(TURN_COMPLETED)
    late = '{"type":"item.completed","item":{"id":"late","type":"agent_message","text":"xxxx"}}'
    assert parser.feed(late) is False
    assert usage_of(parser.state.usage) == (1000, 100, 200, 5, False)


def test_stopped_before_turn_completed_keeps_an_estimate_never_zero() -> None:
    # SIGINT while a command runs: codex 0.171 exits 1 at once, with no turn.completed.
    parser = CodexParser(prompt_chars=2000)
    for line in REAL_STREAM[:5]:
        parser.feed(line)
    usage = parser.state.usage
    assert usage.estimated is True
    assert usage.input_tokens == 500
    assert usage.output_tokens == estimate_tokens(len(_COMMIT))
    assert parser.state.result_seen is False


def test_several_turns_sum_exactly() -> None:
    parser = CodexParser(prompt_chars=100)
    parser.feed(TURN_COMPLETED)
    parser.feed(TURN_COMPLETED)
    assert usage_of(parser.state.usage) == (2000, 200, 400, 10, False)


def test_cache_figures_larger_than_the_input_are_clamped() -> None:
    parser = CodexParser()
    parser.feed(
        '{"type":"turn.completed","usage":{"input_tokens":10,"cached_input_tokens":8,'
        '"cache_write_input_tokens":5,"output_tokens":1}}'
    )
    assert usage_of(parser.state.usage) == (0, 1, 8, 2, False)


def test_the_harness_estimates_its_own_prompt_and_prices_estimate_then_exact() -> None:
    harness = CodexHarness(prices={"gpt-5.5": PRICE})
    invocation = harness.invocation(
        system="s" * 300, task="t" * 500, prompt_file=Path("p"), model="gpt-5.5"
    )
    assert invocation.stdin is not None
    parser = harness.parser()
    assert parser.state.usage.input_tokens == estimate_tokens(len(invocation.stdin.decode()))
    assert parser.state.usage.estimated is True
    assert parser.state.usage.cost_usd == pytest.approx(parser.state.usage.input_tokens * 1.0 / 1e6)
    parser.feed(TURN_COMPLETED)
    # 1000*1 + 100*10 + 200*0.1 + 5*2 = 2030 per million
    assert parser.state.usage.cost_usd == pytest.approx(0.00203)


def test_a_warning_item_does_not_fail_and_a_failed_turn_does() -> None:
    parser = CodexParser(prompt_chars=40)
    parser.feed(
        '{"type":"item.completed","item":{"id":"item_0","type":"error","message":'
        '"Model metadata for `x` not found. Defaulting to fallback metadata"}}'
    )
    assert parser.state.is_error is False
    parser.feed('{"type":"error","message":"unexpected status 401 Unauthorized: Incorrect"}')
    parser.feed(
        '{"type":"turn.failed","error":{"message":"unexpected status 401 Unauthorized: Incorrect"}}'
    )
    assert parser.state.is_error is True
    assert parser.state.error_message == "unexpected status 401 Unauthorized: Incorrect"
    # no figure came: the usage stays an estimate (of the prompt), flagged as one
    assert usage_of(parser.state.usage) == (10, 0, 0, 0, True)
