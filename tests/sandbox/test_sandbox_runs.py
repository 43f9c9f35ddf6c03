"""`cub run --sandbox` against a real Docker engine: the real cub process on the host, the real
cub inside the container, agents that are small scripts committed in the project."""

from __future__ import annotations

import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cub.lifecycle.signals import SAME_REQUEST_WINDOW
from cub.records.schemas import ChildRun, RunRecord
from tests.e2e.support import command_harness
from tests.helpers.agents import wait_for_file, wait_until
from tests.helpers.browser import check_report_page, chromium_or_reason, dom_of
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
    write_tasks,
)
from tests.helpers.exit_paths import assert_ending, exit_path
from tests.helpers.git import git

pytestmark = pytest.mark.timeout(180)

HARNESS = command_harness("python3 ./agent.py")

COMMITTING_AGENT = """
import pathlib, subprocess
pathlib.Path("work.txt").write_text("done in the sandbox\\n")
subprocess.run(["git", "add", "work.txt"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "agent work"], check=True)
print("committed", flush=True)
"""

# Commits, then is still at work when the host dies.
COMMITTING_SLEEPER = (
    COMMITTING_AGENT
    + """
import time
open("ready", "w").close()
time.sleep(60)
"""
)

NETWORK_AGENT = """
import socket, sys
try:
    socket.create_connection(("1.1.1.1", 53), timeout=5).close()
except OSError as exc:
    print(f"network check: connect failed: {exc}", flush=True)
    sys.exit(0)
print("network check: connected", flush=True)
sys.exit(1)
"""

GREEDY_AGENT = """
chunks = []
for _ in range(200):
    chunks.append(b"x" * (1 << 20))  # 200 MB, every page touched
print("allocated 200 MB", flush=True)
"""

SLEEPING_AGENT = """
import signal, time
{ignore}
print("agent started", flush=True)
open("ready", "w").close()
time.sleep(60)
"""

FAILING_AGENT = """
import sys
print("cannot do this", flush=True)
sys.exit(3)
"""


def sandbox_project(tmp_path: Path, agent: str, config: dict[str, Any] | None = None) -> Path:
    """A project whose agent script is committed (so it is in the container's workspace)."""
    project = make_project(tmp_path / "project", [task("t1", "the task")], config)
    (project / "agent.py").write_text(textwrap.dedent(agent).lstrip())
    git(project, "add", "agent.py")
    git(project, "commit", "-q", "-m", "add the agent")
    return project


def child_of(record: RunRecord) -> ChildRun:
    assert len(record.children) == 1, record.children
    return record.children[0]


def inner_record(project: Path, record: RunRecord) -> RunRecord:
    path = run_dir(project, record.run_id) / "inner" / child_of(record).run_id / "run.json"
    return msgspec.json.decode(path.read_bytes(), type=RunRecord)


def containers_of(client: Any, run_id: str) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"cub.run_id={run_id}"})


def host_changes(project: Path) -> list[str]:
    """`git status` of the host outside .cub/ (the records and the backlog live there)."""
    lines = git(project, "status", "--porcelain", "--untracked-files=all").splitlines()
    return [line for line in lines if not line[3:].startswith(".cub/")]


def assert_cleaned_up(project: Path, client: Any, run_id: str) -> None:
    assert not (project / ".cub" / "worktrees" / run_id).exists()
    assert containers_of(client, run_id) == []


