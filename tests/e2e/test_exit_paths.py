"""The evidence of statecharts/exit-paths.md: one scenario per row, each driving the real `cub`
process into that ending and checking every artifact the row lists (tests/helpers/exit_paths.py).

A scenario is marked `@exit_path(trigger, from state, reason_code)`; the generated audit names it
in the row's last column, and tests/chart/test_audit.py fails when a row has none.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from cub.lifecycle.signals import SAME_REQUEST_WINDOW
from cub.records.location import runs_dir
from tests.e2e.support import command_harness
from tests.helpers.agents import (
    TEST_TOKEN_VAR,
    processes_with_token,
    sleeping_agent,
    wait_for_file,
    wait_until,
    write_script,
)
from tests.helpers.cli import (
    CUB,
    cub_env,
    make_project,
    read_attempt,
    read_status,
    read_tasks,
    run_cub,
    run_dir,
    task,
    write_tasks,
)
from tests.helpers.exit_paths import assert_ending, exit_path
from tests.helpers.git import make_repo

pytestmark = pytest.mark.timeout(60)

OK = "done(0)\n"
# Commits a file named after its task, then succeeds.
COMMIT = (
    "import os, subprocess\n"
    "name = os.environ['CUB_TASK_ID'] + '.txt'\n"
    "open(name, 'w').write('done\\n')\n"
    "subprocess.run(['git', 'add', name], check=True)\n"
    "subprocess.run(['git', 'commit', '-q', '-m', name], check=True)\n"
    "done(0)\n"
)
FAIL = "done(1)\n"


def agent(bin_dir: Path, body: str) -> list[str]:
    """``--harness command`` running a Python agent: a helper or two, then ``body``."""
    script = write_script(
        bin_dir / "agent",
        "import sys\n"
        "def say(*lines):\n"
        "    for line in lines:\n"
        "        print(line, flush=True)\n"
        "def done(code=0):\n"
        "    sys.exit(code)\n" + body,
    )
    return command_harness(script)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj", [task("a"), task("b")])


def set_config(project: Path, config: dict[str, Any]) -> None:
    (project / ".cub" / "config.json").write_text(json.dumps(config))


def add_hook(project: Path, point: str, body: str) -> None:
    directory = project / ".cub" / "hooks" / f"{point}.d"
    directory.mkdir(parents=True, exist_ok=True)
    write_script(directory / "10-hook", body)


class Background:
    """A `cub run` started in its own session, its agents carrying a per-test token."""

    def __init__(
        self,
        project: Path,
        args: Sequence[str],
        *,
        stdin: Any = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.token = uuid.uuid4().hex
        self.proc = subprocess.Popen(
            [*CUB, "run", *args],
            cwd=project,
            env=cub_env({**(env or {}), TEST_TOKEN_VAR: self.token}),
            text=True,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def send(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait(self) -> int:
        self.proc.communicate(timeout=30)
        return self.proc.returncode

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        for proc in processes_with_token(self.token):
            proc.kill()


@pytest.fixture
def started() -> Iterator[list[Background]]:
    runs: list[Background] = []
    yield runs
    for run in runs:
        run.cleanup()


def start(runs: list[Background], project: Path, *args: str, stdin: Any = None) -> Background:
    run = Background(project, args, stdin=stdin)
    runs.append(run)
    return run


def start_with(
    runs: list[Background], project: Path, env: dict[str, str], *args: str
) -> Background:
    """`start`, with ``env`` added to the run's environment."""
    run = Background(project, args, env=env)
    runs.append(run)
    return run


def wait_state(project: Path, state: str) -> None:
    def there() -> bool:
        try:
            return read_status(project).state == state
        except (OSError, ValueError):
            return False

    wait_until(there, timeout=20, what=f"status.json in {state}")


def recover(project: Path, token: str) -> None:
    """The next command finds the dead runner and records its ending."""
    result = run_cub(["runs", "list"], project, env={TEST_TOKEN_VAR: token})
    assert result.returncode == 0, result.stderr
    assert "recovered run" in result.stderr


# ------------------------------------------------------------------------------- rejections


@exit_path("reject", "created", "usage_error")
def test_reject_usage_error(project: Path) -> None:
    result = run_cub(["run", "--bogus"], project)
    assert_ending(project, result.returncode, "reject", "created", "usage_error")


def _reject(
    project: Path, args: Sequence[str], code: str, env: dict[str, str] | None = None
) -> None:
    result = run_cub(["run", *args], project, env=env)
    assert_ending(project, result.returncode, "reject", "validating", code)
    assert all(t["status"] == "open" for t in read_tasks(project).values())


@exit_path("reject", "validating", "flag_conflict")
def test_reject_flag_conflict(project: Path) -> None:
    _reject(project, ["--worktree", "--use-current-branch"], "flag_conflict")


@exit_path("reject", "validating", "invalid_config")
def test_reject_invalid_config(project: Path) -> None:
    (project / ".cub" / "config.json").write_text("{ not json\n")
    _reject(project, ["--harness", "command", "--harness-cmd", "true"], "invalid_config")


