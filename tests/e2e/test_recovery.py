"""Crash recovery: a runner that died without finishing (SIGKILL, OOM, power loss) still gets its
record, from the next `cub run`, `cub runs …` or `cub status`.

Liveness is the runner's lock on .cub/runs/<run_id>/runner.lock, which the kernel drops when the
runner dies, however it dies: a run whose lock is held is never touched, whatever pid its
status.json names. A free lock is believed only when the runner status.json names (pid and start
time) is gone too: a deleted lock file must not make a live run look dead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from cub.records.location import runs_dir
from cub.records.schemas import RunnerInfo, StatusRecord
from cub.records.store import RUNNER_LOCK
from cub.tasks.jsonl import JsonlBackend
from tests.e2e.support import command_harness
from tests.helpers.agents import (
    TEST_TOKEN_VAR,
    is_alive,
    processes_with_token,
    sleeping_agent,
    stubborn_agent,
    wait_for_file,
    wait_until,
    write_script,
)
from tests.helpers.cli import (
    CUB,
    cub_env,
    make_project,
    read_attempt,
    read_events,
    read_run,
    read_status,
    read_tasks,
    run_cub,
    run_dir,
    start_cub,
    task,
)
from tests.helpers.faults import orphaned_run, orphaned_runs

pytestmark = pytest.mark.timeout(60)


def force_kill_transitions(project: Path, run_id: str) -> int:
    return sum(
        1
        for e in read_events(project, run_id)
        if e.kind == "transition" and e.trigger == "force_kill"
    )


def assert_recovered(project: Path, run_id: str, state_before: str) -> None:
    record = read_run(project, run_id)
    assert (record.state, record.exit_code, record.reason_code, record.recorded_by) == (
        "force_killed",
        137,
        "runner_died",
        "recovery",
    )
    assert record.history[-1].from_ == state_before
    assert record.history[-1].trigger == "force_kill"
    assert force_kill_transitions(project, run_id) == 1
    events = read_events(project, run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert read_status(project, run_id).state == "force_killed"


def start_and_kill_mid_attempt(project: Path, bin_dir: Path, token: str) -> tuple[int, int, Any]:
    """Start cub with an agent that ignores signals and has a setsid() grandchild, wait until
    it runs, SIGKILL cub. Returns the agent's and the grandchild's pids and cub's status."""
    ready, grandchild = bin_dir / "ready", bin_dir / "grandchild"
    agent = stubborn_agent(bin_dir / "agent", ready, grandchild)
    write_script(
        bin_dir / "agent-pid-wrapper",
        f"""#!/bin/sh
echo $$ > {bin_dir / "agent-pid"}
exec {agent}
""",
    )
    proc = start_cub(
        ["run", *command_harness(bin_dir / "agent-pid-wrapper")],
        project,
        env={TEST_TOKEN_VAR: token},
    )
    wait_for_file(ready)
    wait_until(lambda: (read_status(project).current_task or _Nothing).harness_pid is not None)
    status = read_status(project)
    assert status.runner.pid == proc.pid
    assert status.runner.create_time == pytest.approx(psutil.Process(proc.pid).create_time())
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    return int((bin_dir / "agent-pid").read_text()), int(grandchild.read_text()), status


class _Nothing:
    harness_pid = None


# ------------------------------------------------------------------- SIGKILL mid-attempt


@pytest.mark.parametrize(
    "command",
    [["runs", "list"], ["status"], ["runs", "show", "latest"], ["run", "--ready"]],
    ids=["runs-list", "status", "runs-show", "run"],
)
def test_sigkill_mid_attempt_is_recovered_by_the_next_command(
    tmp_path: Path, bin_dir: Path, token: str, command: list[str]
) -> None:
    project = make_project(tmp_path / "proj", [task("t1"), task("t2")])
    agent_pid, grandchild_pid, status = start_and_kill_mid_attempt(project, bin_dir, token)
    # What the dead runner recorded about its agent: pid and create_time.
    assert status.current_task is not None
    assert status.current_task.id == "t1"
    assert status.current_task.harness_pid == agent_pid
    assert status.current_task.harness_pid_create_time == pytest.approx(
        psutil.Process(agent_pid).create_time()
    )
    assert status.claimed_tasks == ["t1"]
    # The runner is gone, its agent and the agent's escaped grandchild are not (yet).
    assert is_alive(agent_pid) and is_alive(grandchild_pid)
    assert read_tasks(project)["t1"]["status"] == "in_progress"
    run_id = status.run_id

    result = run_cub(command, project, env={TEST_TOKEN_VAR: token})

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"recovered run {run_id}" in result.stderr
    assert not is_alive(agent_pid)
    assert not is_alive(grandchild_pid)
    assert processes_with_token(token) == []
    assert_recovered(project, run_id, "executing")
    record = read_run(project, run_id)
    assert "t1" in record.reason and record.pid == status.runner.pid
    assert record.tasks.attempted == ["t1"]
    attempt = read_attempt(project, "t1", run_id)
    assert (attempt.task_id, attempt.attempt, attempt.outcome) == ("t1", 1, "killed")
    tasks = read_tasks(project)
    assert tasks["t1"]["status"] == "open" and tasks["t1"].get("assignee") is None
    assert "released by recovery" in tasks["t1"]["notes"]


