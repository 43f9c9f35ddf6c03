"""Runs never write the task file: what they do to tasks is kept in the backlog's ledger and laid
over the file on every read. A person's edit of a key wins for that key; a change by hand takes
the task's ledger entry into the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cub.records.location import state_dir
from cub.tasks.jsonl import JsonlBackend
from cub.tasks.prd import PrdBackend
from tests.helpers.cli import write_tasks
from tests.helpers.git import make_repo


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "proj")


def _tasks(project: Path) -> Path:
    return write_tasks(
        project,
        [{"id": "a", "title": "A", "x": {"keep": 1}}, {"id": "b", "title": "B", "status": "open"}],
    )


def test_what_runs_do_is_in_the_ledger_and_every_reader_sees_it(project: Path) -> None:
    path = _tasks(project)
    as_written = path.read_bytes()
    run = JsonlBackend(path, project)
    claimed = run.claim_next("run-1", epic=None, label=None)
    assert claimed is not None and claimed.id == "a"
    run.close("a", "run-1", "done")
    assert path.read_bytes() == as_written
    ledgers = list((state_dir(project) / "backlog").glob("*.json"))
    assert len(ledgers) == 1
    assert json.loads(ledgers[0].read_bytes())["tasks"]["a"]["status"] == {"value": "closed"}
    other = JsonlBackend(path, project)  # another process, say `cub tasks list`
    task = other.get("a")
    assert (task.status, task.attempts, task.close_reason) == ("closed", 1, "done")


def test_a_claim_given_back_leaves_only_its_time(project: Path) -> None:
    path = write_tasks(project, [{"id": "a", "title": "A", "status": "open", "attempts": 0}])
    run = JsonlBackend(path, project)
    run.claim_next("run-1", epic=None, label=None)
    assert set(json.loads(run.ledger_path.read_bytes())["tasks"]["a"]) == {
        "status",
        "assignee",
        "attempts",
        "updated_at",
    }
    run.release("a", "run-1", uncount=True)
    # Status, owner and attempts are back to what the file says: nothing kept for them.
    assert set(json.loads(run.ledger_path.read_bytes())["tasks"]["a"]) == {"updated_at"}


def test_a_persons_edit_of_a_key_wins_over_what_runs_recorded(project: Path) -> None:
    path = _tasks(project)
    run = JsonlBackend(path, project)
    run.claim_next("run-1", epic=None, label=None)
    run.close("a", "run-1", "done")
    # Reopened by hand in an editor (the file never said "status" for a) and retitled.
    lines = path.read_text().splitlines()
    lines[0] = json.dumps({"id": "a", "title": "A again", "status": "open", "x": {"keep": 1}})
    path.write_text("\n".join(lines) + "\n")
    task = JsonlBackend(path, project).get("a")
    assert (task.status, task.title, task.attempts) == ("open", "A again", 1)
    assert task.close_reason == "done"  # a key the person did not touch stays as runs left it


def test_a_task_removed_from_the_file_takes_its_entry_with_it(project: Path) -> None:
    path = _tasks(project)
    run = JsonlBackend(path, project)
    run.claim_next("run-1", epic=None, label=None)
    path.write_text(path.read_text().splitlines()[1] + "\n")
    assert [t.id for t in JsonlBackend(path, project).load()] == ["b"]
    path.write_text(path.read_text() + json.dumps({"id": "a", "title": "A"}) + "\n")
    task = JsonlBackend(path, project).get("a")
    assert task.status == "in_progress"  # the same key values as before: it applies again


def test_a_close_by_hand_writes_the_task_and_its_ledger_entry_into_the_file(
    project: Path,
) -> None:
    path = _tasks(project)
    run = JsonlBackend(path, project)
    run.claim_next("run-1", epic=None, label=None)
    run.mark_retry("a", "run-1", note="try again")
    JsonlBackend(path, project, by_hand=True).close("a", "cli", "not needed")
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first["status"] == "closed" and first["close_reason"] == "not needed"
    assert first["attempts"] == 1 and "try again" in first["notes"] and first["x"] == {"keep": 1}
    assert second == {"id": "b", "title": "B", "status": "open"}  # untouched, byte for byte
    assert "a" not in json.loads(run.ledger_path.read_bytes()).get("tasks", {})
    assert run.get("a").status == "closed"


def test_the_ledger_of_a_prd_file_works_the_same(project: Path) -> None:
    path = project / "prd.json"
    document = {"project": "p", "tasks": [{"id": "p-1", "title": "One"}]}
    path.write_text(json.dumps(document))
    run = PrdBackend(path, project)
    assert run.claim_next("r", epic=None, label=None) is not None
    run.close("p-1", "r", "done")
    assert json.loads(path.read_text()) == document
    assert PrdBackend(path, project).get("p-1").status == "closed"


def test_a_snapshot_is_the_file_with_the_ledger_laid_over_it(project: Path) -> None:
    path = _tasks(project)
    run = JsonlBackend(path, project)
    run.claim_next("run-1", epic=None, label=None)
    run.close("a", "run-1", "done")
    copy = project / "copy.jsonl"
    copy.write_bytes(run.snapshot_bytes())
    elsewhere = make_repo(project.parent / "elsewhere")
    assert JsonlBackend(copy, elsewhere).get("a").status == "closed"
