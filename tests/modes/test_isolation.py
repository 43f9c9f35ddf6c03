"""An isolated run never moves the checkout it started from; an agent that does is caught.

The agents here are scripts through `--harness command`: one reports the directory it was
given (its working directory and PWD), one goes back to the user's checkout on purpose and
commits there, as an agent following a stale PWD or a hard-coded path would.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.e2e.support import command_harness
from tests.helpers.agents import write_script
from tests.helpers.cli import (
    make_project,
    read_attempt,
    read_events,
    read_run,
    read_tasks,
    run_cub,
    task,
)
from tests.helpers.exit_paths import assert_ending, exit_path
from tests.helpers.git import git

pytestmark = pytest.mark.timeout(60)

# Writes <task id>.txt and commits it: work that a run's branch keeps.
COMMIT_TASK_FILE = """
import os, subprocess
name = os.environ["CUB_TASK_ID"] + ".txt"
open(name, "w").write("work\\n")
subprocess.run(["git", "add", name], check=True)
subprocess.run(["git", "commit", "-qm", name], check=True)
"""

WHERE_AM_I = """
import json, os, subprocess
open("where.json", "w").write(json.dumps({"cwd": os.getcwd(), "pwd": os.environ.get("PWD")}))
subprocess.run(["git", "add", "where.json"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "where I worked"], check=True)
"""

# Commits in the checkout named by its first argument, whatever directory it was given.
ESCAPING = """
import os, subprocess, sys
os.chdir(sys.argv[1])
open("escaped.txt", "w").write("written outside the run's worktree\\n")
subprocess.run(["git", "add", "escaped.txt"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "escaped"], check=True)
"""


def test_the_agent_gets_its_worktree_as_pwd_not_the_callers(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", [task("t1")])
    agent = write_script(tmp_path / "agent.py", WHERE_AM_I)

    result = run_cub(
        ["run", "--worktree", "--worktree-keep", *command_harness(f"{sys.executable} {agent}")],
        project,
        env={"PWD": str(project)},  # as a shell would pass it
    )

    assert result.returncode == 0, result.stdout + result.stderr
    run = read_run(project)
    where = json.loads(git(project, "show", f"{run.branch}:where.json"))
    worktree = project / ".cub" / "worktrees" / run.run_id
    assert where == {"cwd": str(worktree), "pwd": str(worktree)}


@exit_path("stop_on_failure", "settling", "isolation_breached")
def test_an_agent_that_commits_in_the_starting_checkout_fails_the_run(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", [task("t1"), task("t2")])
    agent = write_script(tmp_path / "agent.py", ESCAPING)
    main_before = git(project, "rev-parse", "main")

    result = run_cub(
        ["run", "--worktree", *command_harness(f"{sys.executable} {agent} {project}")],
        project,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert_ending(
        project,
        result.returncode,
        "stop_on_failure",
        "settling",
        "isolation_breached",
        task_id="t1",
    )
    run = read_run(project)
    assert (run.state, run.reason_code) == ("failed", "isolation_breached")
    assert "HEAD of the checkout" in run.reason
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "failed"
    assert attempt.error is not None and attempt.error.type == "IsolationBreached"
    assert git(project, "rev-parse", "main") != main_before  # what the agent did is not hidden
    tasks = read_tasks(project)
    # Not closed as if the work were on the run branch, and the run stopped at once.
    assert tasks["t1"]["status"] == "open"
    assert tasks["t2"]["status"] == "open" and run.tasks.attempted == ["t1"]


def test_an_agent_that_only_stages_in_the_starting_checkout_is_caught_too(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "p", [task("t1")])
    (project / "staged.txt").write_text("x\n")
    agent = write_script(
        tmp_path / "agent.py",
        "import subprocess, sys\n"
        "subprocess.run(['git', '-C', sys.argv[1], 'add', 'staged.txt'], check=True)\n",
    )

    result = run_cub(
        ["run", "--worktree", *command_harness(f"{sys.executable} {agent} {project}")],
        project,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    run = read_run(project)
    assert run.reason_code == "isolation_breached"
    assert "index" in run.reason


def test_git_refreshing_the_index_of_the_checkout_is_not_a_breach(tmp_path: Path) -> None:
    """`git status` in the user's checkout rewrites its index (stat data) but moves nothing."""
    project = make_project(tmp_path / "p", [task("t1")])
    agent = write_script(
        tmp_path / "agent.py",
        "import os, subprocess, sys, time\n"
        "time.sleep(1.1)  # a new second, so the refresh rewrites the index\n"
        "os.utime(os.path.join(sys.argv[1], 'README.md'))\n"
        "subprocess.run(['git', '-C', sys.argv[1], 'status', '-s'], check=True)\n",
    )

    result = run_cub(
        ["run", "--worktree", *command_harness(f"{sys.executable} {agent} {project}")],
        project,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert read_run(project).state == "completed"


@exit_path("children_failed", "supervising", "isolation_breached")
def test_a_parallel_child_that_commits_in_the_starting_checkout_fails_the_run(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "p", [task("t1")])
    agent = write_script(tmp_path / "agent.py", ESCAPING)

    result = run_cub(
        [
            "run",
            "--parallel",
            "2",
            "--worktree",
            *command_harness(f"{sys.executable} {agent} {project}"),
        ],
        project,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert_ending(
        project, result.returncode, "children_failed", "supervising", "isolation_breached"
    )
    run = read_run(project)
    assert (run.state, run.reason_code) == ("failed", "isolation_breached")
    assert run.reason.startswith("while t1 ran, HEAD of the checkout")
    assert (run.tasks.succeeded, run.tasks.failed) == (0, 1)
    t1 = read_tasks(project)["t1"]
    # The child closed it; the parent says what it is: not done.
    assert t1["status"] == "failed"
    assert "isolation_breached" in json.dumps(t1)


def test_git_never_sees_the_records_or_the_worktrees(tmp_path: Path) -> None:
    """No .gitignore of the project's: `git status` still lists nothing under .cub/runs or
    .cub/worktrees, and an agent's `git add -A` in the checkout (--in-place) commits none of
    the run's records."""
    project = make_project(tmp_path / "p", [task("t1"), task("t2")])
    agent = write_script(
        tmp_path / "agent.py",
        "import os, subprocess\n"
        "open(os.environ['CUB_TASK_ID'] + '.txt', 'w').write('work\\n')\n"
        "subprocess.run(['git', 'add', '-A'], check=True)\n"
        "subprocess.run(['git', 'commit', '-qm', 'everything'], check=True)\n",
    )
    harness = command_harness(f"{sys.executable} {agent}")

    isolated = run_cub(["run", "--task", "t1", "--worktree-keep", *harness], project)
    in_place = run_cub(["run", "--in-place", "--task", "t2", *harness], project)

    assert isolated.returncode == 0, isolated.stdout + isolated.stderr
    assert in_place.returncode == 0, in_place.stdout + in_place.stderr
    status = git(project, "status", "--porcelain", "--untracked-files=all", "--ignored=no")
    assert ".cub/runs" not in status and ".cub/worktrees" not in status, status
    committed = git(project, "show", "--name-only", "--format=", read_run(project).branch or "")
    assert "t2.txt" in committed.split()
    assert not [path for path in committed.split() if path.startswith(".cub/runs")], committed


def test_runs_leave_no_empty_branches(tmp_path: Path) -> None:
    """A branch is kept only when it holds work: not for a run that found nothing ready, nor
    for one whose agent committed nothing; a parallel run's merged task branches go too."""
    project = make_project(tmp_path / "p", [task(f"t{i}") for i in range(1, 5)])
    committing = write_script(tmp_path / "commit.py", COMMIT_TASK_FILE)

    idle = run_cub(["run", "--task", "t1", *command_harness("true")], project)
    assert idle.returncode == 0, idle.stderr
    assert read_run(project).branch is None
    assert "branch_removed" in {e.kind for e in read_events(project)}

    agent = command_harness(f"{sys.executable} {committing}")
    worked = run_cub(["run", "--task", "t2", *agent], project)
    assert worked.returncode == 0, worked.stderr
    kept = read_run(project).branch
    assert kept is not None and git(project, "log", "-1", "--format=%s", kept) == "t2.txt"

    nothing = run_cub(["run", *command_harness("true"), "--epic", "none-such"], project)
    assert nothing.returncode == 0, nothing.stderr

    parallel = run_cub(["run", "--parallel", "2", *agent], project)
    assert parallel.returncode == 0, parallel.stdout + parallel.stderr
    top = read_run(project, "latest")
    branches = set(git(project, "branch", "--format=%(refname:short)").split())
    assert branches == {"main", kept, top.branch}, branches
    merged = git(project, "ls-tree", "--name-only", top.branch or "").split()
    assert {"t3.txt", "t4.txt"} <= set(merged)


def test_prune_removes_the_branches_of_pruned_runs_once_merged(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", [task("t1"), task("t2")])
    committing = write_script(tmp_path / "commit.py", COMMIT_TASK_FILE)
    agent = command_harness(f"{sys.executable} {committing}")
    for task_id in ("t1", "t2"):
        assert (
            run_cub(
                ["run", "--task", task_id, "--name", f"r-{task_id}", *agent], project
            ).returncode
            == 0
        )
    git(project, "merge", "-q", "--no-edit", "task/t1")  # the person took t1's work

    pruned = run_cub(["runs", "prune", "--keep", "0"], project)

    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.strip() == "removed 2 run(s), 1 merged branch(es)"
    branches = set(git(project, "branch", "--format=%(refname:short)").split())
    assert branches == {"main", "task/t2"}  # t2's work is not merged: its branch stays
