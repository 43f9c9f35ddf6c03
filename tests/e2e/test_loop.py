"""Every way the task loop ends, through the real `cub run` process, a real git repository and
real scripted agents (`--harness command`).

Each test checks the ending (state, exit code, reason_code, history), the counters in run.json,
the per-attempt files (task.json, prompt.md, harness.log) and what happened to the task file.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cub.records.location import runs_dir
from cub.records.schemas import RunRecord
from tests.e2e.support import assert_no_traceback, command_harness
from tests.helpers.agents import is_alive, write_script
from tests.helpers.cli import (
    make_project,
    read_attempt,
    read_events,
    read_run,
    read_status,
    read_tasks,
    run_cub,
    run_dir,
    task,
)
from tests.helpers.exit_paths import assert_ending, exit_path
from tests.helpers.git import git

pytestmark = pytest.mark.timeout(60)

USAGE_LINE = '{"cub_usage": {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.01}}'
SECRET = "sk-ABCDEFGHIJKLMNOPQRSTUV123"

# The start of every agent: what it was given is saved beside the scripts (outside the
# project), one JSON file per invocation.
_PRELUDE = """
import json, os, subprocess, sys, time
from pathlib import Path
SEEN = Path({seen!r})
TASK = os.environ["CUB_TASK_ID"]
PROMPT = sys.stdin.read()
N = len(list(SEEN.glob(TASK + ".*.json"))) + 1
(SEEN / f"{{TASK}}.{{N}}.json").write_text(json.dumps({{
    "task": TASK, "n": N, "run": os.environ.get("CUB_RUN_ID"), "prompt": PROMPT,
    "prompt_file": os.environ.get("CUB_PROMPT_FILE"), "title": os.environ.get("CUB_TASK_TITLE"),
    "pid": os.getpid(),
}}))
def say(*lines):
    for line in lines:
        print(line, flush=True)
def commit(name, text):
    Path(name).write_text(text)
    subprocess.run(["git", "add", name], check=True)
    subprocess.run(["git", "commit", "-q", "-m", f"{{TASK}}: {{name}}"], check=True)
def done(code=0):
    sys.exit(code)
"""


def agent(bin_dir: Path, body: str, name: str = "agent") -> Path:
    """A Python agent: the prelude above, then ``body``."""
    seen = bin_dir / "seen"
    seen.mkdir(exist_ok=True)
    return write_script(bin_dir / name, _PRELUDE.format(seen=str(seen)) + body)


def seen(bin_dir: Path) -> list[dict[str, Any]]:
    """What each agent invocation was given, in the order they ran."""
    found = [json.loads(p.read_text()) for p in (bin_dir / "seen").glob("*.json")]
    return sorted(
        found, key=lambda s: os.path.getmtime(bin_dir / "seen" / f"{s['task']}.{s['n']}.json")
    )


def triggers(record: RunRecord) -> list[str]:
    return [t.trigger for t in record.history]


def assert_ended(
    result: Any, project: Path, state: str, exit_code: int, reason_code: str, trigger: str
) -> RunRecord:
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    assert_no_traceback(result)
    record = read_run(project)
    assert (record.state, record.exit_code, record.reason_code) == (
        state,
        exit_code,
        reason_code,
    ), record.reason
    assert record.recorded_by == "machine"
    assert record.history[-1].to == state
    assert record.history[-1].trigger == trigger
    assert triggers(record)[:2] == ["validate", "accept"]
    status = read_status(project)
    assert status.state == state
    assert status.current_task is None
    assert f"cub: {state} (exit {exit_code})" in result.stdout + result.stderr
    return record


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj")


def set_tasks(project: Path, *tasks: dict[str, Any]) -> None:
    """A new backlog: the file, and no ledger of what runs did to the one before."""
    import shutil

    from cub.records.location import state_dir
    from tests.helpers.cli import write_tasks

    write_tasks(project, tasks)
    shutil.rmtree(state_dir(project) / "backlog", ignore_errors=True)


def set_config(project: Path, config: dict[str, Any]) -> None:
    (project / ".cub" / "config.json").write_text(json.dumps(config))


def add_hook(project: Path, point: str, name: str, body: str) -> Path:
    directory = project / ".cub" / "hooks" / f"{point}.d"
    directory.mkdir(parents=True, exist_ok=True)
    return write_script(directory / name, body)


def env_logging_hook(log: Path) -> str:
    return (
        "#!/bin/sh\n"
        f'echo "$CUB_HOOK task=$CUB_TASK_ID outcome=$CUB_TASK_OUTCOME '
        f'exit=$CUB_EXIT_CODE state=$CUB_RUN_STATE run=$CUB_RUN_ID" >> {log}\n'
    )


# ------------------------------------------------------------------------- all tasks done


def test_all_tasks_done_with_commits_on_the_run_branch(project: Path, bin_dir: Path) -> None:
    set_tasks(
        project,
        task(
            "t1",
            "Write the greeting",
            description="Create greeting.txt for the welcome page.",
            acceptance_criteria=["greeting.txt exists", "it says hello"],
        ),
        task("t2", "Write the farewell", priority=1, acceptance_criteria="farewell.txt exists"),
    )
    main_head = git(project, "rev-parse", "HEAD")
    script = agent(
        bin_dir,
        f"""