@exit_path("reject", "validating", "invalid_task_file")
def test_reject_invalid_task_file(project: Path) -> None:
    (project / ".cub" / "tasks.jsonl").write_text("this is not json\n")
    result = run_cub(["run", "--harness", "command", "--harness-cmd", "true"], project)
    assert_ending(project, result.returncode, "reject", "validating", "invalid_task_file")


@exit_path("reject", "validating", "invalid_name")
def test_reject_invalid_name(project: Path) -> None:
    _reject(
        project, ["--name", "a/b", "--harness", "command", "--harness-cmd", "true"], "invalid_name"
    )


@exit_path("reject", "validating", "invalid_flag")
def test_reject_invalid_flag(project: Path) -> None:
    _reject(
        project, ["--grace", "abc", "--harness", "command", "--harness-cmd", "true"], "invalid_flag"
    )


@exit_path("reject", "validating", "unknown_harness")
def test_reject_unknown_harness(project: Path) -> None:
    _reject(project, ["--harness", "nope"], "unknown_harness")


@exit_path("reject", "validating", "harness_not_found")
def test_reject_harness_not_found(project: Path) -> None:
    _reject(project, command_harness("no-such-agent-program"), "harness_not_found")


@exit_path("reject", "validating", "missing_harness_command")
def test_reject_missing_harness_command(project: Path) -> None:
    _reject(project, ["--harness", "command"], "missing_harness_command")


@exit_path("reject", "validating", "not_a_git_repo")
def test_reject_not_a_git_repo(tmp_path: Path) -> None:
    project = tmp_path / "plain"
    project.mkdir()
    write_tasks(project, [task("a")])
    _reject(project, ["--harness", "command", "--harness-cmd", "true"], "not_a_git_repo")


@exit_path("reject", "validating", "main_branch")
def test_reject_main_branch(project: Path) -> None:
    _reject(
        project,
        ["--in-place", "--use-current-branch", "--harness", "command", "--harness-cmd", "true"],
        "main_branch",
    )


@exit_path("reject", "validating", "no_backend")
def test_reject_no_backend(tmp_path: Path) -> None:
    project = make_repo(tmp_path / "repo")
    result = run_cub(["run", "--harness", "command", "--harness-cmd", "true"], project)
    assert_ending(project, result.returncode, "reject", "validating", "no_backend")


@exit_path("reject", "validating", "invalid_direct_input")
def test_reject_invalid_direct_input(project: Path) -> None:
    _reject(
        project,
        ["--direct", "  ", "--harness", "command", "--harness-cmd", "true"],
        "invalid_direct_input",
    )


@exit_path("reject", "validating", "docker_unavailable")
def test_reject_docker_unavailable(project: Path) -> None:
    _reject(
        project,
        ["--sandbox", "--harness", "command", "--harness-cmd", "true"],
        "docker_unavailable",
        env={"DOCKER_HOST": "unix:///nonexistent.sock"},
    )


@exit_path("reject", "validating", "task_not_found")
def test_reject_task_not_found(project: Path) -> None:
    _reject(
        project,
        ["--task", "zzz", "--harness", "command", "--harness-cmd", "true"],
        "task_not_found",
    )


@exit_path("reject", "validating", "records_unwritable")
def test_reject_records_unwritable(project: Path, bin_dir: Path) -> None:
    """The one ending without a record: nothing can create the run's directory (a file is
    where it would go), so cub does no work and says so on stderr with exit 2."""
    runs = runs_dir(project)
    runs.parent.mkdir(parents=True, exist_ok=True)
    runs.write_text("not a directory\n")
    ran = bin_dir / "ran"
    result = run_cub(["run", *agent(bin_dir, f"open({str(ran)!r}, 'w').close()\n")], project)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot write run records" in result.stderr
    assert runs.read_text() == "not a directory\n"
    assert not ran.exists()
    assert all(t["status"] == "open" for t in read_tasks(project).values())


# ------------------------------------------------------------------------- preparing, dry run


@exit_path("listed", "preparing", "dry_run")
def test_listed_dry_run(project: Path) -> None:
    result = run_cub(["run", "--ready"], project)
    assert_ending(project, result.returncode, "listed", "preparing", "dry_run")
    assert "task a" in result.stdout


@exit_path("setup_failed", "preparing", "hook_failed")
def test_setup_failed_pre_loop_hook(project: Path, bin_dir: Path) -> None:
    set_config(project, {"hooks": {"fail_fast": True}})
    add_hook(project, "pre-loop", "#!/bin/sh\nexit 4\n")
    result = run_cub(["run", *agent(bin_dir, OK)], project)
    assert_ending(project, result.returncode, "setup_failed", "preparing", "hook_failed")
    assert read_tasks(project)["a"]["status"] == "open"


# ------------------------------------------------------------------------- the loop's endings


