"""The plan of a run: every task in the order the loop would take it, checked against the loop's
own selection (claiming and closing task after task) on generated backlogs."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from cub.tasks.model import Task
from cub.tasks.plan import plan_run
from cub.tasks.selection import pick_task


def _task(task_id: str, **fields: object) -> Task:
    return msgspec.convert({"id": task_id, "title": task_id, **fields}, Task)


def test_tasks_unblocked_by_earlier_ones_are_in_the_plan() -> None:
    tasks = [
        _task("d1", priority=2),
        _task("d2", priority=2, depends_on=["d1"]),
        _task("d3", priority=3, depends_on=["d2", "d4"]),
        _task("d4", priority=1),
    ]
    plan = plan_run(tasks)
    assert [(s.task.id, s.ready_now, s.after) for s in plan.steps] == [
        ("d4", True, []),
        ("d1", True, []),
        ("d2", False, ["d1"]),
        ("d3", False, ["d2", "d4"]),
    ]
    assert plan.waiting == []


def test_a_dependency_named_twice_is_waited_for_once() -> None:
    tasks = [_task("a"), _task("b", depends_on=["a", "a"])]
    assert [(s.task.id, s.after) for s in plan_run(tasks).steps] == [("a", []), ("b", ["a"])]


def test_what_never_gets_ready_says_why() -> None:
    tasks = [
        _task("a", status="failed"),
        _task("b", depends_on=["a"]),
        _task("c", depends_on=["ghost"]),
        _task("d", depends_on=["e"]),
        _task("e", depends_on=["d"]),
        _task("f", labels=["ui"]),
        _task("g", depends_on=["f"], labels=["api"]),
    ]
    plan = plan_run(tasks, label="api")
    assert plan.steps == []
    assert {w.task.id: w.why for w in plan.waiting} == {
        "g": "blocked by f (open, not in this run's selection)"
    }
    assert plan.filtered_out == 5
    everything = {w.task.id: w.why for w in plan_run(tasks).waiting}
    assert everything["b"] == "blocked by a (failed)"
    assert everything["c"] == "blocked by ghost (no such task)"
    assert everything["d"] == "blocked by e (waiting itself)"


def test_a_limit_cuts_the_plan_and_says_so() -> None:
    tasks = [_task(f"t{i}") for i in range(4)]
    plan = plan_run(tasks, max_tasks=2)
    assert [s.task.id for s in plan.steps] == ["t0", "t1"]
    assert [(w.task.id, w.why) for w in plan.waiting[:2]] == [
        ("t2", "beyond the run's limit of 2 task(s)"),
        ("t3", "beyond the run's limit of 2 task(s)"),
    ]


_IDS = [f"t{i}" for i in range(8)]


@st.composite
def backlogs(draw: st.DrawFn) -> list[Task]:
    tasks = []
    for task_id in _IDS:
        tasks.append(
            _task(
                task_id,
                priority=draw(st.integers(0, 4)),
                status=draw(st.sampled_from(["open", "open", "retry", "closed", "failed"])),
                depends_on=draw(st.lists(st.sampled_from(_IDS), max_size=2, unique=True)),
                labels=draw(st.lists(st.sampled_from(["a", "b"]), max_size=1)),
            )
        )
    return tasks


@settings(max_examples=300, deadline=None)
@given(backlogs(), st.sampled_from([None, "a"]))
def test_the_plan_is_the_order_the_loop_takes(tasks: list[Task], label: str | None) -> None:
    taken = []
    current = list(tasks)
    while (task := pick_task(current, label=label)) is not None:
        taken.append(task.id)
        current = [
            msgspec.structs.replace(t, status="closed") if t.id == task.id else t for t in current
        ]
    plan = plan_run(tasks, label=label)
    assert [s.task.id for s in plan.steps] == taken
