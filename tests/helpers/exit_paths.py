"""Scenarios of the exit-path audit: marking a test as the proof of a row of
statecharts/exit-paths.md, and checking every artifact that row lists.

A row is (trigger, from state, reason_code). `cub.chart.audit.find_scenarios` finds the tests
marked `@exit_path(...)` and the generated audit names them; tests/chart/test_audit.py fails
when a row has no scenario.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from cub.chart.audit import NO_RECORD_CODES, files_written
from cub.chart.definition import RUN_CHART, Edge
from cub.chart.exit_codes import exit_code_for
from cub.records.schemas import Event, RunRecord, StatusRecord, TaskAttempt
from tests.helpers.cli import run_dir


def exit_path(trigger: str, source: str, reason_code: str) -> pytest.MarkDecorator:
    """Marks the test that drives the real `cub` process into this row's ending."""
    return pytest.mark.exit_path(trigger, source, reason_code)


def chart_edge(trigger: str, source: str) -> Edge:
    edge = next((e for e in RUN_CHART.edges if (e.trigger, e.source) == (trigger, source)), None)
    assert edge is not None, f"the chart has no edge {trigger} from {source}"
    return edge


def assert_ending(
    project: Path,
    returncode: int,
    trigger: str,
    source: str,
    reason_code: str,
    *,
    task_id: str | None = None,
    recorded_by: str = "machine",
    run_id: str = "newest",
) -> RunRecord:
    """Every artifact of the row (trigger, source, reason_code): run.json parses and says the
    terminal state, reason_code and exit code, and its history ends with that edge; status.json
    says the same state; every events.jsonl line parses, numbered 1, 2, 3, …, and the last
    transition is that edge; task.json of ``task_id`` parses where the row lists it. The process
    exited with the record's code (``returncode`` is -9 when cub itself was SIGKILLed and
    recovery wrote the record)."""
    edge = chart_edge(trigger, source)
    assert reason_code in edge.reason_codes, f"{reason_code} is not a reason of {edge}"
    assert reason_code not in NO_RECORD_CODES
    expected_code = exit_code_for(edge.dest, reason_code)
    directory = run_dir(project, run_id)

    record = msgspec.json.decode((directory / "run.json").read_bytes(), type=RunRecord)
    assert (record.state, record.reason_code, record.exit_code) == (
        edge.dest,
        reason_code,
        expected_code,
    ), record.reason
    assert record.recorded_by == recorded_by
    last = record.history[-1]
    assert (last.trigger, last.from_, last.to) == (trigger, source, edge.dest), record.history
    if recorded_by == "machine":
        assert returncode == expected_code, (returncode, record.reason)
    else:
        assert returncode == -9, returncode

    status = msgspec.json.decode((directory / "status.json").read_bytes(), type=StatusRecord)
    assert status.state == edge.dest
    assert status.run_id == record.run_id

    lines = (directory / "events.jsonl").read_bytes().splitlines()
    events = [msgspec.json.decode(line, type=Event) for line in lines]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    transition = [e for e in events if e.kind == "transition"][-1]
    assert (transition.trigger, transition.state_from, transition.state_to) == (
        trigger,
        source,
        edge.dest,
    )

    if "task.json" in files_written(edge, reason_code):
        assert task_id is not None, "the row lists task.json: name the task whose attempt it is"
    if task_id is not None:
        path = directory / "tasks" / task_id / "task.json"
        attempt = msgspec.json.decode(path.read_bytes(), type=TaskAttempt)
        assert attempt.task_id == task_id
    return record