@exit_path("finish", "selecting", "all_tasks_done")
def test_finish_all_tasks_done(project: Path, bin_dir: Path) -> None:
    result = run_cub(["run", *agent(bin_dir, OK)], project)
    assert_ending(project, result.returncode, "finish", "selecting", "all_tasks_done")
    assert {t["status"] for t in read_tasks(project).values()} == {"closed"}


@exit_path("finish", "selecting", "no_ready_tasks")
def test_finish_no_ready_tasks(tmp_path: Path, bin_dir: Path) -> None:
    project = make_project(tmp_path / "proj", [task("blocked", depends_on=["ghost"])])
    result = run_cub(["run", *agent(bin_dir, OK)], project)
    assert_ending(project, result.returncode, "finish", "selecting", "no_ready_tasks")


@exit_path("finish", "selecting", "filtered_out")
def test_finish_filtered_out(project: Path, bin_dir: Path) -> None:
    result = run_cub(["run", "--label", "nothing-has-this", *agent(bin_dir, OK)], project)
    assert_ending(project, result.returncode, "finish", "selecting", "filtered_out")


@exit_path("finish", "selecting", "task_done")
def test_finish_task_done(project: Path, bin_dir: Path) -> None:
    result = run_cub(["run", "--task", "b", *agent(bin_dir, OK)], project)
    assert_ending(project, result.returncode, "finish", "selecting", "task_done", task_id="b")
    assert read_tasks(project)["b"]["status"] == "closed"


@exit_path("finish", "selecting", "once_done")
def test_finish_once_done(project: Path, bin_dir: Path) -> None:
    result = run_cub(["run", "--once", *agent(bin_dir, OK)], project)
    assert_ending(project, result.returncode, "finish", "selecting", "once_done", task_id="a")
    assert read_tasks(project)["b"]["status"] == "open"


@exit_path("finish_failed", "selecting", "tasks_failed")
def test_finish_failed_tasks_failed(project: Path, bin_dir: Path) -> None:
    result = run_cub(["run", "--on-failure", "continue", *agent(bin_dir, FAIL)], project)
    assert_ending(project, result.returncode, "finish_failed", "selecting", "tasks_failed")


@exit_path("exhaust_budget", "selecting", "task_budget")
def test_exhaust_task_budget(project: Path, bin_dir: Path) -> None:
    result = run_cub(["run", "--budget-tasks", "1", *agent(bin_dir, OK)], project)
    assert_ending(project, result.returncode, "exhaust_budget", "selecting", "task_budget")
    assert read_tasks(project)["b"]["status"] == "open"


@exit_path("exhaust_budget", "selecting", "iteration_budget")
def test_exhaust_iteration_budget(project: Path, bin_dir: Path) -> None:
    result = run_cub(["run", "--max-iterations", "1", *agent(bin_dir, OK)], project)
    assert_ending(project, result.returncode, "exhaust_budget", "selecting", "iteration_budget")


@exit_path("hook_failed", "executing", "hook_failed")
def test_pre_task_hook_failed(project: Path, bin_dir: Path) -> None:
    set_config(project, {"hooks": {"fail_fast": True}})
    add_hook(project, "pre-task", "#!/bin/sh\nexit 9\n")
    result = run_cub(["run", *agent(bin_dir, OK)], project)
    # The hook runs before the agent starts: no attempt, so no task.json.
    assert_ending(project, result.returncode, "hook_failed", "executing", "hook_failed")
    assert not (run_dir(project) / "tasks" / "a" / "task.json").exists()
    assert read_tasks(project)["a"]["status"] == "open"


@exit_path("stop_on_failure", "settling", "task_failed")
def test_stop_on_failure_task_failed(project: Path, bin_dir: Path) -> None:
    result = run_cub(["run", *agent(bin_dir, FAIL)], project)
    assert_ending(
        project, result.returncode, "stop_on_failure", "settling", "task_failed", task_id="a"
    )


@exit_path("stop_on_failure", "settling", "retries_exhausted")
def test_stop_on_failure_retries_exhausted(project: Path, bin_dir: Path) -> None:
    set_config(project, {"loop": {"max_attempts": 2}})
    result = run_cub(["run", "--on-failure", "retry", *agent(bin_dir, FAIL)], project)
    assert_ending(
        project, result.returncode, "stop_on_failure", "settling", "retries_exhausted", task_id="a"
    )


@exit_path("stop_on_failure", "settling", "agent_stuck")
def test_stop_on_failure_agent_stuck(project: Path, bin_dir: Path) -> None:
    result = run_cub(
        ["run", *agent(bin_dir, "say('<stuck>need creds</stuck>'); done(0)\n")], project
    )
    assert_ending(
        project, result.returncode, "stop_on_failure", "settling", "agent_stuck", task_id="a"
    )