commit(f"{{TASK}}.txt", f"work for {{TASK}}\\n")
say("working on " + TASK, {USAGE_LINE!r})
done(0)
""",
    )
    result = run_cub(["run", *command_harness(script)], project)
    record = assert_ended(result, project, "completed", 0, "all_tasks_done", "finish")
    run_id = record.run_id

    # Counters: P1 before P2, both succeeded, usage summed from the cub_usage lines.
    assert record.tasks.attempted == ["t2", "t1"]
    assert (record.tasks.selected, record.tasks.succeeded, record.tasks.failed) == (2, 2, 0)
    assert record.budget.tokens_used == 30
    assert record.budget.cost_usd == pytest.approx(0.02)
    assert (record.budget.iterations, record.budget.tasks_used) == (2, 2)
    assert triggers(record)[2:] == [
        "prepared",
        "start_task",
        "attempt_ended",
        "task_succeeded",
        "start_task",
        "attempt_ended",
        "task_succeeded",
        "finish",
    ]
    assert record.harness is not None and record.harness.name == "command"

    # The run's branch was created from main and holds one commit per task; main is untouched,
    # and so is the checkout: the run worked in a worktree of its own, removed at the end.
    branch = f"cub/{run_id}"
    assert record.branch == branch
    assert git(project, "branch", "--show-current") == "main"
    assert not (project / "t1.txt").exists()
    assert not (project / ".cub" / "worktrees" / run_id).exists()
    assert git(project, "rev-parse", "main") == main_head
    assert git(project, "merge-base", "main", branch) == main_head
    subjects = git(project, "log", "--reverse", "--format=%s", f"main..{branch}").splitlines()
    assert subjects == ["t2: t2.txt", "t1: t1.txt"]
    commits = git(project, "rev-list", "--reverse", f"main..{branch}").splitlines()

    tasks = read_tasks(project)
    for task_id, base, head in (("t2", main_head, commits[0]), ("t1", commits[0], commits[1])):
        entry = tasks[task_id]
        assert entry["status"] == "closed"
        assert entry["attempts"] == 1
        assert entry["closed_at"]
        short = [git(project, "rev-parse", "--short", ref) for ref in (base, head)]
        commit_range = "..".join(short)
        assert commit_range in entry["close_reason"]
        assert run_id in entry["close_reason"]

        attempt = read_attempt(project, task_id)
        assert (attempt.task_id, attempt.attempt, attempt.outcome) == (task_id, 1, "succeeded")
        assert attempt.exit_code == 0 and attempt.signal is None and attempt.error is None
        assert (attempt.usage.input_tokens, attempt.usage.output_tokens) == (10, 5)
        assert attempt.usage.cost_usd == pytest.approx(0.01)
        assert attempt.duration_s > 0

        task_dir = run_dir(project) / "tasks" / task_id
        log = (task_dir / "harness.log").read_text()
        assert f"working on {task_id}" in log and '"cub_usage"' in log

    # prompt.md: the loop's rules, then the task with its description and criteria; the
    # agent got exactly that on stdin and in $CUB_PROMPT_FILE, with its ids in the env.
    prompt_t1 = (run_dir(project) / "tasks" / "t1" / "prompt.md").read_text()
    assert "Rules:" in prompt_t1 and "<stuck>" in prompt_t1 and "Do not edit `.cub/`" in prompt_t1
    assert prompt_t1.index("Rules:") < prompt_t1.index("## Task t1: Write the greeting")
    assert "Create greeting.txt for the welcome page." in prompt_t1
    assert "- greeting.txt exists" in prompt_t1 and "- it says hello" in prompt_t1
    assert "- farewell.txt exists" in (run_dir(project) / "tasks" / "t2" / "prompt.md").read_text()
    given = {s["task"]: s for s in seen(bin_dir)}
    assert set(given) == {"t1", "t2"}
    assert given["t1"]["prompt"] == prompt_t1
    assert given["t1"]["run"] == run_id
    assert given["t1"]["title"] == "Write the greeting"
    assert (
        Path(given["t1"]["prompt_file"]).resolve()
        == run_dir(project) / "tasks" / "t1" / "prompt.md"
    )


def test_project_runloop_replaces_the_default_rules(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("only", "The only task"))
    (project / ".cub" / "runloop.md").write_text("HOUSE RULES: tabs, never spaces.\n")
    script = agent(bin_dir, "done(0)\n")
    result = run_cub(["run", *command_harness(script)], project)
    assert_ended(result, project, "completed", 0, "all_tasks_done", "finish")
    prompt = (run_dir(project) / "tasks" / "only" / "prompt.md").read_text()
    assert prompt.startswith("HOUSE RULES: tabs, never spaces.")
    assert "## Task only: The only task" in prompt
    assert "Rules:" not in prompt


# ------------------------------------------------------------------------- nothing to run


def test_nothing_ready_because_of_unmet_dependencies(project: Path, bin_dir: Path) -> None:
    set_tasks(
        project,
        task("done-1", status="closed"),
        task("blocked", dependsOn=["waiting"]),
        task("waiting", depends_on=["ghost-9"]),
    )
    script = agent(bin_dir, "done(0)\n")
    result = run_cub(["run", *command_harness(script)], project)
    record = assert_ended(result, project, "completed", 0, "no_ready_tasks", "finish")
    assert "ghost-9" in record.reason and "waiting" in record.reason
    assert record.tasks.attempted == []
    assert record.budget.iterations == 0
    assert seen(bin_dir) == []
    assert [read_tasks(project)[t]["status"] for t in ("blocked", "waiting")] == ["open", "open"]


def test_task_flag_on_a_closed_task(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a", status="closed"), task("b"))
    script = agent(bin_dir, "done(0)\n")
    result = run_cub(["run", "--task", "a", *command_harness(script)], project)
    record = assert_ended(result, project, "completed", 0, "task_done", "finish")
    assert record.tasks.attempted == []
    assert seen(bin_dir) == []
    assert read_tasks(project)["b"]["status"] == "open"
    # It made task/a for the work, and removed it again: nothing was committed on it.
    removed = [e.data for e in read_events(project) if e.kind == "branch_removed"]
    assert removed == [{"branch": "task/a", "why": "no commits"}]
    assert record.branch is None and git(project, "branch", "--list", "task/a") == ""


def test_task_flag_runs_just_that_task(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a", priority=0), task("b", priority=4), task("c"))
    script = agent(bin_dir, "done(0)\n")
    result = run_cub(["run", "--task", "b", *command_harness(script)], project)
    record = assert_ended(result, project, "completed", 0, "task_done", "finish")
    assert record.tasks.attempted == ["b"]
    tasks = read_tasks(project)
    assert [tasks[t]["status"] for t in "abc"] == ["open", "closed", "open"]


# ----------------------------------------------------------------------- failure policies


def test_failure_under_stop(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a", priority=1), task("b"))
    script = agent(bin_dir, "say('cannot do it'); done(3)\n")
    result = run_cub(["run", *command_harness(script)], project)
    record = assert_ended(result, project, "failed", 1, "task_failed", "stop_on_failure")
    assert record.tasks.attempted == ["a"]
    assert (record.tasks.failed, record.tasks.succeeded) == (1, 0)
    assert "a" in record.reason
    attempt = read_attempt(project, "a")
    assert (attempt.outcome, attempt.exit_code, attempt.attempt) == ("failed", 3, 1)
    assert attempt.error is not None and "3" in attempt.error.message
    assert "cannot do it" in (run_dir(project) / "tasks" / "a" / "harness.log").read_text()
    tasks = read_tasks(project)
    assert (tasks["a"]["status"], tasks["a"]["attempts"]) == ("retry", 1)
    assert tasks["a"].get("assignee") is None
    assert (tasks["b"]["status"], tasks["b"].get("attempts", 0)) == ("open", 0)


def test_failure_under_continue(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"), task("b"), task("c"))
    script = agent(bin_dir, "done(5 if TASK == 'b' else 0)\n")
    result = run_cub(["run", "--on-failure", "continue", *command_harness(script)], project)
    record = assert_ended(result, project, "failed", 1, "tasks_failed", "finish_failed")
    assert record.tasks.attempted == ["a", "b", "c"]
    assert (record.tasks.succeeded, record.tasks.failed) == (2, 1)
    assert "b" in record.reason
    assert "continue_loop" in triggers(record)
    tasks = read_tasks(project)
    assert [tasks[t]["status"] for t in "abc"] == ["closed", "retry", "closed"]
    assert read_attempt(project, "b").outcome == "failed"
    assert read_attempt(project, "b").exit_code == 5


def test_retries_exhausted(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("flaky", "Flaky task"))
    set_config(project, {"loop": {"max_attempts": 2}})
    script = agent(bin_dir, "say(f'FAILMARK-{N}: broke'); done(1)\n")
    result = run_cub(["run", "--on-failure", "retry", *command_harness(script)], project)
    record = assert_ended(result, project, "failed", 1, "retries_exhausted", "stop_on_failure")
    assert record.tasks.attempted == ["flaky"]
    assert record.budget.iterations == 2
    assert record.tasks.failed == 1
    assert triggers(record).count("start_task") == 2
    assert "continue_loop" in triggers(record)

    tasks = read_tasks(project)
    assert (tasks["flaky"]["status"], tasks["flaky"]["attempts"]) == ("failed", 2)
    assert "exhausted" in tasks["flaky"]["notes"]

    task_dir = run_dir(project) / "tasks" / "flaky"
    final = read_attempt(project, "flaky")
    assert (final.attempt, final.outcome) == (2, "failed")
    archived = msgspec.json.decode((task_dir / "attempt-1" / "task.json").read_bytes())
    assert (archived["attempt"], archived["outcome"]) == (1, "failed")
    assert "FAILMARK-1" in (task_dir / "attempt-1" / "harness.log").read_text()
    assert "Previous attempt" not in (task_dir / "attempt-1" / "prompt.md").read_text()
    assert "FAILMARK-2" in (task_dir / "harness.log").read_text()
    assert "FAILMARK-1" not in (task_dir / "harness.log").read_text()
    # The second attempt is told how the first one ended.
    second_prompt = (task_dir / "prompt.md").read_text()
    assert "Previous attempt" in second_prompt
    assert "FAILMARK-1: broke" in second_prompt
    assert [s["n"] for s in seen(bin_dir)] == [1, 2]


def test_retry_that_succeeds_the_second_time(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("flaky"))
    script = agent(bin_dir, "say(f'try {N}'); done(0 if N == 2 else 1)\n")
    result = run_cub(["run", "--on-failure", "retry", *command_harness(script)], project)
    record = assert_ended(result, project, "completed", 0, "all_tasks_done", "finish")
    assert (record.tasks.succeeded, record.tasks.failed) == (1, 0)
    assert record.budget.iterations == 2
    tasks = read_tasks(project)
    assert (tasks["flaky"]["status"], tasks["flaky"]["attempts"]) == ("closed", 2)
    assert read_attempt(project, "flaky").attempt == 2
    assert read_attempt(project, "flaky").outcome == "succeeded"
    assert (run_dir(project) / "tasks" / "flaky" / "attempt-1" / "task.json").is_file()


def test_stuck_agent(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"), task("b"))
    script = agent(bin_dir, "say('looking around', '<stuck>need creds</stuck>'); done(0)\n")
    result = run_cub(["run", *command_harness(script)], project)
    record = assert_ended(result, project, "failed", 1, "agent_stuck", "stop_on_failure")
    assert "need creds" in record.reason
    assert record.tasks.attempted == ["a"]
    attempt = read_attempt(project, "a")
    assert (attempt.outcome, attempt.stuck_reason) == ("stuck", "need creds")
    assert attempt.exit_code == 0
    tasks = read_tasks(project)
    assert tasks["a"]["status"] == "open"
    assert "need creds" in tasks["a"]["notes"]
    assert tasks["b"]["status"] == "open"


def test_last_lines_of_an_agent_that_exits_at_once_are_parsed(project: Path, bin_dir: Path) -> None:
    """Output still buffered when the agent exits is parsed too: usage and <stuck> count."""
    set_tasks(project, task("a"))
    script = write_script(
        bin_dir / "quick",
        f"#!/bin/sh\necho '{USAGE_LINE}'\necho '<stuck>need creds</stuck>'\n",
    )
    result = run_cub(["run", *command_harness(script)], project)
    attempt = read_attempt(project, "a")
    assert (attempt.usage.input_tokens, attempt.usage.output_tokens) == (10, 5)
    assert attempt.outcome == "stuck"
    assert result.returncode == 1


# --------------------------------------------------------------------------------- budgets


def test_iteration_budget(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"), task("b"), task("c"))
    script = agent(bin_dir, "done(0)\n")
    result = run_cub(["run", "--max-iterations", "1", *command_harness(script)], project)
    record = assert_ended(
        result, project, "budget_exhausted", 3, "iteration_budget", "exhaust_budget"
    )
    assert record.history[-1].from_ == "selecting"
    assert (record.budget.iterations, record.budget.iterations_limit) == (1, 1)
    assert record.tasks.attempted == ["a"]
    tasks = read_tasks(project)
    assert [tasks[t]["status"] for t in "abc"] == ["closed", "open", "open"]


def test_task_budget(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"), task("b"), task("c"))
    script = agent(bin_dir, "done(0)\n")
    result = run_cub(["run", "--budget-tasks", "2", *command_harness(script)], project)
    record = assert_ended(result, project, "budget_exhausted", 3, "task_budget", "exhaust_budget")
    assert (record.budget.tasks_used, record.budget.tasks_limit) == (2, 2)
    assert record.tasks.attempted == ["a", "b"]
    tasks = read_tasks(project)
    assert [tasks[t]["status"] for t in "abc"] == ["closed", "closed", "open"]


def test_token_budget_stops_the_attempt_mid_stream(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"), task("b"))
    usage = '{"cub_usage": {"input_tokens": 100, "output_tokens": 50, "cost_usd": 0.5}}'
    script = agent(bin_dir, f"say({usage!r}); time.sleep(30); done(0)\n")
    started = time.monotonic()
    result = run_cub(["run", "--budget-tokens", "100", *command_harness(script)], project)
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"the token budget took {elapsed:.1f}s to stop a 30 s agent"
    record = assert_ended(result, project, "budget_exhausted", 3, "token_budget", "exhaust_budget")
    assert (record.budget.tokens_used, record.budget.tokens_limit) == (150, 100)
    assert record.budget.cost_usd == pytest.approx(0.5)
    assert record.tasks.interrupted == 1
    assert record.tasks.attempted == ["a"]
    attempt = read_attempt(project, "a")
    assert attempt.outcome == "interrupted"
    assert (attempt.usage.input_tokens, attempt.usage.output_tokens) == (100, 50)
    assert attempt.error is not None and "token budget" in attempt.error.message
    tasks = read_tasks(project)
    assert tasks["a"]["status"] == "open" and tasks["a"].get("assignee") is None
    assert tasks["b"]["status"] == "open"
    (invocation,) = seen(bin_dir)
    assert not is_alive(invocation["pid"]), "the agent outlived its run"


def test_cost_budget(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"), task("b"))
    script = agent(bin_dir, f"say({USAGE_LINE!r}); done(0)\n")
    result = run_cub(["run", "--budget", "0.015", *command_harness(script)], project)
    record = assert_ended(result, project, "budget_exhausted", 3, "cost_budget", "exhaust_budget")
    assert record.budget.cost_usd == pytest.approx(0.02)
    assert record.tasks.attempted == ["a", "b"]


def test_once_runs_one_task(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"), task("b"), task("c"))
    script = agent(bin_dir, "done(0)\n")
    result = run_cub(["run", "--once", *command_harness(script)], project)
    record = assert_ended(result, project, "completed", 0, "once_done", "finish")
    assert record.tasks.attempted == ["a"]
    assert record.budget.iterations == 1
    tasks = read_tasks(project)
    assert [tasks[t]["status"] for t in "abc"] == ["closed", "open", "open"]


# ----------------------------------------------------------------------------------- hooks


def test_failing_pre_loop_hook_with_fail_fast(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"))
    set_config(project, {"hooks": {"fail_fast": True}})
    add_hook(project, "pre-loop", "10-check", "#!/bin/sh\necho 'no database'\nexit 4\n")
    add_hook(project, "pre-loop", "20-never", "#!/bin/sh\nexit 0\n")
    log = bin_dir / "hooks.txt"
    add_hook(project, "post-loop", "log", env_logging_hook(log))
    script = agent(bin_dir, "done(0)\n")
    result = run_cub(["run", *command_harness(script)], project)
    record = assert_ended(result, project, "failed", 1, "hook_failed", "setup_failed")
    assert "10-check" in record.reason
    assert seen(bin_dir) == []
    assert read_tasks(project)["a"]["status"] == "open"
    hooks_log = (run_dir(project) / "hooks.log").read_text()
    assert "no database" in hooks_log
    assert "20-never" not in hooks_log  # fail_fast stops at the first failing hook
    # post-loop still runs, and sees the state the run is about to enter.
    assert "post-loop" in log.read_text() and "state=failed" in log.read_text()


def test_failing_pre_loop_hook_without_fail_fast_does_not_stop_the_run(
    project: Path, bin_dir: Path
) -> None:
    set_tasks(project, task("a"))
    add_hook(project, "pre-loop", "10-check", "#!/bin/sh\nexit 4\n")
    script = agent(bin_dir, "done(0)\n")
    result = run_cub(["run", *command_harness(script)], project)
    assert_ended(result, project, "completed", 0, "all_tasks_done", "finish")
    hook_events = [e for e in read_events(project) if e.kind == "hook"]
    assert hook_events[0].data["point"] == "pre-loop"
    assert hook_events[0].data["hooks"][0]["exit_code"] == 4


def test_failing_pre_task_hook_with_fail_fast(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"), task("b"))
    set_config(project, {"hooks": {"fail_fast": True}})
    add_hook(project, "pre-task", "guard", "#!/bin/sh\nexit 9\n")
    log = bin_dir / "hooks.txt"
    add_hook(project, "post-loop", "log", env_logging_hook(log))
    script = agent(bin_dir, "done(0)\n")
    result = run_cub(["run", *command_harness(script)], project)
    record = assert_ended(result, project, "failed", 1, "hook_failed", "hook_failed")
    assert "guard" in record.reason and "a" in record.reason
    assert seen(bin_dir) == []
    tasks = read_tasks(project)
    assert tasks["a"]["status"] == "open" and tasks["a"].get("assignee") is None
    # The agent never ran: the claim's attempt is given back, so retries are not used up.
    assert tasks["a"].get("attempts", 0) == 0
    assert tasks["b"]["status"] == "open"
    assert "post-loop" in log.read_text() and "state=failed" in log.read_text()


def test_post_task_and_post_loop_hooks_run_on_failure(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"))
    log = bin_dir / "hooks.txt"
    for point in ("pre-loop", "pre-task", "post-task", "on-error", "post-loop"):
        add_hook(project, point, "log", env_logging_hook(log))
    script = agent(bin_dir, "done(7)\n")
    result = run_cub(["run", *command_harness(script)], project)
    record = assert_ended(result, project, "failed", 1, "task_failed", "stop_on_failure")
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == [
        "pre-loop",
        "pre-task",
        "post-task",
        "on-error",
        "post-loop",
    ]
    post_task = lines[2]
    assert "task=a" in post_task and "outcome=failed" in post_task and "exit=7" in post_task
    assert "state=failed" in lines[-1]
    assert all(f"run={record.run_id}" in line for line in lines)


def test_hooks_see_success_too(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"))
    log = bin_dir / "hooks.txt"
    add_hook(project, "post-task", "log", env_logging_hook(log))
    add_hook(project, "post-loop", "log", env_logging_hook(log))
    result = run_cub(["run", *command_harness(agent(bin_dir, "done(0)\n"))], project)
    assert_ended(result, project, "completed", 0, "all_tasks_done", "finish")
    post_task, post_loop = log.read_text().splitlines()
    assert "outcome=succeeded" in post_task and "exit=0" in post_task
    assert "state=completed" in post_loop


def test_no_hooks_flag(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"))
    set_config(project, {"hooks": {"fail_fast": True}})
    add_hook(project, "pre-loop", "10-check", "#!/bin/sh\nexit 4\n")
    result = run_cub(["run", "--no-hooks", *command_harness(agent(bin_dir, "done(0)\n"))], project)
    assert_ended(result, project, "completed", 0, "all_tasks_done", "finish")


# ------------------------------------------------------------------------------- verify


def test_failing_verify_fails_a_successful_attempt(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"))
    set_config(project, {"loop": {"verify": ["echo checking", "exit 1"]}})
    script = agent(bin_dir, "done(0)\n")
    result = run_cub(["run", *command_harness(script)], project)
    record = assert_ended(result, project, "failed", 1, "verify_failed", "stop_on_failure")
    assert record.tasks.failed == 1
    attempt = read_attempt(project, "a")
    assert (attempt.outcome, attempt.exit_code) == ("failed", 0)
    assert attempt.error is not None and attempt.error.type == "VerifyFailed"
    assert "exit 1" in attempt.error.message
    assert "checking" in (run_dir(project) / "tasks" / "a" / "verify.log").read_text()
    assert read_tasks(project)["a"]["status"] == "retry"


def test_passing_verify(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"))
    set_config(project, {"loop": {"verify": ["true", "test -f a.txt"]}})
    script = agent(bin_dir, "commit('a.txt', 'a'); done(0)\n")
    result = run_cub(["run", *command_harness(script)], project)
    assert_ended(result, project, "completed", 0, "all_tasks_done", "finish")
    assert read_attempt(project, "a").outcome == "succeeded"
    assert read_tasks(project)["a"]["status"] == "closed"


# ---------------------------------------------------------------------------- exceptions


def test_an_agent_that_corrupts_the_backlog_ends_the_run_as_what_it_is(
    project: Path, bin_dir: Path
) -> None:
    set_tasks(project, task("a"), task("b"))
    script = agent(
        bin_dir,
        "Path('.cub/tasks.jsonl').write_text('this is not json\\n'); done(0)\n",
    )
    # --in-place: the agent works in the checkout that holds the backlog, and breaks it.
    result = run_cub(["run", "--in-place", *command_harness(script)], project)
    record = assert_ended(result, project, "failed", 1, "task_file_changed", "backlog_changed")
    assert record.error is None  # not a bug of cub's: no traceback to show
    assert "tasks.jsonl:1" in record.reason
    assert read_attempt(project, "a").outcome == "succeeded"
    assert len([line for line in result.stderr.splitlines() if line.startswith("  File ")]) == 0


# ------------------------------------------------------------------------------ output


def test_a_failure_says_why_as_it_happens(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"), task("b"))
    script = agent(
        bin_dir,
        "import os\n"
        "if os.environ['CUB_TASK_ID'] == 'a':\n"
        "    say('working on it', 'Error: the database is locked', '')\n"
        "    done(3)\n"
        "os.kill(os.getpid(), 9)\n",
    )
    result = run_cub(["run", "--on-failure", "continue", *command_harness(script)], project)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("✗ a: failed in ")
        and line.endswith("(exit 3): Error: the database is locked")
        for line in lines
    ), lines
    assert any(line.startswith("✗ b: failed in ") and "signal 9" in line for line in lines), lines
    assert f"  record: {run_dir(project)}" in lines


def test_stream_shows_agent_output(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"))
    script = agent(bin_dir, "say('hello from the agent'); done(0)\n")
    quiet = run_cub(["run", *command_harness(script)], project)
    assert quiet.returncode == 0
    assert "hello from the agent" not in quiet.stdout

    set_tasks(project, task("a"))
    result = run_cub(["run", "--stream", *command_harness(script)], project)
    assert result.returncode == 0, result.stderr
    assert "hello from the agent" in result.stdout


def test_json_prints_the_run_record(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"))
    script = agent(bin_dir, f"say('agent chatter', {USAGE_LINE!r}); done(0)\n")
    result = run_cub(["run", "--json", "--stream", *command_harness(script)], project)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    printed = msgspec.json.decode(lines[0], type=RunRecord)
    on_disk = read_run(project)
    assert printed == on_disk
    assert (printed.state, printed.reason_code) == ("completed", "all_tasks_done")
    assert printed.budget.tokens_used == 15
    assert "cub: completed" in result.stderr  # the human summary moves to stderr
    assert "agent chatter" in result.stderr


def test_json_of_a_failed_run(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"))
    result = run_cub(["run", "--json", *command_harness(agent(bin_dir, "done(2)\n"))], project)
    assert result.returncode == 1
    printed = json.loads(result.stdout)
    assert (printed["state"], printed["exit_code"], printed["reason_code"]) == (
        "failed",
        1,
        "task_failed",
    )


def test_ready_json_lists_tasks_in_selection_order(project: Path) -> None:
    set_tasks(
        project,
        task("fresh-p2-first"),
        task("retry-p0", priority="P0", status="retry", attempts=1),
        task("epic-p0", priority=0, issue_type="epic"),
        task("gate-p0", priority=0, issue_type="gate"),
        task("fresh-p0", priority=0),
        task("waits-p0", priority=0, dependsOn=["fresh-p1"]),
        task("fresh-p1", priority="P1"),
        task("closed-p0", priority=0, status="closed"),
        task("after-closed", dependsOn=["closed-p0"]),
        task("failed-p0", priority=0, status="failed"),
        task("running-p0", priority=0, status="in_progress", assignee="another-run"),
        task("retry-p2", status="retry"),
        task("fresh-p2-last"),
    )
    result = run_cub(["run", "--ready", "--json"], project)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [t["id"] for t in payload["ready"]] == [
        "fresh-p0",
        "retry-p0",
        "fresh-p1",
        "fresh-p2-first",
        "after-closed",
        "fresh-p2-last",
        "retry-p2",
    ]
    assert payload["state"] == "completed"
    assert payload["ready"][1]["priority"] == 0
    record = read_run(project, payload["run_id"])
    assert (record.mode, record.state, record.reason_code) == ("dry-run", "completed", "dry_run")
    # The plan is all of it: waits-p0 comes once fresh-p1 (which it depends on) is done.
    plan = [(t["id"], t["ready_now"], t["after"]) for t in payload["plan"]]
    assert plan == [
        ("fresh-p0", True, []),
        ("retry-p0", True, []),
        ("fresh-p1", True, []),
        ("waits-p0", False, ["fresh-p1"]),
        ("fresh-p2-first", True, []),
        ("after-closed", True, []),
        ("fresh-p2-last", True, []),
        ("retry-p2", True, []),
    ]
    assert record.tasks.selected == 8
    assert record.tasks.attempted == []
    # A dry run changes nothing.
    assert read_tasks(project)["fresh-p0"]["status"] == "open"
    assert git(project, "branch", "--show-current") == "main"


# ------------------------------------------------------------------ secrets and files


def test_secrets_are_redacted_in_every_record(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a", description=f"Use the key {SECRET} to call the API."))
    set_config(project, {"redaction": {"patterns": ["hunter2-[0-9]+"]}})
    script = agent(
        bin_dir,
        f"""