def test_sandboxed_run_brings_its_commits_back_on_a_branch(
    tmp_path: Path, docker_host: str, docker_client: Any
) -> None:
    project = sandbox_project(tmp_path, COMMITTING_AGENT)
    main_before = git(project, "rev-parse", "main")

    done = run_cub(["run", "--sandbox", *HARNESS, "--name", "box"], project,
                   env={"DOCKER_HOST": docker_host})  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    record = read_run(project, "box")
    assert (record.mode, record.state, record.reason_code) == (
        "sandbox",
        "completed",
        "all_tasks_done",
    )
    child = child_of(record)
    assert child.state == "completed" and child.exit_code == 0
    assert child.image == "cub-sandbox:latest" and child.container_id
    assert child.oom_killed is False
    assert record.tasks.succeeded == 1 and record.tasks.attempted == ["t1"]
    # The inner run's own records survive under the host run, linked to it.
    inner = inner_record(project, record)
    assert inner.parent_run_id == "box" and inner.state == "completed"
    inner_dir = run_dir(project, "box") / "inner" / child.run_id
    assert (inner_dir / "tasks" / "t1" / "task.json").is_file()
    assert "committed" in (inner_dir / "tasks" / "t1" / "harness.log").read_text()
    assert "t1" in (run_dir(project, "box") / "container.log").read_text()
    # The work is a commit on the run's branch; the host's main and working tree are untouched.
    assert record.branch == "cub/box"
    assert git(project, "log", "-1", "--format=%s", "cub/box") == "agent work"
    assert git(project, "show", "cub/box:work.txt") == "done in the sandbox"
    assert git(project, "rev-parse", "main") == main_before
    assert git(project, "symbolic-ref", "--short", "HEAD") == "main"
    assert host_changes(project) == []
    assert not (project / "work.txt").exists()
    # The task's outcome is on the host's backlog.
    assert read_tasks(project)["t1"]["status"] == "closed"
    assert_cleaned_up(project, docker_client, "box")
    # The morning report: the host run's page links the run inside, which has its own.
    browser, problem = chromium_or_reason()
    if browser is None:
        pytest.skip(problem or "no chromium")
    report = run_cub(["runs", "report", "box"], project)
    assert report.returncode == 0, report.stderr
    page = Path(report.stdout.strip())
    check_report_page(browser, page, tmp_path)
    children = [e.attrs["data-child"] for e in dom_of(browser, page) if "data-child" in e.attrs]
    assert children == [child.run_id]
    check_report_page(browser, inner_dir / "report.html", tmp_path)


def test_no_network_cuts_the_container_off(tmp_path: Path, docker_host: str) -> None:
    project = sandbox_project(tmp_path, NETWORK_AGENT)

    done = run_cub(["run", "--sandbox", "--no-network", *HARNESS, "--name", "offline"], project,
                   env={"DOCKER_HOST": docker_host})  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    record = read_run(project, "offline")
    log = run_dir(project, "offline") / "inner" / child_of(record).run_id / "tasks" / "t1"
    text = (log / "harness.log").read_text()
    assert "network check: connect failed" in text
    assert "unreachable" in text.lower()
    assert record.config["sandbox"]["network"] is False


@exit_path("children_failed", "supervising", "sandbox_oom")
def test_a_container_out_of_memory_fails_the_run_as_sandbox_oom(
    tmp_path: Path, docker_host: str, docker_client: Any
) -> None:
    project = sandbox_project(tmp_path, GREEDY_AGENT, config={"sandbox": {"memory": "32m"}})

    done = run_cub(["run", "--sandbox", *HARNESS, "--name", "greedy"], project,
                   env={"DOCKER_HOST": docker_host})  # fmt: skip

    assert done.returncode == 1, done.stdout + done.stderr
    record = read_run(project, "greedy")
    assert (record.state, record.reason_code) == ("failed", "sandbox_oom")
    assert_ending(
        project, done.returncode, "children_failed", "supervising", "sandbox_oom", run_id="greedy"
    )
    assert "32m" in record.reason
    child = child_of(record)
    assert child.oom_killed is True
    assert child.state in ("failed", "force_killed")  # the agent, or cub itself, was killed
    inner_record(project, record)  # the inner run has a record either way
    assert read_tasks(project)["t1"]["status"] != "in_progress"
    assert_cleaned_up(project, docker_client, "greedy")