@exit_path("stop_on_failure", "settling", "verify_failed")
def test_stop_on_failure_verify_failed(project: Path, bin_dir: Path) -> None:
    set_config(project, {"loop": {"verify": ["exit 1"]}})
    result = run_cub(["run", *agent(bin_dir, OK)], project)
    assert_ending(
        project, result.returncode, "stop_on_failure", "settling", "verify_failed", task_id="a"
    )


USAGE = '{"cub_usage": {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.01}}'


@exit_path("exhaust_budget", "settling", "token_budget")
def test_exhaust_token_budget_during_the_attempt(project: Path, bin_dir: Path) -> None:
    result = run_cub(
        ["run", "--budget-tokens", "10", *agent(bin_dir, f"say({USAGE!r}); done(0)\n")], project
    )
    assert_ending(
        project, result.returncode, "exhaust_budget", "settling", "token_budget", task_id="a"
    )


@exit_path("exhaust_budget", "settling", "cost_budget")
def test_exhaust_cost_budget_during_the_attempt(project: Path, bin_dir: Path) -> None:
    result = run_cub(
        ["run", "--budget", "0.005", *agent(bin_dir, f"say({USAGE!r}); done(0)\n")], project
    )
    assert_ending(
        project, result.returncode, "exhaust_budget", "settling", "cost_budget", task_id="a"
    )


# -------------------------------------------------------------------------------- signals


def _stopped(project: Path, bin_dir: Path, started: list[Background], sig: int, code: str) -> None:
    ready = bin_dir / "ready"
    script = sleeping_agent(bin_dir / "sleeper", ready)
    run = start(started, project, *command_harness(script))
    wait_for_file(ready)
    run.send(sig)
    assert_ending(project, run.wait(), "stopped", "stopping", code, task_id="a")
    assert read_tasks(project)["a"]["status"] == "open"


@exit_path("stopped", "stopping", "sigint")
def test_stopped_sigint(project: Path, bin_dir: Path, started: list[Background]) -> None:
    _stopped(project, bin_dir, started, signal.SIGINT, "sigint")


@exit_path("stopped", "stopping", "sigterm")
def test_stopped_sigterm(project: Path, bin_dir: Path, started: list[Background]) -> None:
    _stopped(project, bin_dir, started, signal.SIGTERM, "sigterm")


@exit_path("stopped", "stopping", "sighup")
def test_stopped_sighup(project: Path, bin_dir: Path, started: list[Background]) -> None:
    _stopped(project, bin_dir, started, signal.SIGHUP, "sighup")


@exit_path("force_kill", "stopping", "second_interrupt")
def test_force_kill_second_interrupt_while_stopping(
    project: Path, bin_dir: Path, started: list[Background]
) -> None:
    ready = bin_dir / "ready"
    script = sleeping_agent(bin_dir / "sleeper", ready, ignore=("SIGINT", "SIGTERM"))
    run = start(started, project, "--grace", "30s", *command_harness(script))
    wait_for_file(ready)
    run.send(signal.SIGINT)
    wait_state(project, "stopping")
    time.sleep(SAME_REQUEST_WINDOW + 0.1)  # a second request, not the first delivered twice
    run.send(signal.SIGINT)
    assert_ending(project, run.wait(), "force_kill", "stopping", "second_interrupt", task_id="a")
    assert processes_with_token(run.token) == []


@exit_path("force_kill", "stopping", "grace_expired")
def test_force_kill_grace_expired(project: Path, bin_dir: Path, started: list[Background]) -> None:
    set_config(project, {"loop": {"on_interrupt": "finish"}})
    ready = bin_dir / "ready"
    script = sleeping_agent(bin_dir / "sleeper", ready, ignore=("SIGINT", "SIGTERM"))
    run = start(started, project, "--grace", "1s", *command_harness(script))
    wait_for_file(ready)
    run.send(signal.SIGINT)
    assert_ending(project, run.wait(), "force_kill", "stopping", "grace_expired", task_id="a")
    assert processes_with_token(run.token) == []


def runner_killed_and_recovered(project: Path, run: Background, state: str) -> None:
    """SIGKILL the runner where it stands, recover, and check the `runner_died` ending."""
    run.send(signal.SIGKILL)
    code = run.wait()
    recover(project, run.token)
    assert_ending(project, code, "force_kill", state, "runner_died", recorded_by="recovery")


# ------------------------------------------------------------------ the runner SIGKILLed


@exit_path("force_kill", "validating", "runner_died")
def test_runner_died_while_validating(project: Path, started: list[Background]) -> None:
    run = start(started, project, "--direct", "-", *command_harness("true"), stdin=subprocess.PIPE)
    wait_state(project, "validating")
    runner_killed_and_recovered(project, run, "validating")


@exit_path("force_kill", "preparing", "runner_died")
def test_runner_died_while_preparing(
    project: Path, bin_dir: Path, started: list[Background]
) -> None:
    ready = bin_dir / "ready"
    add_hook(project, "pre-loop", f"#!/bin/sh\ntouch {ready}\nexec sleep 30\n")
    run = start(started, project, *agent(bin_dir, OK))
    wait_for_file(ready)
    wait_state(project, "preparing")
    runner_killed_and_recovered(project, run, "preparing")
    assert read_tasks(project)["a"]["status"] == "open"