def test_recovery_runs_once(tmp_path: Path, bin_dir: Path, token: str) -> None:
    project = make_project(tmp_path / "proj", [task("t1")])
    _, _, status = start_and_kill_mid_attempt(project, bin_dir, token)
    first = run_cub(["runs", "list"], project)
    record = (run_dir(project, status.run_id) / "run.json").read_bytes()

    again = run_cub(["status"], project)

    assert "recovered" in first.stderr and "recovered" not in again.stderr
    assert (run_dir(project, status.run_id) / "run.json").read_bytes() == record
    assert force_kill_transitions(project, status.run_id) == 1


# ------------------------------------------------------------------ what liveness means


def test_a_live_runner_is_never_finalised_whatever_its_status_says(
    tmp_path: Path, bin_dir: Path, token: str
) -> None:
    """status.json names a dead pid as the runner, but the runner holds its lock: alive."""
    project = make_project(tmp_path / "proj", [task("t1")])
    ready = bin_dir / "ready"
    agent = sleeping_agent(bin_dir / "agent", ready, exit_on_sigint=130)
    proc = start_cub(["run", *command_harness(agent)], project, env={TEST_TOKEN_VAR: token})
    try:
        wait_for_file(ready)
        dead = subprocess.Popen(["true"])
        dead.wait()
        status_path = run_dir(project) / "status.json"
        status = read_status(project)
        fake = msgspec.structs.replace(
            status, runner=RunnerInfo(pid=dead.pid, create_time=1.0, host=status.runner.host)
        )
        status_path.write_bytes(msgspec.json.encode(fake))

        for command in (["runs", "list"], ["status"]):
            result = run_cub(command, project)
            assert result.returncode == 0 and "recovered" not in result.stderr, result.stderr

        assert not (run_dir(project) / "run.json").exists()
        assert read_tasks(project)["t1"]["status"] == "in_progress"
        assert [p for p in processes_with_token(token) if p.pid != proc.pid]  # agent untouched
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    record = read_run(project)
    assert (record.state, record.recorded_by) == ("interrupted", "machine")


@pytest.mark.parametrize("create_time", ["matching", "different"])
def test_a_free_lock_is_believed_only_when_the_runner_is_gone(
    tmp_path: Path, create_time: str
) -> None:
    """The lock is free and status.json names a live process (this one). With its own start
    time, that is the runner, alive (its lock file was deleted): the run is left alone. With
    another start time, the pid was reused by someone else: the run is finalised."""
    project = make_project(tmp_path / "proj", [task("t1")])
    orphan = orphaned_run(project, "pid-reused", ("validate", "accept", "prepared"))
    status = read_status(project, "pid-reused")
    me = psutil.Process()
    offset = 0 if create_time == "matching" else -1000
    fake = msgspec.structs.replace(
        status,
        runner=RunnerInfo(
            pid=me.pid, create_time=me.create_time() + offset, host=status.runner.host
        ),
    )
    (orphan / "status.json").write_bytes(msgspec.json.encode(fake))

    result = run_cub(["runs", "list"], project)

    assert result.returncode == 0, result.stderr
    if create_time == "matching":
        assert not (orphan / "run.json").exists()
        assert read_status(project, "pid-reused").state == "selecting"
    else:
        assert_recovered(project, "pid-reused", "selecting")


