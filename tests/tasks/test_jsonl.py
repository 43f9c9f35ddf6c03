from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from cub.errors import TaskFileError, TaskNotFound
from cub.tasks.jsonl import JsonlBackend
from tests.tasks.conftest import read_lines, write_tasks


@pytest.fixture
def tasks_file(project: Path) -> Path:
    return project / ".cub" / "tasks.jsonl"


def backend(project: Path, tasks_file: Path, *, by_hand: bool = False) -> JsonlBackend:
    return JsonlBackend(tasks_file, project, by_hand=by_hand)


def load_error(project: Path, tasks_file: Path, text: str) -> str:
    tasks_file.write_text(text)
    with pytest.raises(TaskFileError) as caught:
        backend(project, tasks_file).load()
    assert caught.value.reason_code == "invalid_task_file"
    return str(caught.value)


GOOD = '{"id": "a", "title": "A"}\n'


def test_invalid_json_names_file_and_line(project: Path, tasks_file: Path) -> None:
    text = GOOD + "\n" + '{"id": "b", "title": }\n'
    assert load_error(project, tasks_file, text).startswith(".cub/tasks.jsonl:3: invalid JSON: ")


def test_bad_field_names_file_line_and_path(project: Path, tasks_file: Path) -> None:
    message = load_error(project, tasks_file, GOOD + '{"id": "b", "title": "B", "priority": 9}\n')
    assert message == ".cub/tasks.jsonl:2: $.priority: Expected int <= 4, got 9"
    message = load_error(project, tasks_file, GOOD + '{"id": "b", "title": "B", "status": "wip"}\n')
    assert message.startswith(".cub/tasks.jsonl:2: $.status: expected one of open, in_progress")
    message = load_error(project, tasks_file, '{"title": "no id"}\n')
    assert message == ".cub/tasks.jsonl:1: $: missing required key 'id'"


@pytest.mark.parametrize("bad_id", ["../x", "a/b", "..", "", "."])
def test_bad_task_id_names_file_and_line(project: Path, tasks_file: Path, bad_id: str) -> None:
    good = "".join(json.dumps({"id": f"ok-{n}", "title": "fine"}) + "\n" for n in range(3))
    message = load_error(project, tasks_file, good + json.dumps({"id": bad_id, "title": "x"}))
    assert message.startswith(f".cub/tasks.jsonl:4: invalid task id {bad_id!r}: ")


def test_duplicate_ids(project: Path, tasks_file: Path) -> None:
    message = load_error(project, tasks_file, GOOD + '{"id": "b", "title": "B"}\n' + GOOD)
    assert message == ".cub/tasks.jsonl:3: duplicate task id 'a' (first on line 1)"


def test_blank_lines_ignored_and_unknown_dependency_reported(
    project: Path, tasks_file: Path
) -> None:
    tasks_file.write_text('\n   \n{"id": "a", "title": "A", "dependsOn": ["ghost"]}\n\n')
    store = backend(project, tasks_file)
    assert [t.id for t in store.load()] == ["a"]
    assert store.problems() == [
        ".cub/tasks.jsonl:3: task 'a' depends on unknown task 'ghost' (never ready)"
    ]


def test_missing_file_is_empty(project: Path, tasks_file: Path) -> None:
    assert backend(project, tasks_file).load() == []


def test_unknown_keys_and_untouched_lines_survive_byte_for_byte(
    project: Path, tasks_file: Path
) -> None:
    untouched = '{ "id" : "b",  "title": "B", "weird":  [1, 2.50, {"z": null}] }'
    changed = (
        '{"id":"a","title":"A","x_custom":{"nested":["keep",1]},"priority":"P1","depends_on":[]}'
    )
    tasks_file.write_text(f"{changed}\n\n{untouched}\n")
    as_written = tasks_file.read_bytes()
    claimed = backend(project, tasks_file).claim_next("run-1", epic=None, label=None)
    assert claimed is not None and claimed.id == "a"
    assert tasks_file.read_bytes() == as_written  # a run's claim is kept in the ledger

    backend(project, tasks_file, by_hand=True).close("a", "cli", "done by hand")
    raw = tasks_file.read_bytes()
    lines = raw.split(b"\n")
    assert lines[1] == b"" and lines[2] == untouched.encode()  # other lines exactly as they were
    assert b'"x_custom":{"nested":["keep",1]}' in lines[0]
    assert b'"priority":"P1"' in lines[0]  # the original spelling of the value is kept
    assert b'"depends_on":[]' in lines[0] and b"dependsOn" not in lines[0]
    first = json.loads(lines[0])
    assert list(first)[:5] == ["id", "title", "x_custom", "priority", "depends_on"]
    # The change by hand takes what runs did to the task into the file with it.
    assert first["status"] == "closed" and first["close_reason"] == "done by hand"
    assert first["assignee"] == "run-1" and first["attempts"] == 1


