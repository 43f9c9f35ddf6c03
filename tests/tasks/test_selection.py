from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cub.errors import TaskNotFound
from cub.tasks.integrity import dependency_problems
from cub.tasks.model import Task
from cub.tasks.selection import explain_empty, pick_task, ready_tasks


def task(task_id: str, **fields: Any) -> Task:
    return Task(id=task_id, title=f"title {task_id}", **fields)


def ids(tasks: list[Task]) -> list[str]:
    return [t.id for t in tasks]


def test_order_priority_then_fresh_before_retry_then_file_order() -> None:
    tasks = [
        task("p2-a", priority=2),
        task("p1-retry", priority=1, status="retry"),
        task("p1-a", priority=1),
        task("p0", priority=0),
        task("p1-b", priority=1),
        task("p2-retry", priority=2, status="retry"),
    ]
    assert ids(ready_tasks(tasks)) == ["p0", "p1-a", "p1-b", "p1-retry", "p2-a", "p2-retry"]


def test_only_open_and_retry_tasks_that_are_not_epics_or_gates() -> None:
    tasks = [
        task("open"),
        task("retry", status="retry"),
        task("busy", status="in_progress"),
        task("done", status="closed"),
        task("bad", status="failed"),
        task("blocked", status="blocked"),
        task("epic", issue_type="epic"),
        task("gate", issue_type="gate"),
        task("bug", issue_type="bug"),
    ]
    assert ids(ready_tasks(tasks)) == ["open", "bug", "retry"]


def test_dependencies_must_all_be_closed() -> None:
    tasks = [
        task("done", status="closed"),
        task("open"),
        task("ok", depends_on=["done"]),
        task("waits", depends_on=["done", "open"]),
        task("unknown", depends_on=["ghost"]),
        task("on-failed", depends_on=["bad"]),
        task("bad", status="failed"),
    ]
    assert ids(ready_tasks(tasks)) == ["open", "ok"]


def test_epic_and_label_filters() -> None:
    tasks = [
        task("e1", issue_type="epic"),
        task("a", parent="e1", labels=["ui"]),
        task("b", parent="e1", labels=["api"]),
        task("c", parent="e2", labels=["ui"]),
        task("d", labels=["ui"]),
    ]
    assert ids(ready_tasks(tasks, epic="e1")) == ["a", "b"]
    assert ids(ready_tasks(tasks, label="ui")) == ["a", "c", "d"]
    assert ids(ready_tasks(tasks, epic="e1", label="ui")) == ["a"]
    assert ready_tasks(tasks, epic="nope") == []


def test_pick_task_by_id_and_exclude() -> None:
    tasks = [
        task("a"),
        task("b", status="failed"),
        task("c", status="closed"),
        task("e", issue_type="epic"),
    ]
    assert pick_task(tasks).id == "a"  # type: ignore[union-attr]
    assert pick_task(tasks, exclude={"a"}) is None
    assert pick_task(tasks, task_id="b").id == "b"  # type: ignore[union-attr]
    assert pick_task(tasks, task_id="c") is None
    assert pick_task(tasks, task_id="e") is None
    with pytest.raises(TaskNotFound):
        pick_task(tasks, task_id="zz")


def test_explain_all_done() -> None:
    tasks = [task("a", status="closed"), task("b", status="closed"), task("e", issue_type="epic")]
    code, sentence = explain_empty(tasks)
    assert code == "all_tasks_done"
    assert "all 2 tasks are done" in sentence


def test_explain_all_done_mentions_failures() -> None:
    code, sentence = explain_empty([task("a", status="closed"), task("b", status="failed")])
    assert code == "all_tasks_done"
    assert "1 failed" in sentence


def test_explain_empty_backlog() -> None:
    assert explain_empty([]) == ("all_tasks_done", "the backlog has no tasks")