def test_a_reused_agent_pid_is_not_killed(tmp_path: Path) -> None:
    """status.json names an agent pid that now belongs to an unrelated process (its create
    time differs): recovery leaves that process alone."""
    project = make_project(tmp_path / "proj", [task("t1")])
    orphan = orphaned_run(project, "agent-pid-reused", ("validate", "accept", "prepared"))
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        status = read_status(project, "agent-pid-reused")
        current = {
            "id": "t1",
            "title": "task t1",
            "attempt": 1,
            "started_at": status.started_at,
            "harness_pid": bystander.pid,
            "harness_pid_create_time": psutil.Process(bystander.pid).create_time() - 50,
        }
        raw = json.loads((orphan / "status.json").read_bytes())
        raw.update(state="executing", current_task=current)
        (orphan / "status.json").write_text(json.dumps(raw))

        result = run_cub(["runs", "list"], project)

        assert result.returncode == 0, result.stderr
        assert_recovered(project, "agent-pid-reused", "executing")
        assert is_alive(bystander.pid)
        assert read_attempt(project, "t1", "agent-pid-reused").outcome == "killed"
    finally:
        bystander.kill()
        bystander.wait()


# ---------------------------------------------------------- deaths at awkward moments


def test_a_claim_the_runner_never_wrote_down_is_released(tmp_path: Path) -> None:
    """SIGKILL between the task file's rewrite (the claim) and the status.json that lists it:
    the claim is found by its assignee, the dead run's id."""
    project = make_project(tmp_path / "proj", [task("t1"), task("t2")])
    orphaned_run(project, "claimed-silently", ("validate", "accept", "prepared"))
    backend = JsonlBackend(project / ".cub" / "tasks.jsonl", project)
    claimed = backend.claim_next("claimed-silently", epic=None, label=None)
    assert claimed is not None and claimed.id == "t1"
    assert read_status(project, "claimed-silently").claimed_tasks == []

    result = run_cub(["runs", "list"], project)

    assert result.returncode == 0, result.stderr
    assert_recovered(project, "claimed-silently", "selecting")
    tasks = read_tasks(project)
    assert tasks["t1"]["status"] == "open" and tasks["t1"].get("assignee") is None
    assert tasks["t1"]["attempts"] == 0  # killed with its runner: not an attempt of its own


def test_records_recovery_writes_use_the_projects_redaction(tmp_path: Path) -> None:
    """The attempt recovery records for a claim whose agent had started (its title comes from
    the task file) is redacted with the project's own patterns, as the runner's were."""
    config = {"redaction": {"patterns": ["SECRET-[0-9]+"]}}
    project = make_project(tmp_path / "proj", [task("t1", "ship with SECRET-1234")], config)
    run_dir = orphaned_run(project, "leaky", ("validate", "accept", "prepared"))
    backend = JsonlBackend(project / ".cub" / "tasks.jsonl", project)
    assert backend.claim_next("leaky", epic=None, label=None) is not None
    task_dir = run_dir / "tasks" / "t1"
    task_dir.mkdir(parents=True)
    (task_dir / "prompt.md").write_text("the prompt\n")
    (task_dir / "harness.log").write_text("the agent had started\n")

    result = run_cub(["runs", "list"], project)

    assert result.returncode == 0, result.stderr
    attempt = (task_dir / "task.json").read_text()
    assert '"outcome":"killed"' in attempt.replace(" ", "")
    assert "SECRET-1234" not in attempt
    assert "ship with [REDACTED]" in attempt


def test_a_task_claimed_by_a_live_run_is_left_alone(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [task("t1"), task("t2")])
    orphaned_run(project, "dead", ("validate", "accept", "prepared"))
    backend = JsonlBackend(project / ".cub" / "tasks.jsonl", project)
    assert backend.claim_next("someone-else", epic=None, label=None) is not None

    result = run_cub(["runs", "list"], project)

    assert result.returncode == 0, result.stderr
    assert_recovered(project, "dead", "selecting")
    assert read_tasks(project)["t1"]["status"] == "in_progress"
    assert read_tasks(project)["t1"]["assignee"] == "someone-else"


def test_a_runner_that_died_before_its_first_status(tmp_path: Path) -> None:
    """Only the run directory and its lock file exist: still a run, still recorded."""
    project = make_project(tmp_path / "proj", [task("t1")])
    runs = runs_dir(project)
    run = runs / "run-died-early"
    run.mkdir(parents=True)
    runner = RunnerInfo(pid=4242, create_time=12.5, host="elsewhere")
    (run / RUNNER_LOCK).write_bytes(msgspec.json.encode(runner))
    # A creation cut short before the rename; its name says who made it: a process long gone.
    staging = runs / ".run-half-made..4242-12500-x1y2"
    staging.mkdir()
    (staging / RUNNER_LOCK).write_bytes(b"")
    not_a_run = runs / "notes"  # a directory a person put there
    not_a_run.mkdir()

    result = run_cub(["runs", "list"], project)

    assert result.returncode == 0, result.stderr
    assert_recovered(project, "run-died-early", "created")
    record = read_run(project, "run-died-early")
    assert (record.pid, record.host) == (4242, "elsewhere")
    assert not staging.exists()
    assert list(not_a_run.iterdir()) == []