def test_dependency_spelling_kept_and_followed_by_new_tasks(
    project: Path, tasks_file: Path
) -> None:
    write_tasks(
        tasks_file,
        [{"id": "t-1", "title": "A"}, {"id": "t-2", "title": "B", "depends_on": ["t-1"]}],
    )
    store = backend(project, tasks_file)
    store.close("t-2", "run", "done")
    added = store.add("C", depends_on=["t-1"])
    assert added.id == "t-3"
    lines = read_lines(tasks_file)
    assert lines[1]["depends_on"] == ["t-1"] and "dependsOn" not in lines[1]
    assert lines[2]["depends_on"] == ["t-1"]
    write_tasks(tasks_file, [{"id": "t-1", "title": "A", "dependsOn": []}])
    store.add("D", depends_on=["t-1"])
    assert read_lines(tasks_file)[1]["dependsOn"] == ["t-1"]


def test_claim_selects_in_order_and_counts_attempts(project: Path, tasks_file: Path) -> None:
    write_tasks(
        tasks_file,
        [
            {"id": "low", "title": "low", "priority": 3},
            {"id": "high", "title": "high", "priority": "P0"},
            {"id": "again", "title": "again", "priority": 0, "status": "retry", "attempts": 1},
        ],
    )
    store = backend(project, tasks_file)
    order = []
    while (claimed := store.claim_next("r", epic=None, label=None)) is not None:
        order.append((claimed.id, claimed.attempts))
    assert order == [("high", 1), ("again", 2), ("low", 1)]
    for task in store.load():
        assert task.status == "in_progress" and task.assignee == "r"
        assert task.updated_at is not None and task.updated_at.endswith("+00:00")


def test_claim_by_id_filter_and_exclude(project: Path, tasks_file: Path) -> None:
    write_tasks(
        tasks_file,
        [
            {"id": "a", "title": "A", "labels": ["ui"]},
            {"id": "b", "title": "B", "parent": "e"},
            {"id": "c", "title": "C"},
        ],
    )
    store = backend(project, tasks_file)
    assert store.claim_next("r", epic="e", label=None).id == "b"  # type: ignore[union-attr]
    assert store.claim_next("r", epic=None, label="ui", exclude={"a"}) is None
    assert store.claim_next("r", epic=None, label=None, task_id="c").id == "c"  # type: ignore[union-attr]
    assert store.claim_next("r", epic=None, label=None, task_id="c") is None  # already taken
    with pytest.raises(TaskNotFound):
        store.claim_next("r", epic=None, label=None, task_id="zz")


def test_release_only_by_the_claiming_run(project: Path, tasks_file: Path) -> None:
    write_tasks(tasks_file, [{"id": "a", "title": "A"}])
    store = backend(project, tasks_file)
    store.claim_next("run-1", epic=None, label=None)
    assert store.release("a", "run-2", note="not mine") is False
    assert store.get("a").status == "in_progress"
    assert store.release("a", "run-1", note="interrupted") is True
    task = store.get("a")
    assert task.status == "open" and task.assignee is None and task.attempts == 1
    assert task.notes is not None and task.notes.endswith("interrupted")
    assert "assignee" not in read_lines(tasks_file)[0]
    assert store.release("a", "run-1", note=None) is False  # no longer claimed


def test_mark_retry_and_failed(project: Path, tasks_file: Path) -> None:
    write_tasks(tasks_file, [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}])
    store = backend(project, tasks_file)
    store.claim_next("r", epic=None, label=None)
    assert store.mark_retry("a", "other", note="x") is False
    assert store.mark_retry("a", "r", note="attempt 1 failed") is True
    assert store.get("a").status == "retry"
    store.claim_next("r", epic=None, label=None, task_id="a")
    assert store.get("a").attempts == 2
    assert store.mark_failed("a", "r", reason="attempts exhausted") is True
    failed = store.get("a")
    assert failed.status == "failed" and failed.assignee is None
    assert "failed: attempts exhausted" in (failed.notes or "")
    assert failed.notes is not None and failed.notes.count("\n") == 1  # appended, not replaced
    assert store.mark_failed("b", "r", reason="never claimed") is False
    assert store.get("b").status == "open"


def test_close(project: Path, tasks_file: Path) -> None:
    write_tasks(tasks_file, [{"id": "a", "title": "A"}])
    store = backend(project, tasks_file)
    store.claim_next("r", epic=None, label=None)
    closed = store.close("a", "r", reason="done in abc..def")
    assert closed.status == "closed" and closed.close_reason == "done in abc..def"
    assert closed.closed_at is not None and closed.closed_at.endswith("+00:00")
    with pytest.raises(TaskNotFound):
        store.close("zz", "r", reason="x")


