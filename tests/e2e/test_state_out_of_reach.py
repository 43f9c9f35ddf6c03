"""Nothing an agent does in its work dir destroys or forges cub's state, `--in-place` included,
and nothing cub does shows in the user's `git status`.

The agents are scripts through `--harness command` doing what agents do every day in the
directory they were given: `git clean -fdx`, `git stash -u`, `git add -A` and commit, `rm -rf`
of cub's directories.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cub.records.location import runs_dir, state_dir
from tests.e2e.support import assert_no_traceback, command_harness
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
from tests.helpers.git import git

pytestmark = pytest.mark.timeout(60)

# Works, then wipes everything untracked or ignored in its directory, stashes, and commits
# whatever is left with `git add -A`.
CARELESS = """
import os, shutil, subprocess
task = os.environ["CUB_TASK_ID"]
open(task + ".txt", "w").write("work\\n")
subprocess.run(["git", "add", task + ".txt"], check=True)
subprocess.run(["git", "commit", "-qm", "work on " + task], check=True)
open("scratch.tmp", "w").write("x\\n")
subprocess.run(["git", "clean", "-fdxq"], check=True)
subprocess.run(["git", "stash", "-u", "-q"], check=True)
for leftover in (".cub/runs", ".cub/worktrees", ".git/cub-not-here"):
    shutil.rmtree(leftover, ignore_errors=True)
for name in os.listdir(".cub"):
    if name.endswith(".lock") or name.endswith(".tmp"):
        os.unlink(os.path.join(".cub", name))
subprocess.run(["git", "add", "-A"], check=True)
subprocess.run(["git", "commit", "-qm", "everything else", "--allow-empty"], check=True)
print("done with " + task)
"""


def _committed_project(tmp_path: Path) -> Path:
    """A project whose backlog and config are committed, as a team would keep them."""
    project = make_project(tmp_path / "proj", [task("t1"), task("t2"), task("t3")])
    git(project, "add", ".cub")
    git(project, "commit", "-qm", "backlog")
    return project


def test_an_in_place_agent_cleaning_its_tree_leaves_every_record_and_claim(
    tmp_path: Path,
) -> None:
    project = _committed_project(tmp_path)
    backlog = (project / ".cub" / "tasks.jsonl").read_bytes()
    agent = write_script(tmp_path / "agent.py", CARELESS)

    result = run_cub(["run", "--in-place", *command_harness(f"{sys.executable} {agent}")], project)

    assert_no_traceback(result)
    assert result.returncode == 0, result.stdout + result.stderr
    record = read_run(project)
    assert (record.state, record.reason_code) == ("completed", "all_tasks_done")
    assert record.tasks.succeeded == 3
    for task_id in ("t1", "t2", "t3"):
        assert read_attempt(project, task_id).outcome == "succeeded"
    assert read_events(project)[-1].state_to == "completed"  # the whole journal is there
    assert {t["status"] for t in read_tasks(project).values()} == {"closed"}
    # The backlog file is as the team committed it; git sees nothing cub wrote, and the
    # agent's `git add -A` commits held only its own work.
    assert (project / ".cub" / "tasks.jsonl").read_bytes() == backlog
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""
    committed = git(project, "log", "--name-only", "--format=", record.branch or "HEAD")
    assert not [p for p in committed.split() if p.startswith(".cub/") and "tasks" not in p]
    assert "t3.txt" in committed.split()
    assert runs_dir(project).is_relative_to(project / ".git")


def test_an_in_place_agent_removing_cub_dir_ends_the_run_for_what_it_is(
    tmp_path: Path,
) -> None:
    project = _committed_project(tmp_path)
    agent = write_script(
        tmp_path / "agent.py",
        "import shutil\nshutil.rmtree('.cub')\nprint('removed it')\n",
    )

    result = run_cub(["run", "--in-place", *command_harness(f"{sys.executable} {agent}")], project)

    assert_no_traceback(result)
    assert result.returncode == 1, result.stdout + result.stderr
    record = read_run(project)  # the record survived: it was never under .cub/
    assert (record.state, record.reason_code) == ("failed", "task_file_changed")
    assert read_attempt(project, "t1").outcome == "succeeded"
    # Put back by a person: the claim the run could not settle then is settled by the next
    # cub command (the attempt succeeded, so the task is closed), and nothing stays claimed.
    git(project, "checkout", "--", ".cub")
    assert run_cub(["status"], project).returncode == 0
    tasks = read_tasks(project)
    assert tasks["t1"]["status"] == "closed"
    assert {tasks["t2"]["status"], tasks["t3"]["status"]} == {"open"}


def test_the_users_checkout_shows_nothing_after_isolated_and_in_place_runs(
    tmp_path: Path,
) -> None:
    project = _committed_project(tmp_path)
    agent = write_script(
        tmp_path / "agent.py",
        "import os, subprocess\n"
        "open(os.environ['CUB_TASK_ID'] + '.txt', 'w').write('work\\n')\n"
        "subprocess.run(['git', 'add', '-A'], check=True)\n"
        "subprocess.run(['git', 'commit', '-qm', 'work'], check=True)\n",
    )
    harness = command_harness(f"{sys.executable} {agent}")

    assert run_cub(["run", "--task", "t1", *harness], project).returncode == 0
    assert run_cub(["run", "--in-place", "--task", "t2", *harness], project).returncode == 0
    # A failing one too: its retry bookkeeping is no more visible than a close.
    failing = command_harness("false")
    assert run_cub(["run", "--in-place", "--task", "t3", *failing], project).returncode == 1

    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""
    tasks = read_tasks(project)
    assert (tasks["t1"]["status"], tasks["t2"]["status"]) == ("closed", "closed")
    assert tasks["t3"]["status"] in ("retry", "failed") and tasks["t3"]["attempts"] == 1
    assert (state_dir(project) / "backlog").is_dir()