def test_a_runner_that_died_writing_its_final_record(tmp_path: Path) -> None:
    """The terminal transition is journaled and status.json says so, but run.json was never
    written: recovery writes it, with the ending the runner had reached."""
    project = make_project(tmp_path / "proj", [task("t1")])
    orphan = orphaned_run(project, "almost", ("validate", "accept", "prepared", "finish"))
    (orphan / "run.json").unlink()
    assert read_status(project, "almost").state == "completed"

    result = run_cub(["status"], project)

    assert result.returncode == 0, result.stderr
    record = read_run(project, "almost")
    assert (record.state, record.exit_code, record.recorded_by) == ("completed", 0, "recovery")
    assert record.reason_code == "all_tasks_done"
    events = read_events(project, "almost")
    assert [e.trigger for e in events if e.kind == "transition"][-1] == "finish"


def test_a_runner_that_died_right_after_journaling_its_ending(tmp_path: Path) -> None:
    """The terminal transition is in events.jsonl, but the runner died before status.json and
    run.json: the journal is believed, and there is still exactly one ending in it."""
    from cub.records.redact import Redactor
    from cub.records.store import RunStore

    project = make_project(tmp_path / "proj", [task("t1")])
    orphan = orphaned_run(project, "journaled", ("validate", "accept", "prepared"))
    RunStore(orphan, Redactor()).append_event(
        "transition",
        state_from="selecting",
        state_to="failed",
        trigger="finish_failed",
        data={"reason": "nothing left to run; 1 task(s) failed: t1", "reason_code": "tasks_failed"},
    )
    assert read_status(project, "journaled").state == "selecting"

    result = run_cub(["runs", "list"], project)

    assert result.returncode == 0, result.stderr
    record = read_run(project, "journaled")
    assert (record.state, record.exit_code, record.reason_code, record.recorded_by) == (
        "failed",
        1,
        "tasks_failed",
        "recovery",
    )
    assert record.history[-1].trigger == "finish_failed"
    assert read_status(project, "journaled").state == "failed"
    endings = [
        e for e in read_events(project, "journaled") if e.state_to in ("failed", "force_killed")
    ]
    assert len(endings) == 1


# ------------------------------------------------------------------- concurrent recoveries


def test_two_recoveries_at_once_finalise_each_run_once(
    tmp_path: Path, bin_dir: Path, token: str
) -> None:
    """Five runs share one backlog, each with an agent running; all five runners are killed;
    then two `cub runs list` start at the same moment."""
    project = make_project(tmp_path / "proj", [task(f"t{i}") for i in range(5)])
    agent = write_script(
        bin_dir / "agent",
        f"""
import os, signal, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(os.path.join({str(bin_dir)!r}, "ready-" + os.environ["CUB_TASK_ID"]), "w").close()
time.sleep(60)
""",
    )
    runners = []
    for i in range(5):
        runners.append(
            start_cub(
                [
                    "run",
                    *command_harness(agent),
                    "--once",
                    "--name",
                    f"r{i}",
                    "--use-current-branch",
                    "--main-ok",
                ],
                project,
                env={TEST_TOKEN_VAR: token},
            )
        )
        wait_until(lambda i=i: len(list(bin_dir.glob("ready-*"))) == i + 1, what="agent ready")
    for proc in runners:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert len(processes_with_token(token)) == 5  # the agents live on

    recoverers = [start_cub(["runs", "list"], project) for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in recoverers]

    assert all(p.returncode == 0 for p in recoverers), outputs
    assert all("Traceback" not in err for _, err in outputs)
    said = "".join(err for _, err in outputs)
    for i in range(5):
        assert said.count(f"recovered run r{i}:") == 1
        assert_recovered(project, f"r{i}", "executing")
    assert all(t["status"] == "open" for t in read_tasks(project).values())
    assert processes_with_token(token) == []


