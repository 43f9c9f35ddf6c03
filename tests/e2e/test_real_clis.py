"""The real `cub` process driving the four real agent CLIs against scripted model servers.

Each CLI (installed by `tools/setup --agents`) talks to a server on 127.0.0.1 that speaks its
provider's API and follows the script in the task text (tests/helpers/model_servers/). The same
stories run for every CLI: a task done and committed, usage equal to what the server reported,
a token budget, Ctrl+C and a second Ctrl+C while a tool runs, an API that refuses the key, an
agent that is stuck, and the isolation of worktree and parallel runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cub.lifecycle.signals import SAME_REQUEST_WINDOW
from cub.records.location import runs_dir
from tests.helpers.agents import TEST_TOKEN_VAR, processes_with_token
from tests.helpers.cli import (
    make_project,
    read_attempt,
    read_events,
    read_run,
    read_tasks,
    run_cub,
    start_cub,
    task,
)
from tests.helpers.git import git
from tests.helpers.model_servers.anthropic import claude_rig
from tests.helpers.model_servers.base import CliRig, TurnUsage, script_marker
from tests.helpers.model_servers.gemini import gemini_rig
from tests.helpers.model_servers.openai_chat import create_database, opencode_rig
from tests.helpers.model_servers.openai_responses import codex_rig

pytestmark = pytest.mark.timeout(120)

RIGS: dict[str, Callable[[Path], contextlib.AbstractContextManager[CliRig]]] = {
    "claude": claude_rig,
    "codex": codex_rig,
    "gemini": gemini_rig,
    "opencode": opencode_rig,
}
# CLIs whose stream has no usage until the end, but enough output for cub's running estimate to
# cross a small token budget mid-task.
STOPPABLE_ON_ESTIMATE = {"codex", "gemini"}
# A part of the message each provider's API sends with a 401, as the CLI passes it on.
API_401_TEXT = {
    # Claude Code puts its own words on an authentication failure.
    "claude": "Invalid API key",
    "codex": "Incorrect API key provided",
    "gemini": "API key not valid",
    "opencode": "Incorrect API key provided",
}


@pytest.fixture(params=sorted(RIGS))
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CliRig]:
    with RIGS[request.param](tmp_path) as rig:
        yield rig


class Project:
    """A test project wired to one rig: its tasks, config and the environment cub runs in."""

    def __init__(self, tmp_path: Path, rig: CliRig, tasks: list[dict[str, Any]]) -> None:
        self.rig = rig
        self.token = uuid.uuid4().hex
        self.path = make_project(tmp_path / "project", tasks, config=rig.config)
        # What a shell would pass: PWD is where the user typed `cub run`.
        self.env = {**rig.env, TEST_TOKEN_VAR: self.token, "PWD": str(self.path)}

    def run(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return run_cub(
            ["run", "-H", self.rig.harness, *args], self.path, env=self.env, timeout=timeout
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return start_cub(["run", "-H", self.rig.harness, *args], self.path, env=self.env)

    def leftovers(self) -> list[str]:
        return [" ".join(p.cmdline()) for p in processes_with_token(self.token)]


def scripted_task(task_id: str, **script: Any) -> dict[str, Any]:
    return task(task_id, f"Task {task_id}", description=f"Do it.\n\n{script_marker(**script)}\n")


def commit_task(task_id: str, file_name: str) -> dict[str, Any]:
    return scripted_task(
        task_id,
        write=[file_name, f"written for {task_id}\n"],
        commit=f"add {file_name}",
        final="All done.",
    )


def recorded_usage(project: Path, task_id: str) -> TurnUsage:
    usage = read_attempt(project, task_id).usage
    return TurnUsage(
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_creation_tokens,
    )


def checkout_state(repo: Path) -> tuple[str, str, str, str]:
    """What an isolated run must leave alone: branch, HEAD commit, index and working files."""
    index = git(repo, "ls-files", "--stage")
    # cub's own records under .cub/ are not the user's files (`cub init` ignores them).
    status = "\n".join(
        line
        for line in git(repo, "status", "--porcelain", "--untracked-files=all").splitlines()
        if not line[3:].startswith(".cub/")
    )
    return (
        git(repo, "symbolic-ref", "-q", "HEAD"),
        git(repo, "rev-parse", "HEAD"),
        hashlib.sha1(index.encode()).hexdigest(),
        status,
    )


def branches_containing(repo: Path, commit: str) -> set[str]:
    out = git(repo, "branch", "--format=%(refname:short)", "--contains", commit)
    return set(out.split())


def commit_adding(repo: Path, file_name: str) -> str:
    """The commit (on any branch) that added ``file_name``."""
    out = git(repo, "log", "--all", "--format=%H", "--diff-filter=A", "--", file_name)
    commits = out.split()
    assert len(commits) == 1, f"{file_name} was added by {commits}"
    return commits[0]


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"cub ended ({proc.returncode}) before {path}: {out}{err}")
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def wait_gone(project: Project, timeout: float = 5) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := project.leftovers()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# ------------------------------------------------------------------------------- stories


def test_a_task_done_and_committed_on_the_run_branch(tmp_path: Path, rig: CliRig) -> None:
    project = Project(tmp_path, rig, [commit_task("t1", "hello.txt")])
    main_before = git(project.path, "rev-parse", "main")

    result = project.run()

    assert result.returncode == 0, result.stdout + result.stderr
    run = read_run(project.path)
    assert (run.state, run.reason_code) == ("completed", "all_tasks_done")
    assert run.branch is not None and run.branch.startswith("cub/")
    commit = commit_adding(project.path, "hello.txt")
    assert run.branch in branches_containing(project.path, commit)
    assert git(project.path, "rev-parse", "main") == main_before
    assert git(project.path, "show", f"{commit}:hello.txt") == "written for t1"
    assert read_tasks(project.path)["t1"]["status"] == "closed"

    # The usage cub recorded is what the server reported, field by field, and it is exact.
    expected = rig.server.usage_total(rig.counted_kinds)
    assert expected.total > 0
    assert recorded_usage(project.path, "t1") == expected
    attempt = read_attempt(project.path, "t1")
    assert attempt.usage.estimated is False
    assert run.budget.tokens_used == expected.total

    # harness.log is the CLI's own stream, as it came.
    log = (runs_dir(project.path) / run.run_id / "tasks" / "t1" / "harness.log").read_text()
    assert "All done." in log
    assert any(line.startswith("{") for line in log.splitlines())


def test_a_token_budget_stops_the_agent_mid_task(tmp_path: Path, rig: CliRig) -> None:
    if not rig.usage_mid_task and rig.harness not in STOPPABLE_ON_ESTIMATE:
        pytest.skip(f"{rig.harness} reports no usage until its task ends")
    ready = tmp_path / "tool-started"
    project = Project(
        tmp_path,
        rig,
        [
            scripted_task(
                "t1",
                write=["a.txt", "a\n"],
                shell=f"touch {ready} && sleep 60",
                usage=[[5000, 100, 0, 0]],
            )
        ],
    )

    result = project.run("--budget-tokens", "3000", "--grace", "3s")

    assert result.returncode == 3, result.stdout + result.stderr
    run = read_run(project.path)
    assert (run.state, run.reason_code) == ("budget_exhausted", "token_budget")
    attempt = read_attempt(project.path, "t1")
    assert attempt.usage.total_tokens >= 3000
    tasks = read_tasks(project.path)
    if attempt.outcome == "succeeded":
        # Stopped, it still finished its task (codex carries on past a killed tool and reports
        # its turn complete): settled as done, never reopened.
        assert tasks["t1"]["status"] == "closed"
    else:
        assert attempt.outcome == "interrupted"
        # Given back untouched: a stop cub made is not one of the task's attempts.
        assert (tasks["t1"]["status"], tasks["t1"]["attempts"]) == ("open", 0)
    if rig.usage_mid_task:
        # The budget acted on usage the CLI reported while it worked: the long tool never ran.
        assert not ready.exists()
    assert wait_gone(project) == []


def _interrupted_while_a_tool_runs(tmp_path: Path, rig: CliRig, twice: bool) -> Project:
    ready = tmp_path / "tool-started"
    # Twice: a tool that ignores the CLI's stop signals, so the CLI is still stopping when the
    # second Ctrl+C comes (a real CLI stops a well-behaved tool faster than a person presses
    # twice, and cub takes a signal sooner than 0.5 s after the first for the same request).
    stubborn = "trap '' INT TERM HUP && " if twice else ""
    project = Project(
        tmp_path,
        rig,
        [scripted_task("t1", write=["a.txt", "a\n"], shell=f"{stubborn}touch {ready} && sleep 60")],
    )
    proc = project.start("--grace", "5s")
    wait_for(ready, proc)
    proc.send_signal(signal.SIGINT)
    if twice:
        # Soon enough that the agent is still being stopped, late enough that cub takes it
        # for a second request rather than the first one delivered twice.
        time.sleep(SAME_REQUEST_WINDOW + 0.1)
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    expected = 137 if twice else 130
    assert proc.returncode == expected, out + err
    assert wait_gone(project) == []
    return project


def test_ctrl_c_while_a_tool_runs_stops_the_agent_and_records_it(
    tmp_path: Path, rig: CliRig
) -> None:
    project = _interrupted_while_a_tool_runs(tmp_path, rig, twice=False)

    run = read_run(project.path)
    assert (run.state, run.reason_code) == ("interrupted", "sigint")
    assert read_attempt(project.path, "t1").outcome == "interrupted"
    assert run.tasks.interrupted == 1
    tasks = read_tasks(project.path)
    assert (tasks["t1"]["status"], tasks["t1"]["attempts"]) == ("open", 0)
    signalled = [e for e in read_events(project.path) if e.kind == "agent_signalled"]
    assert signalled, "the journal names the signals cub sent to the agent"
    expected_first = "SIGTERM" if rig.harness == "opencode" else "SIGINT"
    assert signalled[0].data["signal"] == expected_first


def test_a_second_ctrl_c_kills_the_agent_and_records_the_kill(tmp_path: Path, rig: CliRig) -> None:
    if rig.harness == "codex":
        pytest.skip(
            "Codex exits within milliseconds of SIGINT, even from a tool that ignores it: "
            "no second Ctrl+C (0.5 s or more after the first) finds it still stopping"
        )
    project = _interrupted_while_a_tool_runs(tmp_path, rig, twice=True)

    run = read_run(project.path)
    assert (run.state, run.reason_code) == ("force_killed", "second_interrupt")
    assert read_attempt(project.path, "t1").outcome == "killed"
    assert run.tasks.killed == 1
    tasks = read_tasks(project.path)
    assert (tasks["t1"]["status"], tasks["t1"]["attempts"]) == ("open", 0)
    signals = [e.data["signal"] for e in read_events(project.path) if e.kind == "agent_signalled"]
    assert signals[-1] == "SIGKILL"


def test_an_api_that_refuses_the_key_fails_the_task_with_its_message(
    tmp_path: Path, rig: CliRig
) -> None:
    project = Project(tmp_path, rig, [scripted_task("t1", fail=401)])

    result = project.run()

    assert result.returncode == 1, result.stdout + result.stderr
    run = read_run(project.path)
    assert (run.state, run.reason_code) == ("failed", "task_failed")
    attempt = read_attempt(project.path, "t1")
    assert attempt.outcome == "failed"
    assert attempt.error is not None
    assert API_401_TEXT[rig.harness] in attempt.error.message, attempt.error.message
    assert read_tasks(project.path)["t1"]["status"] in ("retry", "failed")


def test_a_stuck_agent_leaves_its_task_open_with_the_reason(tmp_path: Path, rig: CliRig) -> None:
    reason = "the integration tests need a database I cannot reach"
    project = Project(tmp_path, rig, [scripted_task("t1", final=f"<stuck>{reason}</stuck>")])

    result = project.run()

    assert result.returncode == 1, result.stdout + result.stderr
    run = read_run(project.path)
    assert (run.state, run.reason_code) == ("failed", "agent_stuck")
    attempt = read_attempt(project.path, "t1")
    assert (attempt.outcome, attempt.stuck_reason) == ("stuck", reason)
    t1 = read_tasks(project.path)["t1"]
    assert t1["status"] == "open"
    assert reason in json.dumps(t1)


def test_a_worktree_run_leaves_the_starting_checkout_alone(tmp_path: Path, rig: CliRig) -> None:
    project = Project(tmp_path, rig, [commit_task("t1", "isolated.txt")])
    (project.path / "notes.txt").write_text("the user's own work in progress\n")
    before = checkout_state(project.path)

    result = project.run("--worktree")

    assert result.returncode == 0, result.stdout + result.stderr
    run = read_run(project.path)
    assert run.state == "completed"
    assert checkout_state(project.path) == before
    assert not (project.path / "isolated.txt").exists()
    commit = commit_adding(project.path, "isolated.txt")
    assert branches_containing(project.path, commit) == {run.branch}


def test_parallel_children_commit_only_on_their_own_branches(tmp_path: Path, rig: CliRig) -> None:
    project = Project(tmp_path, rig, [commit_task("a", "a.txt"), commit_task("b", "b.txt")])
    retry: tuple[str, ...] = ()
    if rig.harness == "opencode":
        create_database(rig, project.path)
        # Two OpenCode agents starting at once on one database now and then fail at start
        # ("database is locked", no request made): as the README says, retry.
        retry = ("--on-failure", "retry")
    main_before = git(project.path, "rev-parse", "main")

    result = project.run("--parallel", "2", *retry, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    run = read_run(project.path)
    assert run.state == "completed"
    assert sorted(c.state for c in run.children) == ["completed", "completed"]
    assert git(project.path, "rev-parse", "main") == main_before
    for child, name in zip(sorted(run.children, key=lambda c: c.task_id or ""), "ab", strict=True):
        commit = commit_adding(project.path, f"{name}.txt")
        child_record = read_run(project.path, child.run_id)
        # Made on the child's branch, reached the run branch by the merge, nowhere else (the
        # child's branch, merged, is deleted).
        assert branches_containing(project.path, commit) == {run.branch}
        assert git(project.path, "branch", "--list", child_record.branch or "") == ""
        assert child_record.budget.tokens_used > 0
    assert run.budget.tokens_used == sum(
        read_run(project.path, c.run_id).budget.tokens_used for c in run.children
    )
    # Between them, the two children reported exactly what the server handed out.
    assert run.budget.tokens_used == rig.server.usage_total(rig.counted_kinds).total
    # Merged into the run branch in the parent's own worktree; the checkout never saw them.
    assert {"a.txt", "b.txt"} <= set(
        git(project.path, "ls-tree", "--name-only", run.branch or "").split()
    )
    assert not (project.path / "a.txt").exists() and not (project.path / "b.txt").exists()
    assert git(project.path, "branch", "--show-current") == "main"