def test_a_failed_task_inside_fails_the_host_run(tmp_path: Path, docker_host: str) -> None:
    project = sandbox_project(tmp_path, FAILING_AGENT)

    done = run_cub(["run", "--sandbox", *HARNESS, "--name", "fails"], project,
                   env={"DOCKER_HOST": docker_host})  # fmt: skip

    assert done.returncode == 1, done.stdout + done.stderr
    record = read_run(project, "fails")
    assert (record.state, record.reason_code) == ("failed", "tasks_failed")
    child = child_of(record)
    assert (child.state, child.reason_code, child.exit_code) == ("failed", "task_failed", 1)
    t1 = read_tasks(project)["t1"]
    assert t1["status"] == "retry" and t1["attempts"] == 1
    assert "attempt 1 failed" in t1["notes"]


def test_sigint_stops_the_run_inside_in_order(
    tmp_path: Path, docker_host: str, docker_client: Any
) -> None:
    project = sandbox_project(tmp_path, SLEEPING_AGENT.format(ignore=""))
    proc = start_cub(["run", "--sandbox", *HARNESS, "--name", "stopme"], project,
                     env={"DOCKER_HOST": docker_host})  # fmt: skip
    try:
        wait_for_file(project / ".cub" / "worktrees" / "stopme" / "ready", timeout=60)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()

    assert proc.returncode == 130, out + err
    record = read_run(project, "stopme")
    assert (record.state, record.reason_code) == ("interrupted", "sigint")
    child = child_of(record)
    assert child.state == "interrupted" and child.exit_code == 130
    inner = inner_record(project, record)
    assert inner.state == "interrupted" and inner.recorded_by == "machine"
    assert read_tasks(project)["t1"]["status"] == "open"
    assert_cleaned_up(project, docker_client, "stopme")


def test_a_second_sigint_kills_the_container_at_once(
    tmp_path: Path, docker_host: str, docker_client: Any
) -> None:
    ignore = "for sig in (signal.SIGINT, signal.SIGTERM): signal.signal(sig, signal.SIG_IGN)"
    project = sandbox_project(tmp_path, SLEEPING_AGENT.format(ignore=ignore))
    proc = start_cub(["run", "--sandbox", *HARNESS, "--name", "killme"], project,
                     env={"DOCKER_HOST": docker_host})  # fmt: skip
    try:
        wait_for_file(project / ".cub" / "worktrees" / "killme" / "ready", timeout=60)
        proc.send_signal(signal.SIGINT)
        wait_until(lambda: read_status(project, "killme").state == "stopping", timeout=10,
                   what="the host run stopping")  # fmt: skip
        # The inner run is stopping too, and its agent ignores SIGINT; well past the window in
        # which a signal counts as the first one delivered twice (cub.lifecycle.signals).
        time.sleep(SAME_REQUEST_WINDOW + 0.3)
        second = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - second
    finally:
        if proc.poll() is None:
            proc.kill()

    assert proc.returncode == 137, out + err
    assert elapsed < 5, f"the host took {elapsed:.1f}s to end after the second SIGINT"
    record = read_run(project, "killme")
    assert (record.state, record.reason_code) == ("force_killed", "second_interrupt")
    child = child_of(record)
    assert child.state == "force_killed"
    inner = inner_record(project, record)
    assert (inner.state, inner.recorded_by) == ("force_killed", "recovery")
    assert read_tasks(project)["t1"]["status"] == "open"  # released, not left claimed
    assert_cleaned_up(project, docker_client, "killme")


