"""The machine's own rules (SPEC §3): one idempotent terminal writer, exceptions in callbacks
end the run `failed`, KeyboardInterrupt/SystemExit are never swallowed."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transitions.core import MachineError

from cub.chart.definition import RUN_CHART
from cub.records.location import runs_dir
from cub.records.schemas import RunRecord
from tests.helpers.machines import new_machine


def _record(project: Path, run_id: str = "run-test") -> RunRecord:
    path = runs_dir(project) / run_id / "run.json"
    return msgspec.json.decode(path.read_bytes(), type=RunRecord)


def test_exception_in_a_callback_ends_failed_with_traceback(project: Path) -> None:
    machine = new_machine(project)

    def explode(event: object) -> None:
        raise ValueError("callback broke")

    machine.machine.get_state("preparing").add_callback("enter", explode)
    machine.validate()
    machine.accept()
    assert machine.state == "failed"
    record = _record(project)
    assert record.reason_code == "exception" and record.exit_code == 1
    assert record.error is not None and record.error.type == "ValueError"
    assert "callback broke" in (record.error.traceback or "")
    assert [h.trigger for h in record.history] == ["validate", "accept", "crash"]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_propagate(
    project: Path, exc_type: type[BaseException]
) -> None:
    machine = new_machine(project)

    def leave(event: object) -> None:
        raise exc_type()

    machine.machine.get_state("validating").add_callback("enter", leave)
    with pytest.raises(exc_type):
        machine.validate()
    assert not (runs_dir(project) / "run-test" / "run.json").exists()


def test_a_failing_record_write_still_leaves_a_failed_record(project: Path) -> None:
    machine = new_machine(project)
    store = machine.ctx.store
    assert store is not None
    real_write = store.write_run
    calls = []

    def flaky(record: RunRecord) -> None:
        calls.append(record.state)
        if len(calls) == 1:
            raise OSError("disk hiccup")
        real_write(record)

    store.write_run = flaky  # type: ignore[method-assign]
    machine.validate()
    machine.reject(reason="bad flag", reason_code="flag_conflict")
    record = _record(project)
    assert calls == ["validation_rejected", "failed"]
    assert record.state == "failed" and record.reason_code == "exception"
    assert "disk hiccup" in record.reason


def test_invalid_trigger_leaves_state_unchanged(project: Path) -> None:
    machine = new_machine(project)
    with pytest.raises(MachineError):
        machine.task_succeeded()
    assert machine.state == "created"


def test_the_machine_has_no_auto_transitions(project: Path) -> None:
    machine = new_machine(project)
    assert not hasattr(machine, "to_completed")


TRIGGERS = RUN_CHART.triggers()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(TRIGGERS), min_size=1, max_size=40))
def test_random_walks_end_recorded_or_stay_live(
    tmp_path_factory: pytest.TempPathFactory, walk: list[str]
) -> None:
    """Any sequence of triggers: invalid ones change nothing, valid ones follow the chart, and
    the first terminal state reached is the one recorded, once."""
    project = tmp_path_factory.mktemp("walk")
    machine = new_machine(project)
    edges = {(e.trigger, e.source): e.dest for e in RUN_CHART.edges}
    first_terminal = None
    for trigger in walk:
        before = machine.state
        expected = edges.get((trigger, before))
        kwargs = {"error": RuntimeError("x")} if trigger == "crash" else {}
        if expected is None:
            with pytest.raises(MachineError):
                getattr(machine, trigger)(**kwargs)
            assert machine.state == before
        else:
            getattr(machine, trigger)(**kwargs)
            assert machine.state == expected
        if machine.is_terminal and first_terminal is None:
            first_terminal = machine.state
    run_json = runs_dir(project) / "run-test" / "run.json"
    if first_terminal is None:
        assert not run_json.exists()
    else:
        assert _record(project).state == first_terminal == machine.state
