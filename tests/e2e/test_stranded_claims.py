"""No claim is ever stranded: an agent that corrupts or deletes the task file ends the run as
`task_file_changed` (not a cub bug); the claims a run could not hand back are settled by the
next cub command once the file parses again; and a person can release one by hand.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from cub.tasks.jsonl import JsonlBackend
from tests.e2e.support import assert_no_traceback, command_harness
from tests.helpers.agents import TEST_TOKEN_VAR, sleeping_agent, wait_for_file, write_script
from tests.helpers.cli import make_project, read_attempt, read_run, read_tasks, run_cub, start_cub
from tests.helpers.cli import task as make_task
from tests.helpers.exit_paths import assert_ending, exit_path

pytestmark = pytest.mark.timeout(60)

# Does to the task file (an absolute path: the agent may work in a worktree) what
# AGENT_DO_<task id> says, leaves a mark per task, then exits with AGENT_EXIT_<task id>.
AGENT = """
import os, sys
task = os.environ["CUB_TASK_ID"]
backlog = os.environ["AGENT_BACKLOG"]
open(os.path.join(os.environ["AGENT_MARKS"], task), "a").write("ran\\n")
action = os.environ.get("AGENT_DO_" + task, "")
if action == "corrupt":
    with open(backlog, "a") as f:
        f.write("{this is not json\\n")
elif action == "delete":
    os.unlink(backlog)
sys.exit(int(os.environ.get("AGENT_EXIT_" + task, "0")))
"""


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    project = make_project(tmp_path / "proj", [make_task("t1"), make_task("t2")])
    marks = tmp_path / "marks"
    marks.mkdir()
    agent = write_script(tmp_path / "agent.py", AGENT)
    return project, marks, agent


def _env(project: Path, marks: Path, **extra: str) -> dict[str, str]:
    return {
        "AGENT_BACKLOG": str(project / ".cub" / "tasks.jsonl"),
        "AGENT_MARKS": str(marks),
        **extra,
    }


def _strip_garbage(project: Path) -> None:
    """What a person does next: remove the line the agent broke."""
    path = project / ".cub" / "tasks.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if not line.startswith("{this")))


@pytest.mark.parametrize(
    ("exit_code", "settled"), [(0, "closed"), (1, "open")], ids=["succeeded", "failed"]
)
def test_a_corrupted_task_file_is_task_file_changed_and_the_claim_is_settled_later(
    tmp_path: Path, exit_code: int, settled: str
) -> None:
    project, marks, agent = _setup(tmp_path)
    env = _env(project, marks, AGENT_DO_t1="corrupt", AGENT_EXIT_t1=str(exit_code))

    result = run_cub(["run", "--once", *command_harness(f"python3 {agent}")], project, env=env)

    assert result.returncode == 1, result.stderr
    assert_no_traceback(result)
    record = read_run(project)
    assert (record.state, record.reason_code) == ("failed", "task_file_changed")
    assert record.error is None  # not a crash of cub's: no traceback in the record
    assert "t1" in record.reason  # the claim it could not hand back is named
    first = record.run_id
    assert read_attempt(project, "t1", first).outcome == (
        "succeeded" if not exit_code else "failed"
    )
    # The claim is still recorded (in the ledger: runs never write the file).
    ledger = JsonlBackend(project / ".cub" / "tasks.jsonl", project).ledger_path
    assert '"value":"' + first + '"' in ledger.read_text()

    _strip_garbage(project)
    again = run_cub(
        ["run", *command_harness(f"python3 {agent}")], project, env=_env(project, marks)
    )

    assert again.returncode == 0, again.stderr
    tasks = read_tasks(project)
    if settled == "closed":
        # Its agent finished: the task is closed from the ended run's record, never redone.
        assert tasks["t1"]["status"] == "closed"
        assert first in tasks["t1"]["close_reason"]
        assert (marks / "t1").read_text() == "ran\n"
    else:
        # Its agent failed: back to the backlog (that attempt still counts), then run again.
        assert "released by recovery" in tasks["t1"]["notes"]
        assert tasks["t1"]["attempts"] == 2
        assert (marks / "t1").read_text() == "ran\nran\n"
    assert tasks["t2"]["status"] == "closed"


@exit_path("backlog_changed", "settling", "task_file_changed")
def test_a_deleted_task_file_is_task_file_changed(tmp_path: Path) -> None:
    project, marks, agent = _setup(tmp_path)
    env = _env(project, marks, AGENT_DO_t1="delete")

    result = run_cub(["run", *command_harness(f"python3 {agent}")], project, env=env)

    assert result.returncode == 1, result.stderr
    assert_no_traceback(result)
    record = read_run(project)
    assert (record.state, record.reason_code, record.error) == ("failed", "task_file_changed", None)
    assert not (marks / "t2").exists()  # nothing more ran from a backlog that is gone
    assert_ending(
        project, result.returncode, "backlog_changed", "settling", "task_file_changed", task_id="t1"
    )


# -------------------------------------------------------------------- cub tasks release


def test_tasks_release_gives_a_stranded_claim_back(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [make_task("t1"), make_task("t2")])
    backend = JsonlBackend(project / ".cub" / "tasks.jsonl", project)
    assert backend.claim_next("a-run-long-gone", epic=None, label=None) is not None

    released = run_cub(["tasks", "release", "t1"], project)

    assert released.returncode == 0, released.stderr
    assert "t1" in released.stdout
    tasks = read_tasks(project)
    assert tasks["t1"]["status"] == "open" and tasks["t1"].get("assignee") is None
    assert "released by hand" in tasks["t1"]["notes"]

    again = run_cub(["tasks", "release", "t1"], project)
    assert again.returncode == 1
    assert again.stderr.strip() == "cub tasks: t1 is not claimed (status open)"
    unknown = run_cub(["tasks", "release", "nope"], project)
    assert unknown.returncode == 1
    assert "nope" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
    assert_no_traceback(unknown)


def test_tasks_release_refuses_a_claim_its_live_run_holds(tmp_path: Path, token: str) -> None:
    project = make_project(tmp_path / "proj", [make_task("t1")])
    ready = tmp_path / "ready"
    agent = sleeping_agent(tmp_path / "agent.py", ready, exit_on_sigint=130)
    proc = start_cub(["run", *command_harness(agent)], project, env={TEST_TOKEN_VAR: token})
    try:
        wait_for_file(ready)

        refused = run_cub(["tasks", "release", "t1"], project)

        assert refused.returncode == 1
        assert "still running" in refused.stderr
        assert read_tasks(project)["t1"]["status"] == "in_progress"
    finally:
        os.kill(proc.pid, signal.SIGINT)
        proc.communicate(timeout=30)
    assert json.loads(json.dumps(read_tasks(project)["t1"]))["status"] == "open"
