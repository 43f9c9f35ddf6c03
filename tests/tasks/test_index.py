"""A backend's claims come from an index kept across changes (`cub.tasks.index`): whatever
happens to the backlog, by this backend, by hand, by another process or by an agent editing
the file, each claim takes what a fresh selection over the whole backlog would."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from cub.tasks.jsonl import JsonlBackend
from cub.tasks.selection import pick_task
from tests.tasks.conftest import read_lines, write_tasks

REPO_ROOT = Path(__file__).resolve().parents[2]


def _backlog(rnd: random.Random, count: int) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    for i in range(count):
        task: dict[str, Any] = {
            "id": f"t-{i}",
            "title": f"task {i}",
            "status": rnd.choice(["open", "open", "open", "retry", "closed", "blocked"]),
            "priority": rnd.randint(0, 4),
            "issue_type": rnd.choice(["task"] * 8 + ["epic"]),
            "labels": rnd.sample(["api", "ui", "db"], rnd.randint(0, 2)),
            "parent": rnd.choice([None, "t-0", "t-1"]),
        }
        if i and rnd.random() < 0.5:
            task["depends_on"] = [f"t-{rnd.randrange(count)}" for _ in range(rnd.randint(1, 2))]
        tasks.append(task)
    return tasks


def _claim(backend: JsonlBackend) -> str | None:
    task = backend.claim_next("run-1", epic=None, label=None)
    return task.id if task else None


def _expected(path: Path, project: Path, **filters: Any) -> str | None:
    """What a fresh selection over the backlog on disk picks (a new backend reads afresh)."""
    picked = pick_task(JsonlBackend(path, project).load(), **filters)
    return picked.id if picked else None


def test_every_claim_is_what_a_fresh_selection_picks(project: Path) -> None:
    rnd = random.Random(20261203)
    path = write_tasks(project / ".cub" / "tasks.jsonl", _backlog(rnd, 60))
    backend = JsonlBackend(path, project)
    person = JsonlBackend(path, project, by_hand=True)
    held: list[str] = []
    skipped: set[str] = set()
    for step in range(300):
        filters = {
            "epic": rnd.choice([None, None, "t-0"]),
            "label": rnd.choice([None, None, "api"]),
            "exclude": frozenset(skipped),
        }
        action = rnd.random()
        if action < 0.45 or not held:
            expected = _expected(path, project, **filters)
            task = backend.claim_next("run-1", **filters)
            assert (task.id if task else None) == expected, f"step {step}, {filters}"
            if task is not None:
                held.append(task.id)
            continue
        task_id = held.pop(rnd.randrange(len(held)))
        if action < 0.65:
            backend.close(task_id, "run-1", reason="done")
        elif action < 0.75:
            backend.release(task_id, "run-1")
        elif action < 0.85:
            backend.mark_retry(task_id, "run-1")
        elif action < 0.9:
            backend.mark_failed(task_id, "run-1", reason="no")
            skipped.add(task_id)
        else:
            # A person's change: written into the file, which the backend then reads afresh.
            person.close(task_id, "a person", reason="by hand")
            if rnd.random() < 0.5:
                person.reopen(rnd.choice([t.id for t in person.load()]))


def test_a_dependency_closed_makes_its_dependent_the_next_claim(project: Path) -> None:
    path = write_tasks(
        project / ".cub" / "tasks.jsonl",
        [
            {"id": "a", "title": "a", "priority": 3},
            {"id": "b", "title": "b", "priority": 0, "depends_on": ["a"]},
            {"id": "c", "title": "c", "priority": 2},
        ],
    )
    backend = JsonlBackend(path, project)
    assert _claim(backend) == "c"
    assert _claim(backend) == "a"
    assert _claim(backend) is None  # b waits on a
    backend.close("a", "run-1", reason="done")
    assert _claim(backend) == "b"


def test_a_task_added_to_the_file_under_a_running_backend_is_claimed(project: Path) -> None:
    path = write_tasks(
        project / ".cub" / "tasks.jsonl",
        [{"id": "a", "title": "a", "priority": 2}, {"id": "b", "title": "b", "priority": 2}],
    )
    backend = JsonlBackend(path, project)
    assert _claim(backend) == "a"
    # An agent (or an editor) appends an urgent task to the file itself.
    with path.open("a") as file:
        file.write(json.dumps({"id": "urgent", "title": "u", "priority": 0}) + "\n")
    assert _claim(backend) == "urgent"
    assert _claim(backend) == "b"


def test_a_task_closed_in_the_file_by_an_editor_is_not_claimed(project: Path) -> None:
    tasks = [
        {"id": "a", "title": "a", "priority": 0},
        {"id": "b", "title": "b", "priority": 1},
        {"id": "c", "title": "c", "priority": 2, "dependsOn": ["b"]},
        {"id": "d", "title": "d", "priority": 3},
    ]
    path = write_tasks(project / ".cub" / "tasks.jsonl", tasks)
    backend = JsonlBackend(path, project)
    assert _claim(backend) == "a"
    # The whole file rewritten with b closed, as an editor saves it (a new file, renamed).
    lines = read_lines(path)
    lines[1]["status"] = "closed"
    staged = path.with_name("tasks.jsonl.new")
    staged.write_text("".join(json.dumps(line) + "\n" for line in lines))
    os.replace(staged, path)
    # b is not handed out, and c, which waited on it, is ready at once.
    assert _claim(backend) == "c"
    assert _claim(backend) == "d"


CLAIMER = """
import sys
from pathlib import Path
from cub.tasks.jsonl import JsonlBackend

