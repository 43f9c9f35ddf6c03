"""`--direct` and `--worktree`: runs of the same machine, with the same records and signals."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from cub.lifecycle.signals import SAME_REQUEST_WINDOW
from tests.e2e.support import command_harness
from tests.helpers.agents import is_alive, wait_for_file, wait_until, write_script
from tests.helpers.cli import (
    make_project,
    read_attempt,
    read_run,
    read_status,
    read_tasks,
    run_cub,
    run_dir,
    start_cub,
    task,
)
from tests.helpers.exit_paths import assert_ending, exit_path
from tests.helpers.git import git

pytestmark = pytest.mark.timeout(60)

COMMITTING_AGENT = """
import os, subprocess, sys
prompt = sys.stdin.read()
name = os.environ["CUB_TASK_ID"] + ".txt"
open(name, "w").write(prompt)
subprocess.run(["git", "add", name], check=True)
subprocess.run(["git", "commit", "-q", "-m", "work on " + name], check=True)
print("committed", name, "in", os.getcwd(), flush=True)
"""

SLEEPING_AGENT = """
import os, sys, time
open({ready!r}, "w").write(str(os.getpid()))
print("working", flush=True)
time.sleep(30)
"""

STUBBORN_AGENT = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open({ready!r}, "w").write(str(os.getpid()))
time.sleep(30)
"""


def harness(script: Path) -> list[str]:
    """The agent script, run by this Python."""
    return command_harness(f"{sys.executable} {script}")


# -- direct -------------------------------------------------------------------------------------