def test_many_recoveries_at_once_on_many_orphans(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [task("t1")])
    orphans = orphaned_runs(project, 25)
    recoverers = [
        start_cub(command, project)
        for command in (["runs", "list"], ["status"], ["runs", "list"], ["status"])
    ]
    outputs = [p.communicate(timeout=60) for p in recoverers]

    assert all(p.returncode == 0 for p in recoverers), outputs
    said = "".join(err for _, err in outputs)
    for orphan in orphans:
        assert said.count(f"recovered run {orphan.name}:") == 1
        assert_recovered(project, orphan.name, "selecting")
        status = msgspec.json.decode((orphan / "status.json").read_bytes(), type=StatusRecord)
        assert status.state == "force_killed"


def test_recovery_does_not_wait_for_a_run_being_created(tmp_path: Path) -> None:
    """A run directory appears only once its runner holds the lock: a recovery that runs while
    cub creates runs never finalises one of them."""
    project = make_project(tmp_path / "proj", [task("t1")])
    deadline = time.monotonic() + 3
    starters = []
    while time.monotonic() < deadline:
        starters.append(
            subprocess.Popen(
                [*CUB, "run", "--ready"],
                cwd=project,
                env=cub_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        recovery = run_cub(["runs", "list"], project)
        assert "recovered" not in recovery.stderr, recovery.stderr
        if len(starters) >= 12:
            break
    for proc in starters:
        assert proc.wait(30) == 0
    for run in runs_dir(project).iterdir():
        if run.is_dir() and not run.is_symlink():
            record = read_run(project, run.name)
            assert (record.state, record.recorded_by) == ("completed", "machine")


def test_a_deleted_lock_file_does_not_make_a_live_run_look_dead(tmp_path: Path, token: str) -> None:
    """An agent deletes every *.lock it can reach, then works on; `cub status` and `cub runs
    list` from another terminal must leave the live run, its agent and its claim alone."""
    project = make_project(tmp_path / "p", [task("t1")])
    ready, go_on = tmp_path / "ready", tmp_path / "go-on"
    agent = write_script(
        tmp_path / "agent.py",
        f"""
        import glob, os, time
        for root in (os.environ["CUB_RUN_DIR"], {str(project / ".cub")!r}):
            for path in glob.glob(os.path.join(root, "*.lock")):
                os.remove(path)
        open({str(ready)!r}, "w").close()
        while not os.path.exists({str(go_on)!r}):
            time.sleep(0.05)
        """,
    )
    proc = start_cub(
        ["run", *command_harness(f"{sys.executable} {agent}")],
        project,
        env={TEST_TOKEN_VAR: token},
    )
    try:
        wait_for_file(ready, timeout=30)
        assert not (run_dir(project) / RUNNER_LOCK).exists()
        for command in (["status"], ["runs", "list"]):
            assert run_cub(command, project).returncode == 0
        assert not (run_dir(project) / "run.json").exists()
        assert processes_with_token(token), "the live run's agent was killed"
        assert read_tasks(project)["t1"]["status"] == "in_progress"
        go_on.touch()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    run = read_run(project)
    assert (run.state, run.recorded_by) == ("completed", "machine")
    assert read_tasks(project)["t1"]["status"] == "closed"


def test_a_task_its_agent_finished_is_closed_when_the_runner_dies_before_closing_it(
    tmp_path: Path,
) -> None:
    """SIGKILL between the attempt's record (succeeded) and the task's close: recovery closes
    the task from that record; the finished work is never reopened to be done again."""
    project = make_project(tmp_path / "p", [task("t1")])
    agent = write_script(tmp_path / "agent.py", "print('done')\n")
    proc = start_cub(
        ["run", "--name", "closing", *command_harness(f"{sys.executable} {agent}")],
        project,
        env={"CUB_FAULT": "pause:settling:30"},
    )
    try:
        wait_until(
            lambda: (run_dir(project, "closing") / "tasks" / "t1" / "task.json").exists(),
            timeout=30,
            what="the attempt's record",
        )
        time.sleep(0.3)  # into the pause, before the close
        assert read_tasks(project)["t1"]["status"] == "in_progress"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()

    result = run_cub(["runs", "list"], project)

    assert result.returncode == 0, result.stderr
    record = read_run(project, "closing")
    assert (record.state, record.reason_code) == ("force_killed", "runner_died")
    assert record.tasks.succeeded == 1
    assert read_attempt(project, "t1", "closing").outcome == "succeeded"
    t1 = read_tasks(project)["t1"]
    assert t1["status"] == "closed"
    assert "closed by recovery" in t1["close_reason"]