def test_add_and_update_notes(project: Path, tasks_file: Path) -> None:
    tasks_file.write_text("")
    store = backend(project, tasks_file)
    first = store.add(
        "First", description="do it", priority=1, labels=["ui"], acceptance_criteria=["works"]
    )
    second = store.add("Second", depends_on=[first.id], parent="epic-1", issue_type="bug")
    assert (first.id, second.id) == ("task-1", "task-2")
    assert second.depends_on == ["task-1"] and second.parent == "epic-1"
    store.update_notes("task-1", "hello")
    store.update_notes("task-1", "again")
    notes = store.get("task-1").notes or ""
    assert notes.splitlines()[0].endswith("hello") and notes.splitlines()[1].endswith("again")
    with pytest.raises(ValueError, match="invalid task id"):
        store.add("bad", depends_on=["../x"])


def test_rewrite_keeps_file_mode(project: Path, tasks_file: Path) -> None:
    write_tasks(tasks_file, [{"id": "a", "title": "A"}])
    os.chmod(tasks_file, 0o664)
    backend(project, tasks_file, by_hand=True).close("a", "cli", "done")
    assert read_lines(tasks_file)[0]["status"] == "closed"
    assert tasks_file.stat().st_mode & 0o777 == 0o664


def test_no_write_when_nothing_changes(project: Path, tasks_file: Path) -> None:
    write_tasks(tasks_file, [{"id": "a", "title": "A", "status": "closed"}])
    before = tasks_file.stat().st_mtime_ns
    assert backend(project, tasks_file).claim_next("r", epic=None, label=None) is None
    assert tasks_file.stat().st_mtime_ns == before


def test_ten_thousand_tasks_load_and_select_fast(project: Path, tasks_file: Path) -> None:
    from cub.tasks.selection import ready_tasks

    write_tasks(
        tasks_file,
        (
            {
                "id": f"cub-{i}",
                "title": f"task {i}",
                "priority": i % 5,
                "labels": ["a", f"l{i % 7}"],
                "dependsOn": [f"cub-{i - 1}"] if i % 10 else [],
                "description": "x" * 80,
                "status": "closed" if i < 2000 else "open",
            }
            for i in range(10_000)
        ),
    )
    store = backend(project, tasks_file)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        ready = ready_tasks(store.load(), label="l3")
        best = min(best, time.perf_counter() - start)
    assert ready
    assert best < 0.25  # typically ~30 ms; generous for slow machines


# --- the parsed document kept between changes ------------------------------------------------


def test_a_change_by_another_process_between_two_of_ours_is_not_lost(
    project: Path, tasks_file: Path
) -> None:
    write_tasks(tasks_file, [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}])
    ours, theirs = backend(project, tasks_file), backend(project, tasks_file)
    claimed = ours.claim_next("run-1", epic=None, label=None)
    assert claimed is not None and claimed.id == "a"

    theirs.add("C", task_id="c")  # replaces the file behind our kept document
    ours.close("a", "run-1", reason="done")

    assert [line["id"] for line in read_lines(tasks_file)] == ["a", "b", "c"]
    for reader in (ours, backend(project, tasks_file)):
        assert [(t.id, t.status) for t in reader.load()] == [
            ("a", "closed"),
            ("b", "open"),
            ("c", "open"),
        ]


def test_an_edit_in_place_of_the_same_size_is_seen(project: Path, tasks_file: Path) -> None:
    write_tasks(tasks_file, [{"id": "a", "title": "A", "status": "open"}])
    store = backend(project, tasks_file)
    assert store.load()[0].status == "open"
    time.sleep(0.02)  # past the coarsest file-time granularity a kernel may use
    text = tasks_file.read_text()
    edited = text.replace('"A"', '"B"')
    assert len(edited) == len(text)
    with open(tasks_file, "r+") as f:  # same inode, same size: only the times differ
        f.write(edited)
    assert store.load()[0].title == "B"


def test_a_change_that_fails_midway_leaves_nothing_behind(project: Path, tasks_file: Path) -> None:
    from cub.tasks import changes

    write_tasks(tasks_file, [{"id": "a", "title": "A"}])
    store = backend(project, tasks_file)
    task = store.load()[0]
    with pytest.raises(RuntimeError), store._transaction() as document:
        document.update(0, changes.claim(task, "run-1"))
        raise RuntimeError("interrupted before the write")

    assert store.load()[0].status == "open"
    assert read_lines(tasks_file)[0].get("status", "open") == "open"


def test_loaded_lists_do_not_change_under_the_caller(project: Path, tasks_file: Path) -> None:
    write_tasks(tasks_file, [{"id": "a", "title": "A"}])
    store = backend(project, tasks_file)
    before = store.load()
    store.claim_next("run-1", epic=None, label=None)

    assert before[0].status == "open"
    assert store.load()[0].status == "in_progress"
