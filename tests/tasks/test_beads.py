from __future__ import annotations

import json
from pathlib import Path

import pytest

from cub.errors import BackendError, TaskFileError, TaskNotFound
from cub.tasks.beads import BeadsBackend
from tests.tasks.conftest import seed_beads

ISSUES: list[dict[str, object]] = [
    {"id": "bd-1", "title": "Epic", "status": "open", "priority": 1, "issue_type": "epic"},
    {
        "id": "bd-2",
        "title": "First",
        "status": "open",
        "priority": 2,
        "issue_type": "task",
        "dependencies": [{"issue_id": "bd-2", "depends_on_id": "bd-1", "type": "parent-child"}],
    },
    {
        "id": "bd-3",
        "title": "Second",
        "status": "open",
        "priority": 0,
        "issue_type": "task",
        "dependencies": [{"issue_id": "bd-3", "depends_on_id": "bd-2", "type": "blocks"}],
    },
    {"id": "bd-4", "title": "Parked", "status": "deferred", "priority": 0, "issue_type": "task"},
]


def calls(project: Path) -> list[list[str]]:
    log = project / ".beads" / "fake-bd.log"
    return [json.loads(line) for line in log.read_text().splitlines()]


def state(project: Path) -> dict[str, dict[str, object]]:
    data = json.loads((project / ".beads" / "fake-bd.json").read_text())
    return {issue["id"]: issue for issue in data["issues"]}


def test_load_maps_beads_issues(project: Path, fake_bd: Path) -> None:
    seed_beads(project, ISSUES)
    tasks = {t.id: t for t in BeadsBackend(project).load()}
    assert tasks["bd-2"].parent == "bd-1"
    assert tasks["bd-3"].depends_on == ["bd-2"]
    assert tasks["bd-4"].status == "blocked"  # beads statuses cub does not know never run
    assert calls(project) == [["list", "--json"]]


def test_claim_respects_dependencies_and_counts_attempts(project: Path, fake_bd: Path) -> None:
    seed_beads(project, ISSUES)
    store = BeadsBackend(project)
    claimed = store.claim_next("run-1", epic=None, label=None)
    assert claimed is not None and claimed.id == "bd-2"  # bd-3 waits on bd-2; bd-1 is an epic
    assert claimed.status == "in_progress" and claimed.assignee == "run-1"
    assert claimed.attempts == 1
    assert ["update", "bd-2", "--status", "in_progress", "--assignee", "run-1", "--json"] in calls(
        project
    )
    assert store.claim_next("run-2", epic=None, label=None) is None


def test_claim_confirms_dependencies_with_show(
    project: Path, fake_bd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_BD_LIST_NO_DEPS", "1")  # list without dependencies, like some bd
    seed_beads(project, ISSUES)
    claimed = BeadsBackend(project).claim_next("run-1", epic=None, label=None)
    assert claimed is not None and claimed.id == "bd-2"  # bd-3 looked ready, show said no


def test_release_retry_fail_close(project: Path, fake_bd: Path) -> None:
    seed_beads(project, ISSUES)
    store = BeadsBackend(project)
    store.claim_next("run-1", epic=None, label=None)
    assert store.release("bd-2", "someone-else", note="x") is False
    assert store.release("bd-2", "run-1", note="interrupted") is True
    issue = state(project)["bd-2"]
    assert issue["status"] == "open" and "assignee" not in issue
    assert str(issue["notes"]).endswith("interrupted")

    store.claim_next("run-1", epic=None, label=None, task_id="bd-2")
    assert store.mark_retry("bd-2", "run-1", note="attempt 2 failed") is True
    assert state(project)["bd-2"]["status"] == "open"
    assert store.get("bd-2").attempts == 2  # kept by cub beside beads

    store.claim_next("run-1", epic=None, label=None, task_id="bd-2")
    assert store.mark_failed("bd-2", "run-1", reason="no attempts left") is True
    assert state(project)["bd-2"]["status"] == "blocked"
    assert store.get("bd-2").status == "failed"

    closed = store.close("bd-2", "run-1", reason="fixed by hand")
    assert closed.status == "closed"
    assert ["close", "bd-2", "--reason", "fixed by hand", "--json"] in calls(project)


def test_add_and_get(project: Path, fake_bd: Path) -> None:
    seed_beads(project, ISSUES)
    store = BeadsBackend(project)
    added = store.add(
        "New", description="d", priority=1, labels=["a", "b"], depends_on=["bd-3"], parent="bd-1"
    )
    assert added.id == "bd-5"
    assert added.depends_on == ["bd-3"] and added.parent == "bd-1"
    assert added.labels == ["a", "b"] and added.priority == 1
    assert store.get("bd-5").title == "New"
    with pytest.raises(TaskNotFound):
        store.get("bd-99")


def test_bd_errors_become_backend_errors(
    project: Path, fake_bd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_beads(project, ISSUES)
    (fake_bd / "bd").write_text("#!/bin/sh\necho 'database is locked' >&2\nexit 3\n")
    with pytest.raises(BackendError) as caught:
        BeadsBackend(project).load()
    assert str(caught.value) == "`bd list --json` failed (exit 3): database is locked"


def test_an_issue_id_that_cannot_be_a_directory_name_is_refused_on_reading(
    project: Path, fake_bd: Path
) -> None:
    seed_beads(project, [*ISSUES, {"id": "../escape", "title": "Bad", "status": "open"}])
    with pytest.raises(TaskFileError) as caught:
        BeadsBackend(project).load()
    assert caught.value.reason_code == "invalid_task_file"
    assert str(caught.value).startswith("beads issue: invalid task id '../escape'")


def test_missing_bd(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BackendError, match="not installed or not on PATH"):
        BeadsBackend(project).load()
