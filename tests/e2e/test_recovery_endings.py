"""Recovery finishes every mode's ending: a SIGKILLed parallel parent gets a record that lists
and sums its children, a SIGKILLed worktree run loses its worktree (not its commits), a hook
that was running is killed, and temp files the dead runner was writing are removed.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from cub.records.location import runs_dir
from tests.e2e.support import command_harness
from tests.helpers.agents import (
    TEST_TOKEN_VAR,
    is_alive,
    processes_with_token,
    wait_for_file,
    wait_until,
    write_script,
)
from tests.helpers.cli import (
    make_project,
    read_events,
    read_run,
    read_status,
    read_tasks,
    run_cub,
    run_dir,
    start_cub,
    task,
)
from tests.helpers.git import git

pytestmark = pytest.mark.timeout(90)


# Reports 100 tokens and commits a file named after its task; then exits, or (for the tasks in
# AGENT_HANG) says it is ready and sleeps through SIGINT and SIGTERM.
AGENT = """
import json, os, signal, subprocess, time
task = os.environ["CUB_TASK_ID"]
print(json.dumps({"cub_usage": {"input_tokens": 100, "output_tokens": 0}}), flush=True)
with open(task + ".txt", "w") as f:
    f.write(task + "\\n")
subprocess.run(["git", "add", task + ".txt"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "work on " + task], check=True)
if task in os.environ.get("AGENT_HANG", "").split(","):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open(os.path.join(os.environ["AGENT_READY_DIR"], task), "w").close()
    time.sleep(60)
