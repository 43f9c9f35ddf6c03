"""Tests generated from the chart: every state reached by its shortest path, every transition
taken by a path that goes on to a terminal state, each replayed on the real machine with a real
run directory. A new edge in cub/chart/definition.py adds its own case here."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from cub.chart.definition import RUN_CHART, Edge
from cub.chart.exit_codes import exit_code_for
from cub.chart.paths import edge_paths, path_to_terminal, shortest_paths
from cub.records.location import runs_dir
from cub.records.schemas import Event, RunRecord, StatusRecord
from tests.helpers.machines import new_machine


def _kwargs(edge: Edge) -> dict[str, object]:
    if edge.trigger == "interrupt":
        return {"signal": "sigterm"}
    if edge.trigger == "crash":
        return {"error": RuntimeError("boom")}
    if edge.trigger == "stopped":
        return {}  # the reason_code comes from the interrupt's signal
    if edge.reason_codes:
        return {"reason": f"because {edge.trigger}", "reason_code": edge.reason_codes[-1]}
    return {}


def replay(project: Path, path: list[Edge]):  # type: ignore[no-untyped-def]
    machine = new_machine(project)
    for edge in path:
        assert machine.state == edge.source
        getattr(machine, edge.trigger)(**_kwargs(edge))
        assert machine.state == edge.dest, f"{edge.trigger} from {edge.source}"
    return machine


def _check_artifacts(project: Path, machine, path: list[Edge]) -> None:  # type: ignore[no-untyped-def]
    run_dir = runs_dir(project) / "run-test"
    record = msgspec.json.decode((run_dir / "run.json").read_bytes(), type=RunRecord)
    status = msgspec.json.decode((run_dir / "status.json").read_bytes(), type=StatusRecord)
    events = [
        msgspec.json.decode(line, type=Event)
        for line in (run_dir / "events.jsonl").read_bytes().splitlines()
    ]
    last = path[-1]
    assert record.state == status.state == machine.state == last.dest
    assert record.exit_code == exit_code_for(record.state, record.reason_code)
    assert machine.exit_code == record.exit_code
    assert [(h.from_, h.to, h.trigger) for h in record.history] == [
        (e.source, e.dest, e.trigger) for e in path
    ]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    transitions = [(e.state_from, e.state_to, e.trigger) for e in events if e.kind == "transition"]
    assert transitions == [(e.source, e.dest, e.trigger) for e in path]
    if last.trigger == "crash":
        assert record.reason_code == "exception"
        assert record.error is not None and "RuntimeError: boom" in (record.error.traceback or "")
    elif last.trigger == "stopped":
        assert record.reason_code == "sigterm" and record.exit_code == 143
    elif last.reason_codes:
        assert record.reason_code == last.reason_codes[-1]
    assert (run_dir / "runner.lock").exists()
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700"


STATE_PATHS = shortest_paths(RUN_CHART)


@pytest.mark.parametrize("state", sorted(STATE_PATHS))
def test_every_state_is_reached_by_its_shortest_path(project: Path, state: str) -> None:
    path = STATE_PATHS[state] + path_to_terminal(RUN_CHART, state)
    machine = replay(project, STATE_PATHS[state])
    assert machine.state == state
    for edge in path_to_terminal(RUN_CHART, state):
        getattr(machine, edge.trigger)(**_kwargs(edge))
    assert machine.is_terminal
    _check_artifacts(project, machine, path)


EDGE_PATHS = edge_paths(RUN_CHART)


@pytest.mark.parametrize(
    ("edge", "path"), EDGE_PATHS, ids=[f"{e.trigger}:{e.source}->{e.dest}" for e, _ in EDGE_PATHS]
)
def test_every_transition_replays_to_a_recorded_terminal(
    project: Path, edge: Edge, path: list[Edge]
) -> None:
    assert edge in path
    machine = replay(project, path)
    assert machine.is_terminal
    _check_artifacts(project, machine, path)


@pytest.mark.parametrize("terminal", RUN_CHART.terminal)
def test_terminal_states_are_absorbing(project: Path, terminal: str) -> None:
    machine = replay(project, STATE_PATHS[terminal])
    run_json = runs_dir(project) / "run-test" / "run.json"
    before = run_json.read_bytes()
    from transitions.core import MachineError

    for trigger in RUN_CHART.triggers():
        with pytest.raises(MachineError):
            getattr(machine, trigger)()
        assert machine.state == terminal
    machine.on_enter_terminal()  # idempotent: a second call writes nothing
    assert run_json.read_bytes() == before


def test_every_trigger_is_fired_by_the_code() -> None:
    """An edge added to the chart but never fired anywhere in cub/ is a path nobody handles."""
    root = Path(__file__).resolve().parents[2] / "cub"
    sources = "\n".join(p.read_text() for p in root.rglob("*.py") if "chart" not in p.parts)

    def fired(trigger: str) -> bool:
        # A trigger is fired as a machine method, through Run.end_with, or as the first item of
        # an ending tuple that the loop hands to end_with. A mere mention of the word (the
        # `finish` value of loop.on_interrupt, say) does not count.
        return bool(
            re.search(rf'\.{trigger}\(|end_with\(\s*"{trigger}"|\(\s*"{trigger}",', sources)
        )

    missing = [t for t in RUN_CHART.triggers() if not fired(t)]
    assert missing == []