def test_explain_waiting_on_dependencies_names_them() -> None:
    tasks = [
        task("a", status="failed"),
        task("b", depends_on=["a"]),
        task("c", depends_on=["ghost"]),
        task("d", status="closed"),
    ]
    code, sentence = explain_empty(tasks)
    assert code == "no_ready_tasks"
    assert "2 tasks are waiting on unmet dependencies" in sentence
    assert "b on a (failed)" in sentence
    assert "c on ghost (unknown id)" in sentence


def test_explain_in_progress_elsewhere() -> None:
    code, sentence = explain_empty([task("a", status="in_progress", assignee="run-7")])
    assert code == "no_ready_tasks"
    assert "1 task is in progress elsewhere (a by run-7)" in sentence


def test_explain_filtered_out() -> None:
    tasks = [task("a", labels=["api"]), task("b", parent="e1")]
    code, sentence = explain_empty(tasks, label="ui")
    assert code == "filtered_out"
    assert "no task matches --label ui" in sentence
    assert "2 other tasks are ready" in sentence
    code, sentence = explain_empty(tasks, epic="e9", label="api")
    assert code == "filtered_out"
    assert "--epic e9 and --label api" in sentence


def test_explain_filter_selection_done_is_all_done() -> None:
    tasks = [task("a", parent="e1", status="closed"), task("b")]
    code, sentence = explain_empty(tasks, epic="e1")
    assert code == "all_tasks_done"
    assert "--epic e1" in sentence and "1 other task is ready" in sentence


def test_dependency_problems() -> None:
    tasks = [
        task("a", depends_on=["ghost"]),
        task("b", depends_on=["c"]),
        task("c", depends_on=["b"]),
        task("d", depends_on=["d"], parent="nowhere"),
    ]
    messages = [message for _, message in dependency_problems(tasks)]
    assert any("unknown task 'ghost'" in m for m in messages)
    assert any("depends on itself" in m for m in messages)
    assert any("unknown parent 'nowhere'" in m for m in messages)
    assert any("cycle" in m and "b -> c -> b" in m for m in messages)


def test_selection_is_linear_on_long_chains() -> None:
    n = 10_000
    # Each task depends on the one before it: only the first two (closed + next) matter.
    tasks = [task("t0", status="closed")] + [
        task(f"t{i}", depends_on=[f"t{i - 1}"], labels=["x"] if i % 2 else []) for i in range(1, n)
    ]
    start = time.perf_counter()
    ready = ready_tasks(tasks)
    explain_empty(tasks, label="nope")
    dependency_problems(tasks)
    elapsed = time.perf_counter() - start
    assert ids(ready) == ["t1"]
    assert elapsed < 0.5


_statuses = st.sampled_from(["open", "retry", "in_progress", "closed", "failed", "blocked"])


@st.composite
def backlogs(draw: st.DrawFn) -> list[Task]:
    size = draw(st.integers(min_value=0, max_value=25))
    names = [f"t{i}" for i in range(size)]
    return [
        task(
            name,
            status=draw(_statuses),
            priority=draw(st.integers(min_value=0, max_value=4)),
            issue_type=draw(st.sampled_from(["task", "bug", "epic", "gate"])),
            depends_on=draw(st.lists(st.sampled_from([*names, "ghost"]), max_size=3)),
            labels=draw(st.lists(st.sampled_from(["a", "b"]), max_size=2, unique=True)),
        )
        for name in names
    ]


@given(backlogs(), st.sampled_from([None, "a", "b"]))
def test_ready_tasks_properties(tasks: list[Task], label: str | None) -> None:
    status = {t.id: t.status for t in tasks}
    ready = ready_tasks(tasks, label=label)
    eligible = {
        t.id
        for t in tasks
        if t.status in ("open", "retry")
        and t.issue_type in ("task", "bug")
        and all(status.get(d) == "closed" for d in t.depends_on)
        and (label is None or label in t.labels)
    }
    assert {t.id for t in ready} == eligible
    keys = [(t.priority, t.status == "retry", tasks.index(t)) for t in ready]
    assert keys == sorted(keys)
    if not ready:
        code, sentence = explain_empty(tasks, label=label)
        assert code in ("all_tasks_done", "no_ready_tasks", "filtered_out") and sentence