tasks_file, project = sys.argv[1:3]
task = JsonlBackend(Path(tasks_file), Path(project)).claim_next("run-2", epic=None, label=None)
print(task.id)
"""


def test_a_claim_by_another_process_is_respected(project: Path) -> None:
    path = write_tasks(
        project / ".cub" / "tasks.jsonl",
        [{"id": t, "title": t, "priority": 2} for t in ("a", "b", "c")],
    )
    backend = JsonlBackend(path, project)
    assert _claim(backend) == "a"
    other = subprocess.run(
        [sys.executable, "-c", CLAIMER, str(path), str(project)],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert other.stdout.strip() == "b"
    assert _claim(backend) == "c"
    owners = {t.id: t.assignee for t in JsonlBackend(path, project).load()}
    assert owners == {"a": "run-1", "b": "run-2", "c": "run-1"}


def test_the_tasks_of_an_epic_in_file_order(project: Path) -> None:
    path = write_tasks(
        project / ".cub" / "tasks.jsonl",
        [
            {"id": "e2", "title": "other epic", "issue_type": "epic"},
            {"id": "x", "title": "x", "parent": "e1"},
            {"id": "e1", "title": "the epic", "issue_type": "epic"},
            {"id": "y", "title": "y", "parent": "e2"},
            {"id": "z", "title": "z", "parent": "e1"},
        ],
    )
    backend = JsonlBackend(path, project)
    assert [t.id for t in backend.epic_tasks("e1")] == ["x", "e1", "z"]
    assert [t.id for t in backend.epic_tasks("no-such-epic")] == []
    # A person moves y into e1 and adds a task to it: the next look sees both.
    person = JsonlBackend(path, project, by_hand=True)
    person.edit("y", {"parent": "e1"})
    person.add("w", parent="e1", task_id="w")
    assert [t.id for t in backend.epic_tasks("e1")] == ["x", "e1", "y", "z", "w"]
    # A run's change (a claim) shows in what the prompt is given.
    backend.claim_next("run-1", epic=None, label=None, task_id="z")
    statuses = {t.id: t.status for t in backend.epic_tasks("e1")}
    assert statuses["z"] == "in_progress"


def test_a_ledger_changed_behind_an_unchanged_identity_is_read_again(project: Path) -> None:
    """The parsed ledger is kept between transactions; it is used only while the file holds
    exactly the bytes it came from, so another writer's entries are never written over, even
    when the file's identity (inode, size, times) cannot tell the change apart."""
    path = write_tasks(
        project / ".cub" / "tasks.jsonl",
        [{"id": t, "title": t, "priority": 2} for t in ("a", "b", "c")],
    )
    backend = JsonlBackend(path, project)
    assert _claim(backend) == "a"
    subprocess.run(
        [sys.executable, "-c", CLAIMER, str(path), str(project)],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=True,
        capture_output=True,
    )
    # As if the ledger's new identity were the one cached (a timestamp too coarse to differ).
    cached = backend._cached
    assert cached is not None
    backend._cached = cached._replace(identities=backend._identities())
    backend.close("a", "run-1", reason="done")
    owners = {t.id: (t.status, t.assignee) for t in JsonlBackend(path, project).load()}
    assert owners["a"][0] == "closed"
    assert owners["b"] == ("in_progress", "run-2")  # the other process's claim survived