@exit_path("force_kill", "executing", "runner_died")
def test_runner_died_while_executing(
    project: Path, bin_dir: Path, started: list[Background]
) -> None:
    ready = bin_dir / "ready"
    script = sleeping_agent(bin_dir / "sleeper", ready)
    run = start(started, project, *command_harness(script))
    wait_for_file(ready)
    run.send(signal.SIGKILL)
    code = run.wait()
    recover(project, run.token)
    assert_ending(
        project, code, "force_kill", "executing", "runner_died", task_id="a", recorded_by="recovery"
    )
    assert read_tasks(project)["a"]["status"] == "open"
    assert processes_with_token(run.token) == []


@exit_path("force_kill", "settling", "runner_died")
def test_runner_died_while_settling(
    project: Path, bin_dir: Path, started: list[Background]
) -> None:
    # A verify command runs while the attempt settles: a slow one holds the run there.
    ready = bin_dir / "ready"
    set_config(project, {"loop": {"verify": [f"touch {ready} && sleep 30"]}})
    run = start(started, project, *agent(bin_dir, OK))
    wait_for_file(ready)
    wait_state(project, "settling")
    run.send(signal.SIGKILL)
    code = run.wait()
    recover(project, run.token)
    assert_ending(
        project, code, "force_kill", "settling", "runner_died", task_id="a", recorded_by="recovery"
    )


@exit_path("force_kill", "stopping", "runner_died")
def test_runner_died_while_stopping(
    project: Path, bin_dir: Path, started: list[Background]
) -> None:
    ready = bin_dir / "ready"
    script = sleeping_agent(bin_dir / "sleeper", ready, ignore=("SIGINT", "SIGTERM"))
    run = start(started, project, "--grace", "30s", *command_harness(script))
    wait_for_file(ready)
    run.send(signal.SIGINT)
    wait_state(project, "stopping")
    run.send(signal.SIGKILL)
    code = run.wait()
    recover(project, run.token)
    assert_ending(
        project, code, "force_kill", "stopping", "runner_died", task_id="a", recorded_by="recovery"
    )
    assert processes_with_token(run.token) == []


# ------------------------------------------------------------------------------- parallel


@exit_path("children_done", "supervising", "all_tasks_done")
def test_children_done_all_tasks_done(project: Path, bin_dir: Path) -> None:
    result = run_cub(["run", "--parallel", "2", *agent(bin_dir, OK)], project)
    assert_ending(project, result.returncode, "children_done", "supervising", "all_tasks_done")
    assert {t["status"] for t in read_tasks(project).values()} == {"closed"}


@exit_path("children_failed", "supervising", "tasks_failed")
def test_children_failed_tasks_failed(project: Path, bin_dir: Path) -> None:
    result = run_cub(["run", "--parallel", "2", *agent(bin_dir, FAIL)], project)
    assert_ending(project, result.returncode, "children_failed", "supervising", "tasks_failed")


# ---------------------------------------------------------- budgets crossed at a task's end


def claude_standin(bin_dir: Path, tokens: int, cost: float) -> dict[str, str]:
    """A stand-in `claude` on PATH whose final result reports ``tokens`` input tokens and
    ``cost`` dollars: the agent's own last word, after which cub does not stop it."""
    result = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "Done.",
        "session_id": "s1",
        "total_cost_usd": cost,
        "usage": {"input_tokens": tokens, "output_tokens": 10},
    }
    write_script(
        bin_dir / "claude",
        "import json, sys\n"
        "if sys.argv[1:] == ['--version']:\n"
        "    print('2.1.197 (Claude Code)')\n"
        "    sys.exit(0)\n"
        "sys.stdin.read()\n"
        f"print({json.dumps(json.dumps(result))}, flush=True)\n",
    )
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


@exit_path("exhaust_budget", "selecting", "token_budget")
def test_exhaust_token_budget_reported_at_the_end_of_the_task(project: Path, bin_dir: Path) -> None:
    env = claude_standin(bin_dir, tokens=5000, cost=0.01)
    result = run_cub(["run", "--harness", "claude", "--budget-tokens", "1000"], project, env=env)
    assert_ending(project, result.returncode, "exhaust_budget", "selecting", "token_budget")
    tasks = read_tasks(project)
    assert (tasks["a"]["status"], tasks["b"]["status"]) == ("closed", "open")


@exit_path("exhaust_budget", "selecting", "cost_budget")
def test_exhaust_cost_budget_reported_at_the_end_of_the_task(project: Path, bin_dir: Path) -> None:
    env = claude_standin(bin_dir, tokens=10, cost=0.5)
    result = run_cub(["run", "--harness", "claude", "--budget", "0.25"], project, env=env)
    assert_ending(project, result.returncode, "exhaust_budget", "selecting", "cost_budget")
    tasks = read_tasks(project)
    assert (tasks["a"]["status"], tasks["b"]["status"]) == ("closed", "open")