def test_direct_run_succeeds_with_full_records(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj")
    agent = write_script(tmp_path / "agent.py", COMMITTING_AGENT)
    result = run_cub(["run", "--direct", "rename foo to bar", *harness(agent)], project)
    assert result.returncode == 0, result.stderr
    record = read_run(project)
    assert (record.mode, record.state, record.reason_code) == (
        "direct",
        "completed",
        "all_tasks_done",
    )
    assert record.run_id.startswith("direct-")
    assert record.tasks.attempted == ["direct"] and record.tasks.succeeded == 1
    assert read_status(project).state == "completed"
    attempt = read_attempt(project, "direct")
    assert attempt.outcome == "succeeded" and attempt.exit_code == 0
    prompt = (run_dir(project) / "tasks" / "direct" / "prompt.md").read_text()
    assert "rename foo to bar" in prompt
    # The work is committed on the run's branch, never on main.
    branch = record.branch
    assert branch is not None and branch.startswith("cub/")
    assert "direct.txt" in git(project, "ls-tree", "--name-only", branch)
    assert "direct.txt" not in git(project, "ls-tree", "--name-only", "main")


def test_direct_prompt_from_a_file_and_from_stdin(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj")
    agent = write_script(tmp_path / "agent.py", "import sys; print(sys.stdin.read())\n")
    (tmp_path / "prompt.txt").write_text("prompt from a file\n")
    from_file = run_cub(
        ["run", "--direct", f"@{tmp_path / 'prompt.txt'}", *harness(agent)], project
    )
    assert from_file.returncode == 0, from_file.stderr
    log = (run_dir(project) / "tasks" / "direct" / "harness.log").read_text()
    assert "prompt from a file" in log
    from_stdin = run_cub(
        ["run", "--direct", "-", *harness(agent)], project, input="prompt from stdin\n"
    )
    assert from_stdin.returncode == 0, from_stdin.stderr
    log = (run_dir(project) / "tasks" / "direct" / "harness.log").read_text()
    assert "prompt from stdin" in log


def test_direct_run_whose_agent_fails(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj")
    agent = write_script(tmp_path / "agent.py", "import sys; print('no luck'); sys.exit(3)\n")
    result = run_cub(["run", "--direct", "do it", *harness(agent)], project)
    assert result.returncode == 1
    record = read_run(project)
    assert (record.state, record.reason_code) == ("failed", "task_failed")
    attempt = read_attempt(project, "direct")
    assert (attempt.outcome, attempt.exit_code) == ("failed", 3)


def test_direct_run_outside_any_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    agent = write_script(tmp_path / "agent.py", "print('hello')\n")
    result = run_cub(["run", "--direct", "say hello", *harness(agent)], plain)
    assert result.returncode == 0, result.stderr
    record = read_run(plain)
    assert (record.mode, record.state, record.branch) == ("direct", "completed", None)


@pytest.mark.parametrize(
    ("signals", "state", "code", "outcome"),
    [
        ((signal.SIGINT,), "interrupted", 130, "interrupted"),
        ((signal.SIGINT, signal.SIGINT), "force_killed", 137, "killed"),
    ],
    ids=["interrupt", "force-kill"],
)
def test_direct_run_stopped_by_signals(
    tmp_path: Path, signals: tuple[int, ...], state: str, code: int, outcome: str
) -> None:
    project = make_project(tmp_path / "proj")
    ready = tmp_path / "ready"
    body = STUBBORN_AGENT if len(signals) == 2 else SLEEPING_AGENT
    agent = write_script(tmp_path / "agent.py", body.format(ready=str(ready)))
    proc = start_cub(["run", "--direct", "wait", "--grace", "5s", *harness(agent)], project)
    wait_for_file(ready)
    # The agent creates the file, then writes its pid into it: wait for the pid too.
    wait_until(lambda: ready.read_text().strip() != "", what="the agent's pid")
    agent_pid = int(ready.read_text())
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(SAME_REQUEST_WINDOW + 0.2)  # a second request, not the first delivered twice
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    record = read_run(project)
    assert (record.mode, record.state, record.exit_code) == ("direct", state, code)
    assert read_attempt(project, "direct").outcome == outcome
    assert not is_alive(agent_pid)


# -- worktree -----------------------------------------------------------------------------------


def test_worktree_run_commits_survive_the_removed_worktree(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [task("a"), task("b")])
    agent = write_script(tmp_path / "agent.py", COMMITTING_AGENT)
    result = run_cub(["run", "--worktree", *harness(agent)], project)
    assert result.returncode == 0, result.stderr
    record = read_run(project)
    assert record.state == "completed" and record.tasks.succeeded == 2
    workdir = project / ".cub" / "worktrees" / record.run_id
    assert not workdir.exists()  # removed at the end
    assert record.branch == f"cub/{record.run_id}"
    files = git(project, "ls-tree", "--name-only", record.branch).split()
    assert {"a.txt", "b.txt"} <= set(files)
    # The main checkout is untouched: still on main, no task files there.
    assert git(project, "branch", "--show-current") == "main"
    assert not (project / "a.txt").exists()
    # The records and the backlog live in the main project.
    assert {t["status"] for t in read_tasks(project).values()} == {"closed"}
    log = (run_dir(project) / "tasks" / "a" / "harness.log").read_text()
    assert str(workdir) in log


def test_worktree_keep_keeps_the_worktree(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [task("a")])
    agent = write_script(tmp_path / "agent.py", COMMITTING_AGENT)
    result = run_cub(
        ["run", "--worktree", "--worktree-keep", "--name", "kept", *harness(agent)], project
    )
    assert result.returncode == 0, result.stderr
    workdir = project / ".cub" / "worktrees" / "kept"
    assert (workdir / "a.txt").exists()
    assert git(workdir, "branch", "--show-current") == "cub/kept"


@exit_path("setup_failed", "preparing", "worktree_failed")
def test_worktree_path_taken_fails_setup_with_a_record(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [task("a")])
    (project / ".cub" / "worktrees" / "taken").mkdir(parents=True)
    agent = write_script(tmp_path / "agent.py", COMMITTING_AGENT)
    result = run_cub(["run", "--worktree", "--name", "taken", *harness(agent)], project)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    record = read_run(project)
    assert (record.state, record.reason_code) == ("failed", "worktree_failed")
    assert_ending(project, result.returncode, "setup_failed", "preparing", "worktree_failed")
    assert "already exists" in record.reason
    assert record.history[-1].trigger == "setup_failed"
    assert read_tasks(project)["a"]["status"] == "open"


def test_worktree_run_interrupted(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [task("a")])
    ready = tmp_path / "ready"
    agent = write_script(tmp_path / "agent.py", SLEEPING_AGENT.format(ready=str(ready)))
    proc = start_cub(["run", "--worktree", *harness(agent)], project)
    wait_for_file(ready)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    record = read_run(project)
    assert (record.state, record.reason_code) == ("interrupted", "sigterm")
    assert read_attempt(project, "a").outcome == "interrupted"
    assert read_tasks(project)["a"]["status"] == "open"
    assert not (project / ".cub" / "worktrees" / record.run_id).exists()
