"""Running the real `cub` process against a real project, and reading what it recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from cub.records.location import runs_dir
from cub.records.reader import list_summaries, run_dirs
from cub.records.schemas import Event, RunRecord, StatusRecord, TaskAttempt
from cub.tasks.jsonl import JsonlBackend
from tests.helpers.git import make_repo

CUB = [sys.executable, "-m", "cub"]


def cub_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUB_")}
    env.update(extra or {})
    return env


def run_cub(
    args: Sequence[str],
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run `cub ARGS` to completion; stdin is /dev/null unless ``input`` is given."""
    return subprocess.run(
        [*CUB, *args],
        cwd=cwd,
        env=cub_env(env),
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cub(
    args: Sequence[str],
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[str]:
    """Start `cub ARGS` in its own session (so tests can signal it like a terminal would)."""
    return subprocess.Popen(
        [*CUB, *args],
        cwd=cwd,
        env=cub_env(env),
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def write_tasks(project: Path, tasks: Sequence[Mapping[str, Any]]) -> Path:
    path = project / ".cub" / "tasks.jsonl"
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    return path


def task(task_id: str, title: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "title": title or f"task {task_id}",
        "status": "open",
        "priority": 2,
        "issue_type": "task",
        **fields,
    }


def make_project(
    path: Path,
    tasks: Sequence[Mapping[str, Any]] = (),
    config: Mapping[str, Any] | None = None,
    branch: str = "main",
) -> Path:
    """A git repository with .cub/tasks.jsonl (and .cub/config.json when given)."""
    make_repo(path, branch=branch)
    (path / ".cub").mkdir()
    write_tasks(path, tasks)
    if config is not None:
        (path / ".cub" / "config.json").write_text(json.dumps(config))
    return path


def run_dir(project: Path, run_id: str = "newest") -> Path:
    """A run's directory; ``newest``: the run a person started last, whatever it was (a dry
    run, a rejection: cub's own ``latest`` names only the last run that did work; not a child
    of a parallel run)."""
    if run_id == "newest":
        newest = [s for s in list_summaries(project) if s.parent_run_id is None]
        if newest:
            run_id = newest[0].run_id
        else:  # a run so young it has no status.json yet: the newest directory
            dirs = [d for d in run_dirs(project) if ".." not in d.name]
            if not dirs:
                raise FileNotFoundError(f"no run recorded in {project}")
            run_id = max(dirs, key=lambda d: d.stat().st_mtime_ns).name
    return (runs_dir(project) / run_id).resolve()


def read_run(project: Path, run_id: str = "newest") -> RunRecord:
    return msgspec.json.decode((run_dir(project, run_id) / "run.json").read_bytes(), type=RunRecord)


def read_status(project: Path, run_id: str = "newest") -> StatusRecord:
    return msgspec.json.decode(
        (run_dir(project, run_id) / "status.json").read_bytes(), type=StatusRecord
    )


def read_events(project: Path, run_id: str = "newest") -> list[Event]:
    lines = (run_dir(project, run_id) / "events.jsonl").read_bytes().splitlines()
    return [msgspec.json.decode(line, type=Event) for line in lines]


def read_attempt(project: Path, task_id: str, run_id: str = "newest") -> TaskAttempt:
    path = run_dir(project, run_id) / "tasks" / task_id / "task.json"
    return msgspec.json.decode(path.read_bytes(), type=TaskAttempt)


def read_tasks(project: Path) -> dict[str, dict[str, Any]]:
    """Every task as cub sees it: the task file with what runs did laid over it."""
    document = JsonlBackend(project / ".cub" / "tasks.jsonl", project)._read()
    return {task.id: document.raw(i) for i, task in enumerate(document.tasks)}


def read_task_file(project: Path) -> dict[str, dict[str, Any]]:
    """The task file as it is on disk."""
    lines = (project / ".cub" / "tasks.jsonl").read_text().splitlines()
    return {t["id"]: t for t in (json.loads(line) for line in lines if line.strip())}


def all_runs(project: Path) -> list[RunRecord]:
    root = runs_dir(project)
    return [
        msgspec.json.decode((d / "run.json").read_bytes(), type=RunRecord)
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.is_symlink() and (d / "run.json").exists()
    ]