@pytest.mark.parametrize("keep", [False, True], ids=["removed", "kept"])
def test_recovery_after_the_host_is_sigkilled_stops_the_container_and_salvages_the_work(
    tmp_path: Path, docker_host: str, docker_client: Any, keep: bool
) -> None:
    project = sandbox_project(tmp_path, COMMITTING_SLEEPER)
    flags = ["--sandbox-keep"] if keep else []
    proc = start_cub(["run", "--sandbox", *flags, *HARNESS, "--name", "orphan"], project,
                     env={"DOCKER_HOST": docker_host})  # fmt: skip
    workspace = project / ".cub" / "worktrees" / "orphan"
    try:
        wait_for_file(workspace / "ready", timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    (running,) = containers_of(docker_client, "orphan")
    assert running.status == "running"  # nothing on the host stops it: the host is gone
    assert read_tasks(project)["t1"].get("attempts", 0) == 0  # the claim is the sandbox's

    listed = run_cub(["runs", "list"], project, env={"DOCKER_HOST": docker_host})

    assert listed.returncode == 0, listed.stdout + listed.stderr
    record = read_run(project, "orphan")
    assert (record.state, record.reason_code, record.recorded_by) == (
        "force_killed",
        "runner_died",
        "recovery",
    )
    branch = record.branch
    assert branch is not None and f"its work was fetched back to {branch}" in record.reason
    # The commit made inside reached the host repository; the workspace is gone.
    assert git(project, "log", "-1", "--format=%s", branch) == "agent work"
    assert not workspace.exists()
    # The inner run was recovered and its records copied under the host run.
    child = child_of(record)
    assert (child.state, child.container_id) == ("force_killed", running.id)
    inner = inner_record(project, record)
    assert (inner.reason_code, inner.recorded_by) == ("runner_died", "recovery")
    # Its task results reached the host backlog: the task open again, and the attempt killed
    # with its runner not counted against the task.
    t1 = read_tasks(project)["t1"]
    assert (t1["status"], t1.get("attempts", 0)) == ("open", 0)
    assert "released by recovery" in t1.get("notes", ""), t1
    (note,) = [e for e in read_events(project, "orphan") if e.kind == "sandbox_recovered"]
    assert note.data is not None
    assert (note.data["containers"], note.data["kept"]) == ([running.id], keep)
    assert note.data["tasks_updated"] == ["t1"]
    if keep:
        assert "its container was stopped and kept" in record.reason
        (left,) = containers_of(docker_client, "orphan")
        assert left.status == "exited"
    else:
        assert "its container was stopped;" in record.reason
        assert containers_of(docker_client, "orphan") == []


def test_sandbox_keep_keeps_the_hardened_container(
    tmp_path: Path, docker_host: str, docker_client: Any
) -> None:
    config = {"sandbox": {"env": ["ALLOWED_API_KEY"], "pids_limit": 64, "memory": "256m"}}
    project = sandbox_project(tmp_path, COMMITTING_AGENT, config=config)
    env = {"DOCKER_HOST": docker_host, "ALLOWED_API_KEY": "k-123", "NOT_ALLOWED": "secret"}

    done = run_cub(["run", "--sandbox", "--sandbox-keep", *HARNESS, "--name", "kept"], project,
                   env=env)  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    record = read_run(project, "kept")
    child = child_of(record)
    assert child.container_id is not None
    container = docker_client.containers.get(child.container_id)
    try:
        assert f"container {child.container_id[:12]} kept" in record.reason
        assert container.status == "exited"
        host = container.attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert host["PidsLimit"] == 64
        assert host["Memory"] == 256 * 1024 * 1024
        assert host["Init"] is True
        assert host["Binds"] == [f"{project}/.cub/worktrees/kept:{project}/.cub/worktrees/kept:rw"]
        names = {item.split("=", 1)[0] for item in container.attrs["Config"]["Env"]}
        assert "ALLOWED_API_KEY" in names and "NOT_ALLOWED" not in names
        assert not any(name.startswith(("PWD", "USER", "SHELL")) for name in names)
    finally:
        container.remove(force=True)
    # The workspace goes either way; the branch stays.
    assert not (project / ".cub" / "worktrees" / "kept").exists()
    assert git(project, "log", "-1", "--format=%s", "cub/kept") == "agent work"


@exit_path("setup_failed", "preparing", "sandbox_failed")
def test_a_missing_image_fails_setup_and_leaves_nothing(tmp_path: Path, docker_host: str) -> None:
    project = sandbox_project(tmp_path, COMMITTING_AGENT,
                              config={"sandbox": {"image": "cub-sandbox:not-built"}})  # fmt: skip

    done = run_cub(["run", "--sandbox", *HARNESS, "--name", "noimage"], project,
                   env={"DOCKER_HOST": docker_host})  # fmt: skip

    assert done.returncode == 1, done.stdout + done.stderr
    record = read_run(project, "noimage")
    assert (record.state, record.reason_code) == ("failed", "sandbox_failed")
    assert_ending(
        project, done.returncode, "setup_failed", "preparing", "sandbox_failed", run_id="noimage"
    )
    assert "cub-sandbox:not-built not found" in record.reason
    assert "cub sandbox build" in record.reason
    assert git(project, "branch", "--list", "cub/*") == ""
    assert not (project / ".cub" / "worktrees").exists()


def test_no_engine_rejects_the_invocation_naming_docker_host(tmp_path: Path) -> None:
    project = sandbox_project(tmp_path, COMMITTING_AGENT)

    done = run_cub(["run", "--sandbox", *HARNESS], project,
                   env={"DOCKER_HOST": "unix:///nonexistent.sock"})  # fmt: skip

    assert done.returncode == 2
    record = read_run(project)
    assert (record.state, record.reason_code) == ("validation_rejected", "docker_unavailable")
    assert "DOCKER_HOST=unix:///nonexistent.sock" in record.reason
    assert "DOCKER_HOST=unix:///nonexistent.sock" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_sandbox_build_refuses_a_base_image_that_is_not_there(docker_host: str) -> None:
    done = run_cub(
        ["sandbox", "build", "--base", "no-such-image:1", "--tag", "cub-sandbox:never"],
        Path.cwd(), env={"DOCKER_HOST": docker_host},
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "cub sandbox build: error: base image no-such-image:1 not found in the local engine"
    )


@exit_path("children_failed", "supervising", "sandbox_failed")
def test_the_agent_must_be_installed_in_the_image_not_on_the_host(
    tmp_path: Path, docker_host: str
) -> None:
    """`--harness claude` is checked where the agent runs: the image (which has no claude)."""
    project = sandbox_project(tmp_path, COMMITTING_AGENT)

    done = run_cub(["run", "--sandbox", "--harness", "claude", "--name", "noclaude"], project,
                   env={"DOCKER_HOST": docker_host, "PATH": "/usr/bin:/bin"})  # fmt: skip

    assert done.returncode == 1, done.stdout + done.stderr
    record = read_run(project, "noclaude")
    assert (record.state, record.reason_code) == ("failed", "sandbox_failed")
    assert_ending(
        project,
        done.returncode,
        "children_failed",
        "supervising",
        "sandbox_failed",
        run_id="noclaude",
    )
    child = child_of(record)
    assert (child.state, child.reason_code, child.exit_code) == (
        "validation_rejected",
        "harness_not_found",
        2,
    )
    assert "'claude'" in record.reason
    assert read_tasks(project)["t1"]["status"] == "open"


def test_a_project_in_a_subdirectory_of_the_repository(tmp_path: Path, docker_host: str) -> None:
    repo = make_project(tmp_path / "repo")  # .cub/ at the top is not this project's
    project = repo / "service"
    project.mkdir()
    (project / ".cub").mkdir()
    write_tasks(project, [task("s1", "the service task")])
    (project / "agent.py").write_text(textwrap.dedent(COMMITTING_AGENT).lstrip())
    git(repo, "add", "service/agent.py")
    git(repo, "commit", "-q", "-m", "add the agent")

    done = run_cub(["run", "--sandbox", *HARNESS, "--name", "sub"], project,
                   env={"DOCKER_HOST": docker_host})  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert read_run(project, "sub").state == "completed"
    assert git(repo, "show", "cub/sub:service/work.txt") == "done in the sandbox"
    assert read_tasks(project)["s1"]["status"] == "closed"
