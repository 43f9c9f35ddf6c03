"""A run selects from an index of the backlog it keeps between tasks (`cub.tasks.index`); what
changes the backlog under it mid-run is seen at the next claim, through the real `cub run`:
an agent adding a task to the file or closing one by hand, another process claiming one.
And recovery, which looks for claims cheaply before parsing a backlog, still finds them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cub.recovery.claims import settle_stranded_claims
from cub.tasks.jsonl import JsonlBackend
from tests.e2e.support import assert_no_traceback, command_harness
from tests.helpers.agents import write_script
from tests.helpers.cli import make_project, read_run, read_tasks, run_cub, task

pytestmark = pytest.mark.timeout(60)

# Notes the task it was given in AGENT_LOG, then does to the backlog (an absolute path: the
# agent works in the run's worktree) what AGENT_DO_<task id> says.
AGENT = """
import json, os, subprocess, sys
task = os.environ["CUB_TASK_ID"]
backlog = os.environ["AGENT_BACKLOG"]
with open(os.environ["AGENT_LOG"], "a") as log:
    log.write(task + "\\n")
action = os.environ.get("AGENT_DO_" + task, "")
if action == "add-urgent":
    with open(backlog, "a") as f:
        f.write(json.dumps({"id": "urgent", "title": "urgent", "priority": 0}) + "\\n")
elif action.startswith("close-by-hand:"):
    # `cub tasks close` writes the task file itself, as a person's change.
    subprocess.run(
        [sys.executable, "-m", "cub", "tasks", "close", action.split(":", 1)[1]],
        cwd=os.environ["AGENT_PROJECT"], check=True, capture_output=True,
    )
elif action.startswith("claim-elsewhere:"):
    from pathlib import Path
    from cub.tasks.jsonl import JsonlBackend
    other = JsonlBackend(Path(backlog), Path(os.environ["AGENT_PROJECT"]))
    other.claim_next("someone-else", epic=None, label=None, task_id=action.split(":", 1)[1])
"""


def _run(project: Path, tmp_path: Path, **actions: str) -> list[str]:
    """Run cub over the whole backlog; returns the tasks its agent was given, in order."""
    log = tmp_path / "agent.log"
    agent = write_script(tmp_path / "agent.py", AGENT)
    env = {
        "AGENT_BACKLOG": str(project / ".cub" / "tasks.jsonl"),
        "AGENT_PROJECT": str(project),
        "AGENT_LOG": str(log),
        **{f"AGENT_DO_{task_id}": action for task_id, action in actions.items()},
    }
    # The test's own interpreter: the agent imports cub, or runs it.
    result = run_cub(["run", *command_harness(f"{sys.executable} {agent}")], project, env=env)
    assert_no_traceback(result)
    assert result.returncode in (0, 1), result.stderr
    return log.read_text().split()


def test_a_task_an_agent_adds_mid_run_is_taken_in_its_turn(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [task("a"), task("b"), task("c")])
    assert _run(project, tmp_path, a="add-urgent") == ["a", "urgent", "b", "c"]
    assert {t["status"] for t in read_tasks(project).values()} == {"closed"}


def test_a_task_closed_by_hand_mid_run_is_not_taken_and_frees_its_dependents(
    tmp_path: Path,
) -> None:
    project = make_project(
        tmp_path / "proj",
        [
            task("a", priority=0),
            task("b", priority=1),
            task("c", priority=4),
            task("d", priority=2, depends_on=["b"]),
        ],
    )
    assert _run(project, tmp_path, a="close-by-hand:b") == ["a", "d", "c"]
    assert read_run(project).reason_code == "all_tasks_done"


def test_a_task_another_process_claims_mid_run_is_left_to_it(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [task("a"), task("b"), task("c")])
    assert _run(project, tmp_path, a="claim-elsewhere:b") == ["a", "c"]
    record = read_run(project)
    assert record.reason_code == "no_ready_tasks"
    assert "b by someone-else" in record.reason
    assert read_tasks(project)["b"]["assignee"] == "someone-else"


def test_recovery_finds_a_claim_however_the_file_spells_it(tmp_path: Path) -> None:
    """Recovery skips parsing a backlog in which nothing can be claimed; a claim spelled
    with a JSON escape still counts as one."""
    project = make_project(tmp_path / "proj", [task("a")])
    dry = run_cub(["run", "--ready", "--json"], project)
    finished_run = json.loads(dry.stdout)["run_id"]  # ended, its runner gone
    path = project / ".cub" / "tasks.jsonl"
    line = json.dumps(task("a", assignee=finished_run)).replace(
        '"status": "open"', '"status": "in\\u005fprogress"'
    )
    path.write_text(line + "\n")
    assert JsonlBackend(path, project).load()[0].status == "in_progress"

    assert settle_stranded_claims(project) == [
        f"released a: run {finished_run} ended without releasing it"
    ]
    assert read_tasks(project)["a"]["status"] == "open"
    assert settle_stranded_claims(project) == []  # nothing is claimed any more
