"""A ledger that has grown past `FOLD_AT` entries keeps the older ones in its archive: each
change then rewrites only the entries changed lately, and every reader still sees them all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cub.tasks.jsonl import JsonlBackend
from cub.tasks.ledger import FOLD_AT, Ledger, archive_path, ledgers_hold_claims
from tests.helpers.cli import write_tasks
from tests.helpers.git import make_repo

COUNT = FOLD_AT + 40


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "proj")


def _entries(path: Path) -> dict[str, dict[str, object]]:
    tasks: dict[str, dict[str, object]] = json.loads(path.read_bytes()).get("tasks", {})
    return tasks


def _run_through(project: Path) -> tuple[Path, JsonlBackend]:
    """A backlog of COUNT tasks, each claimed and closed by a run."""
    path = write_tasks(project, [{"id": f"t-{i}", "title": f"task {i}"} for i in range(COUNT)])
    run = JsonlBackend(path, project)
    while (task := run.claim_next("run-1", epic=None, label=None)) is not None:
        run.close(task.id, "run-1", "done")
    return path, run


def test_older_entries_are_folded_into_the_archive_and_still_read(project: Path) -> None:
    path, run = _run_through(project)
    archived, recent = _entries(archive_path(run.ledger_path)), _entries(run.ledger_path)
    assert len(recent) <= FOLD_AT  # each change rewrote at most this many entries
    assert len(archived) + len(recent) >= COUNT
    assert set(archived) | set(recent) == {f"t-{i}" for i in range(COUNT)}
    fresh = JsonlBackend(path, project)  # another process, say `cub tasks list`
    assert {t.status for t in fresh.load()} == {"closed"}
    assert {t.attempts for t in fresh.load()} == {1}


def test_a_change_to_an_archived_task_wins_over_its_archived_entry(project: Path) -> None:
    path, run = _run_through(project)
    archived = sorted(_entries(archive_path(run.ledger_path)))[0]
    run.fail_closed(archived, "its work did not merge")
    assert JsonlBackend(path, project).get(archived).status == "failed"
    # A person's close writes the task and its entry into the file: the archived entry no
    # longer applies, so the file says how the task stands.
    JsonlBackend(path, project, by_hand=True).close(archived, "cli", "not needed")
    assert archived not in Ledger.read(run.ledger_path, "x").tasks
    line = next(json.loads(raw) for raw in path.read_text().splitlines() if archived in raw)
    assert (line["status"], line["close_reason"]) == ("closed", "not needed")
    assert JsonlBackend(path, project).get(archived).status == "closed"


def test_a_crash_between_the_archive_and_the_ledger_file_reads_the_same(project: Path) -> None:
    path, run = _run_through(project)
    before = {t.id: (t.status, t.attempts) for t in JsonlBackend(path, project).load()}
    # As if the last fold had written the archive and died before emptying the ledger file:
    # the ledger file's entries are then in both.
    ledger = Ledger.read(run.ledger_path, "x")
    folded = {**_entries(archive_path(run.ledger_path)), **_entries(run.ledger_path)}
    archive = archive_path(run.ledger_path)
    archive.write_text(json.dumps({"task_file": ".cub/tasks.jsonl", "tasks": folded}))
    assert Ledger.read(run.ledger_path, "x").tasks.keys() == ledger.tasks.keys()
    after = {t.id: (t.status, t.attempts) for t in JsonlBackend(path, project).load()}
    assert after == before


def test_claims_in_the_archive_are_found(project: Path) -> None:
    path = write_tasks(project, [{"id": f"t-{i}", "title": f"task {i}"} for i in range(COUNT)])
    run = JsonlBackend(path, project)
    run.claim_next("run-1", epic=None, label=None)  # t-0, held from here on
    while (task := run.claim_next("run-1", epic=None, label=None)) is not None:
        run.close(task.id, "run-1", "done")
    assert "t-0" in _entries(archive_path(run.ledger_path))  # folded while claimed
    assert "t-0" not in _entries(run.ledger_path)
    assert ledgers_hold_claims(project)
    assert run.may_hold_claims()
    assert JsonlBackend(path, project).get("t-0").status == "in_progress"
