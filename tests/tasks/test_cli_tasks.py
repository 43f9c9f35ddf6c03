from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers.cli import run_cub
from tests.tasks.conftest import read_lines, write_tasks


def cub_tasks(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `cub tasks --project-dir PROJECT ARGS`, run from the project."""
    return run_cub(["tasks", "--project-dir", str(project), *args], project)


@pytest.fixture
def backlog(project: Path) -> Path:
    return write_tasks(
        project / ".cub" / "tasks.jsonl",
        [
            {
                "id": "t-1",
                "title": "Set up",
                "priority": 1,
                "labels": ["infra"],
                "status": "closed",
            },
            {
                "id": "t-2",
                "title": "Build",
                "priority": "P0",
                "dependsOn": ["t-1"],
                "acceptance_criteria": ["it builds"],
            },
            {"id": "t-3", "title": "Ship", "dependsOn": ["t-2"], "labels": ["release"]},
        ],
    )


def test_list(project: Path, backlog: Path) -> None:
    result = cub_tasks(project, "list")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["t-1", "t-2", "t-3"]
    assert "P0" in lines[1] and "[infra]" in lines[0]
    closed = cub_tasks(project, "list", "--status", "closed", "--json")
    assert [t["id"] for t in json.loads(closed.stdout)] == ["t-1"]


def test_ready(project: Path, backlog: Path) -> None:
    result = cub_tasks(project, "ready", "--json")
    assert result.returncode == 0
    assert [t["id"] for t in json.loads(result.stdout)] == ["t-2"]
    filtered = cub_tasks(project, "ready", "--label", "release")
    assert filtered.returncode == 0
    assert "t-3 on t-2 (open)" in filtered.stdout


def test_show(project: Path, backlog: Path) -> None:
    result = cub_tasks(project, "show", "t-2")
    assert result.returncode == 0
    assert "priority:     P0" in result.stdout
    assert "depends on:   t-1 (closed)" in result.stdout
    assert "  - it builds" in result.stdout
    as_json = json.loads(cub_tasks(project, "show", "t-2", "--json").stdout)
    assert as_json["priority"] == 0 and as_json["depends_on"] == ["t-1"]
    missing = cub_tasks(project, "show", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip() == ("cub tasks: no task with id 'nope' in jsonl .cub/tasks.jsonl")


def test_add(project: Path, backlog: Path) -> None:
    result = cub_tasks(
        project,
        "add",
        "Write docs",
        "--description",
        "all of them",
        "--priority",
        "P3",
        "--type",
        "chore",
        "-l",
        "docs,easy",
        "--depends-on",
        "t-3",
        "--parent",
        "t-1",
    )
    assert result.returncode == 0 and result.stdout.strip() == "t-4"
    added = read_lines(backlog)[-1]
    assert added["title"] == "Write docs" and added["priority"] == 3
    assert added["labels"] == ["docs", "easy"] and added["dependsOn"] == ["t-3"]
    assert added["issue_type"] == "chore" and added["parent"] == "t-1"
    before = backlog.read_bytes()
    bad = cub_tasks(project, "add", "x", "--priority", "urgent")
    assert bad.returncode == 2 and "P0-P4" in bad.stderr
    bad_dep = cub_tasks(project, "add", "x", "--depends-on", "../etc")
    assert bad_dep.returncode == 2 and "invalid task id '../etc'" in bad_dep.stderr
    unknown = cub_tasks(project, "add", "x", "--depends-on", "proj-2")
    assert unknown.returncode == 2
    assert unknown.stderr == (
        "cub tasks: --depends-on: no task with id 'proj-2' (it would never be ready)\n"
    )
    assert backlog.read_bytes() == before  # nothing added by a refused command


def test_short_flags_mean_the_same_in_every_command(project: Path, backlog: Path) -> None:
    # -t, -p, -d and -r are `cub run`'s --task, --parallel, --direct and --ready.
    for flag in ("-t", "-p", "-d"):
        assert cub_tasks(project, "add", "x", flag, "1").returncode == 2
    assert cub_tasks(project, "close", "t-3", "-r", "why").returncode == 2
    labelled = cub_tasks(project, "add", "x", "-l", "docs")
    assert labelled.returncode == 0 and read_lines(backlog)[-1]["labels"] == ["docs"]


def test_edit(project: Path, backlog: Path) -> None:
    result = cub_tasks(project, "edit", "t-3", "--title", "Ship it", "--priority", "0", "-l", "a,b")
    assert result.returncode == 0 and result.stdout.strip() == "edited t-3: Ship it"
    third = read_lines(backlog)[2]
    assert (third["title"], third["priority"], third["labels"]) == ("Ship it", 0, ["a", "b"])
    assert third["dependsOn"] == ["t-2"]  # untouched keys, and the file's spelling, stay
    moved = cub_tasks(project, "edit", "t-3", "--depends-on", "t-1")
    assert moved.returncode == 0 and read_lines(backlog)[2]["dependsOn"] == ["t-1"]
    assert cub_tasks(project, "edit", "t-3", "--no-depends-on").returncode == 0
    assert "dependsOn" not in read_lines(backlog)[2]
    before = backlog.read_bytes()
    for args, code, words in (
        (["t-3", "--depends-on", "ghost"], 2, "no task with id 'ghost'"),
        (["t-3", "--depends-on", "t-3"], 2, "cannot depend on itself"),
        (["t-3"], 2, "nothing to change"),
        (["t-9", "--title", "x"], 1, "no task with id 't-9'"),
        (["t-3", "--priority", "9"], 2, "P0-P4"),
    ):
        result = cub_tasks(project, "edit", *args)
        assert result.returncode == code and words in result.stderr, (args, result.stderr)
    assert backlog.read_bytes() == before
    # Back to open: whatever a run had recorded about it is gone with the change.
    reopened = cub_tasks(project, "edit", "t-1", "--status", "open")
    assert reopened.returncode == 0 and read_lines(backlog)[0]["status"] == "open"


def test_rm(project: Path, backlog: Path) -> None:
    needed = cub_tasks(project, "rm", "t-2")
    assert needed.returncode == 2 and "t-2 is a dependency of t-3" in needed.stderr
    result = cub_tasks(project, "rm", "t-3")
    assert result.returncode == 0 and result.stdout.strip() == "removed t-3: Ship"
    assert [line["id"] for line in read_lines(backlog)] == ["t-1", "t-2"]
    assert cub_tasks(project, "rm", "t-3").returncode == 1
    # Held by a run (its claim is in the ledger): refused until the run lets go.
    from cub.tasks.jsonl import JsonlBackend

    run = JsonlBackend(backlog, project)
    assert run.claim_next("run-1", epic=None, label=None).id == "t-2"  # type: ignore[union-attr]
    held = cub_tasks(project, "rm", "t-2")
    assert held.returncode == 2 and "claimed by run-1" in held.stderr
    run.release("t-2", "run-1")
    assert cub_tasks(project, "rm", "t-2").returncode == 0
    assert "t-2" not in json.loads(run.ledger_path.read_bytes()).get("tasks", {})


def test_close(project: Path, backlog: Path) -> None:
    result = cub_tasks(project, "close", "t-3", "--reason", "not needed")
    assert result.returncode == 0 and result.stdout.strip() == "closed t-3: Ship"
    assert read_lines(backlog)[2]["close_reason"] == "not needed"
    assert cub_tasks(project, "close", "t-9").returncode == 1


def test_errors_are_one_line_and_return_1(project: Path) -> None:
    (project / ".cub" / "tasks.jsonl").write_text('{"id": "a", "title": "A"}\n{"id": 3}\n')
    result = cub_tasks(project, "list")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == "cub tasks: .cub/tasks.jsonl:2: $.id: Expected str, got int\n"
    (project / ".cub" / "config.json").write_text('{"backend": {"mode": "sql"}}')
    result = cub_tasks(project, "ready")
    assert result.returncode == 1
    assert result.stderr.startswith("cub tasks: .cub/config.json: $.backend.mode: expected one of")


def test_no_backend(tmp_path: Path) -> None:
    result = cub_tasks(tmp_path, "list")
    assert result.returncode == 1
    assert "run `cub init`" in result.stderr