@exit_path("exhaust_budget", "selecting", "time_budget")
def test_exhaust_time_budget_before_the_next_task(project: Path, bin_dir: Path) -> None:
    # The agent is quick; verifying its work takes longer than the run may.
    set_config(project, {"loop": {"verify": ["sleep 1.5"]}})
    result = run_cub(["run", "--timeout", "1s", *agent(bin_dir, OK)], project)
    assert_ending(project, result.returncode, "exhaust_budget", "selecting", "time_budget")
    tasks = read_tasks(project)
    assert (tasks["a"]["status"], tasks["b"]["status"]) == ("closed", "open")


@exit_path("exhaust_budget", "settling", "time_budget")
def test_exhaust_time_budget_during_the_attempt(project: Path, bin_dir: Path) -> None:
    result = run_cub(
        ["run", "--timeout", "1s", *agent(bin_dir, "import time; time.sleep(5); done(0)\n")],
        project,
    )
    assert_ending(
        project, result.returncode, "exhaust_budget", "settling", "time_budget", task_id="a"
    )
    assert all(t["status"] == "open" for t in read_tasks(project).values())


# Each parallel child's agent: reports its usage, then works for a while.
PARALLEL_USAGE = (
    'say(\'{"cub_usage": {"input_tokens": 1, "output_tokens": 0, "cost_usd": 0.6}}\')\n'
    "import time; time.sleep(30); done(0)\n"
)


@exit_path("exhaust_budget", "supervising", "cost_budget")
def test_exhaust_cost_budget_shared_by_children(
    project: Path, bin_dir: Path, started: list[Background]
) -> None:
    run = start(
        started, project, "--parallel", "2", "--budget", "1", *agent(bin_dir, PARALLEL_USAGE)
    )
    assert_ending(project, run.wait(), "exhaust_budget", "supervising", "cost_budget")
    assert all(t["status"] == "open" for t in read_tasks(project).values())
    assert processes_with_token(run.token) == []


@exit_path("exhaust_budget", "supervising", "time_budget")
def test_exhaust_time_budget_while_children_run(
    project: Path, bin_dir: Path, started: list[Background]
) -> None:
    body = "import time; time.sleep(30); done(0)\n"
    run = start(started, project, "--parallel", "2", "--timeout", "1s", *agent(bin_dir, body))
    assert_ending(project, run.wait(), "exhaust_budget", "supervising", "time_budget")
    assert all(t["status"] == "open" for t in read_tasks(project).values())
    assert processes_with_token(run.token) == []


@exit_path("exhaust_budget", "supervising", "iteration_budget")
def test_exhaust_iteration_budget_of_children(project: Path, bin_dir: Path) -> None:
    result = run_cub(
        ["run", "--parallel", "2", "--max-iterations", "1", *agent(bin_dir, OK)], project
    )
    assert_ending(project, result.returncode, "exhaust_budget", "supervising", "iteration_budget")
    assert sorted(t["status"] for t in read_tasks(project).values()) == ["closed", "open"]


# ------------------------------------------------- a second interrupt before the run stops


def _second_interrupt(run: Background) -> int:
    """Ctrl+C, then Ctrl+C again as a second request (not the first delivered twice)."""
    run.send(signal.SIGINT)
    time.sleep(SAME_REQUEST_WINDOW + 0.2)
    run.send(signal.SIGINT)
    return run.wait()


# A hook that says it runs, shrugs off the SIGTERM that stops an interrupted hook, and sleeps.
def stubborn_hook(ready: Path) -> str:
    return f"#!/bin/sh\ntrap '' INT TERM HUP\ntouch {ready}\nsleep 30\n"


@exit_path("force_kill", "created", "second_interrupt")
def test_force_kill_second_interrupt_while_created(
    project: Path, bin_dir: Path, started: list[Background]
) -> None:
    # Both signals land before cub can act on any (a slow start): the fault hook holds the run
    # in `created` for 5 s, with its first status.json written.
    run = start_with(started, project, {"CUB_FAULT": "pause:created:5"}, *agent(bin_dir, OK))
    wait_state(project, "created")
    assert_ending(project, _second_interrupt(run), "force_kill", "created", "second_interrupt")
    assert all(t["status"] == "open" for t in read_tasks(project).values())


@exit_path("force_kill", "validating", "second_interrupt")
def test_force_kill_second_interrupt_while_validating(
    project: Path, started: list[Background]
) -> None:
    # `--direct -` reads its prompt from stdin while validating; nothing is written there.
    run = start(started, project, "--direct", "-", *command_harness("true"), stdin=subprocess.PIPE)
    wait_state(project, "validating")
    assert_ending(project, _second_interrupt(run), "force_kill", "validating", "second_interrupt")


