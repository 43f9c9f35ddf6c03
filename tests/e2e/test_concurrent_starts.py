"""Many `cub run` processes started at the same instant on one project: each one's half-made
run directory is its own (no other start's recovery removes it), and each ends with a record."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import psutil
import pytest

from cub.records.reader import run_dirs, runs_dir
from cub.records.store import STAGING_MARK
from tests.e2e.support import command_harness
from tests.helpers.agents import wait_until, write_script
from tests.helpers.cli import (
    make_project,
    read_events,
    read_run,
    read_status,
    run_cub,
    start_cub,
    task,
)

STARTS = 48


@pytest.mark.timeout(120)
def test_simultaneous_starts_each_end_with_a_record(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [task("t1")])
    names = [f"start-{i:02d}" for i in range(STARTS)]
    starts = [start_cub(["run", "--ready", "--name", name], project) for name in names]
    outputs = [proc.communicate(timeout=100) for proc in starts]

    for name, proc, (out, err) in zip(names, starts, outputs, strict=True):
        assert "Traceback" not in err + out, (name, err)
        assert proc.returncode == 0, (name, proc.returncode, err)
        record = read_run(project, name)
        assert (record.state, record.exit_code) == ("completed", 0), (name, record.reason)
    # Nothing half-made is left behind either.
    assert not [d.name for d in run_dirs(project) if STAGING_MARK in d.name]


def test_recovery_leaves_a_live_starters_half_made_directory_alone(tmp_path: Path) -> None:
    """A run directory being made (not yet locked, not yet renamed into place) belongs to a
    live process: another start's recovery must not remove it from under it."""
    project = make_project(tmp_path / "proj", [task("t1")])
    runs = runs_dir(project)
    runs.mkdir(parents=True)
    me = psutil.Process()
    live = runs / f".run-being-made{STAGING_MARK}{me.pid}-{round(me.create_time() * 1000)}-ab12"
    live.mkdir()
    fresh_unnamed = runs / f".run-older-cub{STAGING_MARK}cd34"  # says not who: judged by age
    fresh_unnamed.mkdir()
    dead = runs / f".run-dead{STAGING_MARK}4242-12500-ef56"  # a process long gone
    dead.mkdir()

    result = run_cub(["runs", "list"], project)

    assert result.returncode == 0, result.stderr
    assert live.is_dir() and fresh_unnamed.is_dir()
    assert not dead.exists()


def test_a_worktree_add_that_meets_a_git_lock_is_tried_again(tmp_path: Path) -> None:
    """git fails at once on a lock file another git command holds; the run's worktree is
    created once it is free, not abandoned as `worktree_failed`."""
    project = make_project(tmp_path / "proj", [task("t1")])
    agent = write_script(tmp_path / "agent.py", "print('done')\n")
    lock = project / ".git" / "refs" / "heads" / "cub" / "wt1.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")
    proc = start_cub(["run", "--worktree", "--name", "wt1", *command_harness(agent)], project)
    # Free it only once the run is at the point of making its worktree, and a moment after.
    wait_until(lambda: _state(project, "wt1") not in (None, "created", "validating"), timeout=30)
    time.sleep(0.5)
    lock.unlink()
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 0, (out, err)
    record = read_run(project, "wt1")
    assert record.state == "completed", record.reason
    made = [e.data for e in read_events(project, "wt1") if e.kind == "worktree"]
    assert made and made[0]["branch"] == "cub/wt1"


@pytest.mark.timeout(180)
def test_parallel_children_all_get_their_worktrees(tmp_path: Path) -> None:
    """`--parallel 4` over 8 tasks, a few times: every child starts (its worktree made while
    its siblings make theirs), leaves a record and succeeds."""
    agent = write_script(tmp_path / "agent.py", PARALLEL_AGENT)
    for round_ in range(3):
        project = make_project(tmp_path / f"proj{round_}", [task(f"t{i}") for i in range(8)])

        result = run_cub(
            ["run", "--parallel", "4", "--name", "par", *command_harness(agent)],
            project,
            timeout=150,
        )

        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 0, (round_, result.stdout, result.stderr)
        record = read_run(project, "par")
        assert record.state == "completed", (round_, record.reason)
        assert len(record.children) == 8
        for child in record.children:
            child_record = read_run(project, child.run_id)
            assert child_record.state == "completed", (child.run_id, child_record.reason)


PARALLEL_AGENT = """
import os, subprocess
task = os.environ["CUB_TASK_ID"]
with open(task + ".txt", "w") as f:
    f.write(task)
subprocess.run(["git", "add", task + ".txt"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "work on " + task], check=True)
"""


def _state(project: Path, run_id: str) -> str | None:
    try:
        return read_status(project, run_id).state
    except (OSError, msgspec.DecodeError):
        return None