say("key is {SECRET}", "password hunter2-4711")
print("stderr {SECRET}", file=sys.stderr, flush=True)
say("<stuck>the key {SECRET} was refused</stuck>")
done(0)
""",
    )
    result = run_cub(["run", "--on-failure", "continue", *command_harness(script)], project)
    assert result.returncode == 1, result.stderr
    root = run_dir(project)
    files = [p for p in root.rglob("*") if p.is_file()]
    assert {"prompt.md", "harness.log", "task.json", "run.json", "events.jsonl"} <= {
        p.name for p in files
    }
    for path in files:
        text = path.read_text(errors="replace")
        assert SECRET not in text, f"secret in {path.relative_to(root)}"
        assert "hunter2-4711" not in text, f"configured secret in {path.relative_to(root)}"
    assert "[REDACTED]" in (root / "tasks" / "a" / "prompt.md").read_text()
    log = (root / "tasks" / "a" / "harness.log").read_text()
    assert log.count("[REDACTED]") >= 4
    assert read_attempt(project, "a").stuck_reason == "the key [REDACTED] was refused"
    # The stuck reason noted in the task file (which is committed) is redacted too.
    notes = read_tasks(project)["a"]["notes"]
    assert "[REDACTED]" in notes and SECRET not in notes
    # The agent itself got the real text.
    assert SECRET in seen(bin_dir)[0]["prompt"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_run_directories_are_private_and_latest_follows_the_newest(
    project: Path, bin_dir: Path
) -> None:
    set_tasks(project, task("a"), task("b"))
    script = agent(bin_dir, "done(0)\n")
    first = run_cub(["run", "--name", "first", "--once", *command_harness(script)], project)
    assert first.returncode == 0, first.stderr
    runs = runs_dir(project)
    assert os.readlink(runs / "latest") == "first"
    second = run_cub(["run", "--name", "second", "--once", *command_harness(script)], project)
    assert second.returncode == 0, second.stderr
    assert os.readlink(runs / "latest") == "second"
    assert read_run(project).run_id == "second"
    assert _mode(runs) == 0o700
    for name in ("first", "second"):
        assert _mode(runs / name) == 0o700
    # A rejected run and a dry run keep their records, but `latest` (and `cub status`) stay
    # with the last run that did work.
    rejected = run_cub(["run", "--name", "third", "--no-network"], project)
    assert rejected.returncode == 2
    dry = run_cub(["run", "--name", "fourth", "--ready"], project)
    assert dry.returncode == 0
    assert os.readlink(runs / "latest") == "second"
    assert (runs / "third" / "run.json").is_file() and (runs / "fourth" / "run.json").is_file()
    status = run_cub(["status"], project).stdout
    assert status.startswith("last run second: completed"), status
    listed = run_cub(["runs", "list"], project).stdout
    assert "third" in listed and "fourth" in listed
    worked = run_cub(["runs", "list", "--worked"], project).stdout
    assert "third" not in worked and "fourth" not in worked and "second" in worked


def test_every_directory_under_a_run_is_private(project: Path, bin_dir: Path) -> None:
    set_tasks(project, task("a"))
    result = run_cub(["run", *command_harness(agent(bin_dir, "done(0)\n"))], project)
    assert result.returncode == 0
    root = run_dir(project)
    directories = [root, *(p for p in root.rglob("*") if p.is_dir())]
    assert len(directories) >= 3
    assert {str(p.relative_to(root)): oct(_mode(p)) for p in directories} == {
        str(p.relative_to(root)): oct(0o700) for p in directories
    }


@exit_path("finish", "selecting", "promise_complete")
def test_promise_complete_is_recorded_and_ends_the_run_when_the_backlog_agrees(
    project: Path, bin_dir: Path
) -> None:
    set_tasks(project, task("a", priority=0), task("b", priority=1))
    script = agent(bin_dir, "say('<promise>COMPLETE</promise>')\ndone(0)\n")
    result = run_cub(["run", *command_harness(script)], project)
    # After "a" the backlog still has "b": the claim is recorded and the loop goes on; after
    # "b" nothing is left, and the run ends on the agent's word.
    record = assert_ended(result, project, "completed", 0, "promise_complete", "finish")
    assert_ending(project, result.returncode, "finish", "selecting", "promise_complete")
    assert record.tasks.attempted == ["a", "b"]
    promises = [e for e in read_events(project) if e.kind == "promise_complete"]
    assert [(e.task_id, e.data["tasks_left"]) for e in promises] == [("a", True), ("b", False)]


def test_the_dry_run_shows_the_order_the_run_takes(project: Path, bin_dir: Path) -> None:
    set_tasks(
        project,
        task("d1", priority=1),
        task("d2", dependsOn=["d1"]),
        task("d3", priority=3, dependsOn=["d2"]),
        task("d4"),
        task("d5", dependsOn=["gone"]),
    )
    dry = run_cub(["run", "--ready"], project)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert [line.split()[2] for line in lines[:4]] == ["d1", "d2", "d4", "d3"]
    assert lines[1].endswith("— after d1") and lines[0].endswith("— ready")
    assert "not in this run:" in lines
    assert any("d5" in line and "blocked by gone (no such task)" in line for line in lines)
    planned = json.loads(run_cub(["run", "--ready", "--json"], project).stdout)["plan"]
    result = run_cub(["run", *command_harness(agent(bin_dir, "done(0)\n"))], project)
    assert result.returncode == 0, result.stderr
    assert (
        read_run(project).tasks.attempted
        == [t["id"] for t in planned]
        == [
            "d1",
            "d2",
            "d4",
            "d3",
        ]
    )