@exit_path("force_kill", "preparing", "second_interrupt")
def test_force_kill_second_interrupt_while_preparing(
    project: Path, bin_dir: Path, started: list[Background]
) -> None:
    ready = bin_dir / "ready"
    add_hook(project, "pre-loop", stubborn_hook(ready))
    run = start(started, project, *agent(bin_dir, OK))
    wait_for_file(ready)
    assert_ending(project, _second_interrupt(run), "force_kill", "preparing", "second_interrupt")
    assert all(t["status"] == "open" for t in read_tasks(project).values())


@exit_path("force_kill", "executing", "second_interrupt")
def test_force_kill_second_interrupt_while_executing(
    project: Path, bin_dir: Path, started: list[Background]
) -> None:
    # A pre-task hook runs once the task is claimed, before its agent starts: no attempt yet.
    ready = bin_dir / "ready"
    add_hook(project, "pre-task", stubborn_hook(ready))
    run = start(started, project, *agent(bin_dir, OK))
    wait_for_file(ready)
    assert_ending(project, _second_interrupt(run), "force_kill", "executing", "second_interrupt")
    assert not (run_dir(project) / "tasks" / "a" / "task.json").exists()
    assert read_tasks(project)["a"]["status"] == "open"


@exit_path("force_kill", "settling", "second_interrupt")
def test_force_kill_second_interrupt_while_settling(
    project: Path, bin_dir: Path, started: list[Background]
) -> None:
    # Post-task hooks run while the attempt settles, and a first Ctrl+C lets them finish.
    ready = bin_dir / "ready"
    add_hook(project, "post-task", f"#!/bin/sh\ntouch {ready}\nsleep 30\n")
    run = start(started, project, *agent(bin_dir, OK))
    wait_for_file(ready)
    code = _second_interrupt(run)
    assert_ending(project, code, "force_kill", "settling", "second_interrupt", task_id="a")


@exit_path("force_kill", "selecting", "second_interrupt")
def test_force_kill_second_interrupt_while_selecting(
    project: Path, bin_dir: Path, started: list[Background]
) -> None:
    # Nothing is left: the post-loop hooks run before the run enters its ending.
    ready = bin_dir / "ready"
    add_hook(project, "post-loop", f"#!/bin/sh\ntouch {ready}\nsleep 30\n")
    run = start(started, project, *agent(bin_dir, OK))
    wait_for_file(ready)
    assert_ending(project, _second_interrupt(run), "force_kill", "selecting", "second_interrupt")


@exit_path("force_kill", "supervising", "second_interrupt")
def test_force_kill_second_interrupt_while_supervising(
    project: Path, bin_dir: Path, started: list[Background]
) -> None:
    # The parent merges each finished child's branch while it supervises; git runs the
    # repository's post-merge hook, a slow one here. (git's hook is not in cub's process
    # tree's reach once git is killed, so it is kept short.)
    ready = bin_dir / "ready"
    hook = f"#!/bin/sh\ntouch {ready}\nsleep 4\n"
    write_script(project / ".git" / "hooks" / "post-merge", hook)
    run = start(started, project, "--parallel", "2", *agent(bin_dir, COMMIT))
    wait_for_file(ready)
    code = _second_interrupt(run)
    assert_ending(project, code, "force_kill", "supervising", "second_interrupt")
    assert processes_with_token(run.token) == []


@exit_path("force_kill", "created", "runner_died")
def test_runner_died_while_created(project: Path, bin_dir: Path, started: list[Background]) -> None:
    run = start_with(started, project, {"CUB_FAULT": "pause:created:30"}, *agent(bin_dir, OK))
    wait_state(project, "created")
    runner_killed_and_recovered(project, run, "created")


@exit_path("force_kill", "selecting", "runner_died")
def test_runner_died_while_selecting(
    project: Path, bin_dir: Path, started: list[Background]
) -> None:
    ready = bin_dir / "ready"
    add_hook(project, "post-loop", f"#!/bin/sh\ntouch {ready}\nexec sleep 30\n")
    run = start(started, project, *agent(bin_dir, OK))
    wait_for_file(ready)
    wait_state(project, "selecting")
    runner_killed_and_recovered(project, run, "selecting")
    assert {t["status"] for t in read_tasks(project).values()} == {"closed"}


# ------------------------------------------------------------- an exception in each state


def _crash(
    started: list[Background], project: Path, where: str, *args: str
) -> tuple[Background, int]:
    """`CUB_FAULT=raise:WHERE` raises an unexpected exception there, as a bug in cub would."""
    run = start_with(started, project, {"CUB_FAULT": f"raise:{where}"}, *args)
    return run, run.wait()


def _assert_crashed(project: Path, code: int, source: str, task_id: str | None = None) -> None:
    record = assert_ending(project, code, "crash", source, "exception", task_id=task_id)
    assert record.error is not None and record.error.type == "InjectedFault"
    assert record.error.traceback and "Traceback" in record.error.traceback
    # Whatever the run had claimed goes back to the backlog.
    assert all(t["status"] == "open" for t in read_tasks(project).values())