"""


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def test_a_sigkilled_parallel_parent_lists_and_sums_its_children(
    tmp_path: Path, token: str
) -> None:
    project = make_project(tmp_path / "proj", [task("t1"), task("t2")])
    agent = write_script(tmp_path / "agent.py", AGENT)
    ready = tmp_path / "ready"
    ready.mkdir()
    env = {TEST_TOKEN_VAR: token, "AGENT_HANG": "t2", "AGENT_READY_DIR": str(ready)}
    proc = start_cub(
        ["run", "--parallel", "2", "--name", "par", "--grace", "30s", *command_harness(agent)],
        project,
        env=env,
    )
    try:
        wait_for_file(ready / "t2", timeout=30)
        wait_until(lambda: (run_dir(project, "par-t1") / "run.json").exists(), timeout=30)
        _kill(proc.pid)  # the parent; its children get SIGTERM from the kernel
        proc.communicate(timeout=10)
        # The t2 child is stopping (its agent ignores the signal, its grace is long): killed too.
        child = read_status(project, "par-t2").runner.pid
        _kill(child)
        wait_until(lambda: not is_alive(child), what="the child runner gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    result = run_cub(["runs", "list"], project)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    parent = read_run(project, "par")
    assert (parent.state, parent.reason_code, parent.recorded_by) == (
        "force_killed",
        "runner_died",
        "recovery",
    )
    states = {c.run_id: (c.task_id, c.state) for c in parent.children}
    assert states == {"par-t1": ("t1", "completed"), "par-t2": ("t2", "force_killed")}
    # Summed from the children's own records (the parent died before collecting one of them).
    children = [read_run(project, run_id) for run_id in ("par-t1", "par-t2")]
    assert parent.budget.tokens_used == sum(c.budget.tokens_used for c in children) >= 100
    assert parent.tasks.succeeded == 1
    assert sorted(parent.tasks.attempted) == ["t1", "t2"]
    assert read_run(project, "par-t2").recorded_by == "recovery"
    tasks = read_tasks(project)
    assert (tasks["t1"]["status"], tasks["t2"]["status"]) == ("closed", "open")
    assert processes_with_token(token) == []
    # latest (and so `cub status`) is the run the person started, not its last child.
    assert os.readlink(runs_dir(project) / "latest") == "par"
    status = run_cub(["status"], project)
    assert "par-t2" not in status.stdout and "par" in status.stdout, status.stdout


def _worktree_of(project: Path, run_id: str = "newest") -> Path:
    made = next(e for e in read_events(project, run_id) if e.kind == "worktree")
    return Path(made.data["path"])


def test_a_sigkilled_worktree_runs_worktree_is_removed_and_its_commits_kept(
    tmp_path: Path, token: str
) -> None:
    project = make_project(tmp_path / "proj", [task("t1")])
    agent = write_script(tmp_path / "agent.py", AGENT)
    ready = tmp_path / "ready"
    ready.mkdir()
    env = {TEST_TOKEN_VAR: token, "AGENT_HANG": "t1", "AGENT_READY_DIR": str(ready)}
    proc = start_cub(["run", "--worktree", *command_harness(agent)], project, env=env)
    wait_for_file(ready / "t1", timeout=30)
    _kill(proc.pid)
    proc.communicate(timeout=10)
    worktree = _worktree_of(project)
    branch = read_status(project).branch
    assert worktree.is_dir() and branch

    result = run_cub(["runs", "list"], project)

    assert result.returncode == 0, result.stderr
    assert not worktree.exists()
    assert str(worktree) not in git(project, "worktree", "list")
    assert "t1.txt" in git(project, "ls-tree", "--name-only", branch)  # the commit is kept
    removed = [e for e in read_events(project) if e.kind == "worktree_removed"]
    assert [e.data["path"] for e in removed] == [str(worktree)]
    assert read_run(project).recorded_by == "recovery"


def test_a_hook_running_when_cub_died_is_killed_by_recovery(tmp_path: Path, token: str) -> None:
    project = make_project(tmp_path / "proj", [task("t1")])
    pid_file = tmp_path / "hook.pid"
    hooks = project / ".cub" / "hooks" / "pre-task.d"
    hooks.mkdir(parents=True)
    write_script(
        hooks / "10-slow",
        f"""
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open({str(pid_file)!r} + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename({str(pid_file)!r} + ".tmp", {str(pid_file)!r})
time.sleep(60)
""",
    )
    agent = write_script(tmp_path / "agent.py", "print('never reached')\n")
    proc = start_cub(["run", *command_harness(agent)], project, env={TEST_TOKEN_VAR: token})
    hook_pid = int(wait_for_file(pid_file, timeout=30))
    _kill(proc.pid)
    proc.communicate(timeout=10)
    assert is_alive(hook_pid)

    result = run_cub(["runs", "list"], project)

    assert result.returncode == 0, result.stderr
    wait_until(lambda: not is_alive(hook_pid), timeout=3, what="the hook gone")
    assert read_run(project).recorded_by == "recovery"
    assert read_tasks(project)["t1"]["status"] == "open"


def test_temp_files_of_a_dead_runner_are_removed(tmp_path: Path, token: str) -> None:
    """What a writer killed between its temp file and the rename leaves: beside the backlog,
    and in the run's directory."""
    project = make_project(tmp_path / "proj", [task("t1")])
    agent = write_script(tmp_path / "agent.py", AGENT)
    ready = tmp_path / "ready"
    ready.mkdir()
    env = {TEST_TOKEN_VAR: token, "AGENT_HANG": "t1", "AGENT_READY_DIR": str(ready)}
    proc = start_cub(["run", *command_harness(agent)], project, env=env)
    wait_for_file(ready / "t1", timeout=30)
    _kill(proc.pid)
    proc.communicate(timeout=10)
    backlog = project / ".cub" / "tasks.jsonl"
    left = [
        backlog.with_name(".tasks.jsonl.k1l2m3.tmp"),
        run_dir(project) / ".status.json.a1b2c3.tmp",
        run_dir(project) / "tasks" / "t1" / ".task.json.d4e5f6.tmp",
    ]
    for path in left:
        path.write_text(json.dumps({"half": "written"}))
    other = backlog.with_name("notes.tmp")  # not cub's: left alone
    other.write_text("mine")

    result = run_cub(["runs", "list"], project)

    assert result.returncode == 0, result.stderr
    assert [p for p in left if p.exists()] == []
    assert other.exists()
    assert read_run(project).recorded_by == "recovery"
