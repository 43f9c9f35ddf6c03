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
        "-d",
        "all of them",
        "-p",
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
    bad = cub_tasks(project, "add", "x", "--priority", "urgent")
    assert bad.returncode == 1 and "P0-P4" in bad.stderr
    bad_dep = cub_tasks(project, "add", "x", "--depends-on", "../etc")
    assert bad_dep.returncode == 1 and "invalid task id '../etc'" in bad_dep.stderr


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