@exit_path("crash", "created", "exception")
def test_crash_while_created(project: Path, bin_dir: Path, started: list[Background]) -> None:
    _, code = _crash(started, project, "created", *agent(bin_dir, OK))
    _assert_crashed(project, code, "created")


@exit_path("crash", "validating", "exception")
def test_crash_while_validating(project: Path, bin_dir: Path, started: list[Background]) -> None:
    _, code = _crash(started, project, "validating", *agent(bin_dir, OK))
    _assert_crashed(project, code, "validating")


@exit_path("crash", "preparing", "exception")
def test_crash_while_preparing(project: Path, bin_dir: Path, started: list[Background]) -> None:
    _, code = _crash(started, project, "preparing", *agent(bin_dir, OK))
    _assert_crashed(project, code, "preparing")


@exit_path("crash", "selecting", "exception")
def test_crash_while_selecting(project: Path, bin_dir: Path, started: list[Background]) -> None:
    _, code = _crash(started, project, "selecting", *agent(bin_dir, OK))
    _assert_crashed(project, code, "selecting")


@exit_path("crash", "executing", "exception")
def test_crash_while_executing(project: Path, bin_dir: Path, started: list[Background]) -> None:
    # Raised once the agent has started: the attempt is recorded, the agent does not outlive it.
    ready = bin_dir / "ready"
    script = sleeping_agent(bin_dir / "sleeper", ready)
    run, code = _crash(started, project, "agent_started", *command_harness(script))
    _assert_crashed(project, code, "executing", task_id="a")
    assert read_attempt(project, "a").outcome == "killed"
    assert processes_with_token(run.token) == []


@exit_path("crash", "settling", "exception")
def test_crash_while_settling(project: Path, bin_dir: Path, started: list[Background]) -> None:
    _, code = _crash(started, project, "settling", *agent(bin_dir, OK))
    _assert_crashed(project, code, "settling", task_id="a")


@exit_path("crash", "supervising", "exception")
def test_crash_while_supervising(project: Path, bin_dir: Path, started: list[Background]) -> None:
    args = ["--parallel", "2", *agent(bin_dir, OK)]
    _, code = _crash(started, project, "supervising", *args)
    _assert_crashed(project, code, "supervising")


@exit_path("crash", "stopping", "exception")
def test_crash_while_stopping(project: Path, bin_dir: Path, started: list[Background]) -> None:
    ready = bin_dir / "ready"
    script = sleeping_agent(bin_dir / "sleeper", ready)
    run = start_with(started, project, {"CUB_FAULT": "raise:stopping"}, *command_harness(script))
    wait_for_file(ready)
    run.send(signal.SIGINT)
    _assert_crashed(project, run.wait(), "stopping", task_id="a")
    assert processes_with_token(run.token) == []


# ------------------------------------------------------- the task file changed under the run


def corrupting_hook(project: Path) -> str:
    """A hook that breaks the backlog, as an agent or a person editing it by hand might."""
    return f"#!/bin/sh\necho 'this is not json' >> {project / '.cub' / 'tasks.jsonl'}\n"


@exit_path("backlog_changed", "selecting", "task_file_changed")
def test_backlog_changed_before_a_task_is_claimed(project: Path, bin_dir: Path) -> None:
    add_hook(project, "pre-loop", corrupting_hook(project))
    result = run_cub(["run", *agent(bin_dir, OK)], project)
    record = assert_ending(
        project, result.returncode, "backlog_changed", "selecting", "task_file_changed"
    )
    assert record.error is None and record.tasks.attempted == []


@exit_path("backlog_changed", "executing", "task_file_changed")
def test_backlog_changed_before_the_agent_starts(tmp_path: Path, bin_dir: Path) -> None:
    # A task of an epic: the backlog is read again for its prompt, after the pre-task hooks.
    project = make_project(tmp_path / "proj", [task("E", issue_type="epic"), task("a", parent="E")])
    add_hook(project, "pre-task", corrupting_hook(project))
    ran = bin_dir / "ran"
    result = run_cub(["run", *agent(bin_dir, f"open({str(ran)!r}, 'w').close()\n")], project)
    record = assert_ending(
        project, result.returncode, "backlog_changed", "executing", "task_file_changed"
    )
    assert record.error is None and "still marked claimed: a" in record.reason
    assert not ran.exists()
    assert not (run_dir(project) / "tasks" / "a" / "task.json").exists()


@exit_path("setup_failed", "preparing", "branch_failed")
def test_setup_failed_branch_failed(project: Path, bin_dir: Path) -> None:
    result = run_cub(
        ["run", "--in-place", "--from-branch", "no-such-branch", *agent(bin_dir, OK)], project
    )
    record = assert_ending(project, result.returncode, "setup_failed", "preparing", "branch_failed")
    assert "no-such-branch" in record.reason
    assert all(t["status"] == "open" for t in read_tasks(project).values())
