"""`cub run --parallel N --sandbox --engine swarm` on a real two-node Docker Swarm: the manager
is the sandbox tests' engine, the worker a second engine in a network namespace of its own, and
the children's workspaces and results move through a bare repository served by `git daemon`
(tests/helpers/swarm.py). Agents are small scripts committed in the project."""

from __future__ import annotations

import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cub.lifecycle.signals import SAME_REQUEST_WINDOW
from cub.records.location import runs_dir
from cub.records.schemas import RunRecord
from tests.e2e.support import command_harness
from tests.helpers.agents import wait_until
from tests.helpers.cli import make_project, read_run, read_tasks, run_cub, start_cub, task
from tests.helpers.git import git
from tests.helpers.swarm import Swarm

pytestmark = pytest.mark.timeout(240)

HARNESS = command_harness("python3 ./agent.py")
IDENTITY = {
    "GIT_AUTHOR_NAME": "cub test",
    "GIT_AUTHOR_EMAIL": "test@cub.invalid",
    "GIT_COMMITTER_NAME": "cub test",
    "GIT_COMMITTER_EMAIL": "test@cub.invalid",
}

# Each task leaves a file named after it, committed on the child's branch.
COMMITTING_AGENT = """
import os, pathlib, subprocess, time
name = os.environ["CUB_TASK_ID"]
time.sleep(float(os.environ.get("AGENT_SLEEP", "0")))
pathlib.Path(f"{name}.txt").write_text(f"done by {name}\\n")
subprocess.run(["git", "add", f"{name}.txt"], check=True)
subprocess.run(["git", "commit", "-q", "-m", f"work on {name}"], check=True)
"""

SLEEPING_AGENT = """
import time
print("agent started", flush=True)
time.sleep(120)
"""


def swarm_project(tmp_path: Path, swarm: Swarm, agent: str, n_tasks: int) -> tuple[Path, str]:
    """A project whose backlog and agent are committed, with an origin on the swarm's git
    daemon; returns it and the remote's URL."""
    tasks = [task(f"t{i}", f"task {i}") for i in range(1, n_tasks + 1)]
    project = make_project(tmp_path / "project", tasks)
    (project / "agent.py").write_text(textwrap.dedent(agent).lstrip())
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "the backlog and the agent")
    url = swarm.bare_repository(f"{tmp_path.name}.git", project)
    git(project, "remote", "add", "origin", url)
    return project, url


def swarm_argv(width: int, name: str) -> list[str]:
    return ["run", "--parallel", str(width), "--sandbox", "--engine", "swarm", *HARNESS,
            "--name", name]  # fmt: skip


def swarm_env(swarm: Swarm) -> dict[str, str]:
    return {"DOCKER_HOST": swarm.manager_url, **IDENTITY}


def services_of(swarm: Swarm, run_id: str) -> list[Any]:
    return swarm.manager_client().services.list(filters={"label": f"cub.parent_run_id={run_id}"})


def child_records(project: Path, record: RunRecord) -> list[RunRecord]:

    return [
        msgspec.json.decode(
            (runs_dir(project) / c.run_id / "run.json").read_bytes(), type=RunRecord
        )
        for c in record.children
        if (runs_dir(project) / c.run_id / "run.json").exists()
    ]


def test_six_tasks_run_on_both_nodes_and_merge_back(tmp_path: Path, swarm: Swarm) -> None:
    project, _ = swarm_project(tmp_path, swarm, COMMITTING_AGENT, 6)

    done = run_cub(swarm_argv(3, "wide"), project, env=swarm_env(swarm), timeout=200)

    assert done.returncode == 0, done.stdout + done.stderr
    record = read_run(project, "wide")
    assert (record.mode, record.state, record.reason_code) == (
        "parallel",
        "completed",
        "all_tasks_done",
    )
    assert sorted(c.task_id or "" for c in record.children) == [f"t{i}" for i in range(1, 7)]
    assert {c.state for c in record.children} == {"completed"}
    # The swarm placed them: some on each node.
    nodes = {c.node for c in record.children}
    assert f"{swarm.namespace}-worker" in nodes and len(nodes) == 2, nodes
    # Every child's whole record came back through git and sits beside the parent's.
    children = child_records(project, record)
    assert len(children) == 6
    assert {c.parent_run_id for c in children} == {"wide"}
    assert all(c.tasks.succeeded == 1 for c in children)
    # Every branch was merged into the run branch, in task order.
    branch = record.branch
    assert branch is not None
    files = git(project, "ls-tree", "--name-only", branch).split()
    assert {f"t{i}.txt" for i in range(1, 7)} <= set(files)
    # The parent's backlog knows every task is done; no service is left on the swarm.
    assert {t["status"] for t in read_tasks(project).values()} == {"closed"}
    assert services_of(swarm, "wide") == []
    # `cub runs show` and the morning report say where each child ran.
    worker = f"{swarm.namespace}-worker"
    shown = run_cub(["runs", "show", "wide"], project)
    assert shown.stdout.count(f"on {worker}") == sum(c.node == worker for c in record.children)
    assert run_cub(["runs", "report", "wide"], project).returncode == 0
    page = (runs_dir(project) / "wide" / "report.html").read_text()
    assert f'on node <span class="node">{worker}</span>' in page


def running_tasks(swarm: Swarm, run_id: str) -> list[dict[str, Any]]:
    """The service tasks of the run's children that are running, each with its node."""
    found = []
    for service in services_of(swarm, run_id):
        for entry in service.tasks():
            if entry["Status"]["State"] == "running":
                found.append(entry)
    return found


def start_sleepers(tmp_path: Path, swarm: Swarm, name: str, n: int) -> tuple[Path, Any]:
    """A swarm run of ``n`` children whose agents sleep, once every one of them is running."""
    project, _ = swarm_project(tmp_path, swarm, SLEEPING_AGENT, n)
    proc = start_cub(swarm_argv(n, name), project, env=swarm_env(swarm))
    try:
        wait_until(lambda: len(running_tasks(swarm, name)) == n, timeout=60,
                   what=f"{n} children running")  # fmt: skip
        time.sleep(2)  # cub inside each has started its agent
    except BaseException:
        proc.kill()
        raise
    return project, proc


def finish(proc: Any, timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)  # type: ignore[no-any-return]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_an_interrupt_stops_every_service_and_brings_each_childs_record_back(
    tmp_path: Path, swarm: Swarm
) -> None:
    project, proc = start_sleepers(tmp_path, swarm, "stopped", 2)

    proc.send_signal(signal.SIGINT)
    out, err = finish(proc, 90)

    assert proc.returncode == 130, out + err
    record = read_run(project, "stopped")
    assert (record.state, record.reason_code) == ("interrupted", "sigint")
    assert [c.state for c in record.children] == ["interrupted", "interrupted"]
    # Each child recorded its own ending inside its container, and pushed it.
    children = child_records(project, record)
    assert [(c.state, c.recorded_by) for c in children] == [("interrupted", "machine")] * 2
    assert {t["status"] for t in read_tasks(project).values()} == {"open"}
    assert services_of(swarm, "stopped") == []


def test_a_second_interrupt_removes_the_services_at_once(tmp_path: Path, swarm: Swarm) -> None:
    project, proc = start_sleepers(tmp_path, swarm, "killed", 2)

    proc.send_signal(signal.SIGINT)
    time.sleep(SAME_REQUEST_WINDOW + 0.3)  # a second request, not the first one delivered twice
    second = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc, 60)
    elapsed = time.monotonic() - second

    assert proc.returncode == 137, out + err
    assert elapsed < 10, f"the parent took {elapsed:.1f}s to end after the second SIGINT"
    record = read_run(project, "killed")
    assert (record.state, record.reason_code) == ("force_killed", "second_interrupt")
    assert len(record.children) == 2
    assert {c.state for c in record.children} <= {"force_killed", "interrupted"}
    assert {t["status"] for t in read_tasks(project).values()} == {"open"}
    assert services_of(swarm, "killed") == []


def test_a_push_the_remote_refuses_fails_that_child_and_says_why(
    tmp_path: Path, swarm: Swarm
) -> None:
    project, _ = swarm_project(tmp_path, swarm, COMMITTING_AGENT, 2)
    hook = swarm.remote_dir / f"{tmp_path.name}.git" / "hooks" / "pre-receive"
    refuse = "  case $ref in refs/heads/*-t2) echo 'refused by policy'; exit 1;; esac\n"
    hook.write_text(f"#!/bin/sh\nwhile read old new ref; do\n{refuse}done\n")
    hook.chmod(0o755)

    done = run_cub(swarm_argv(2, "refused"), project, env=swarm_env(swarm), timeout=200)

    assert done.returncode == 1, done.stdout + done.stderr
    record = read_run(project, "refused")
    assert (record.state, record.reason_code) == ("failed", "tasks_failed")
    by_task = {c.task_id: c for c in record.children}
    assert by_task["t1"].state == "completed"
    assert by_task["t2"].problem is not None and "pushed no record" in by_task["t2"].problem
    assert "could not push" in by_task["t2"].problem
    tasks = read_tasks(project)
    assert (tasks["t1"]["status"], tasks["t2"]["status"]) == ("closed", "open")
    assert "t1.txt" in git(project, "ls-tree", "--name-only", record.branch or "HEAD")


KEY_AGENT = """
import os, pathlib, subprocess
ok = os.environ.get("SWARM_TEST_KEY") == "s3cr3t-" + "value-42"
pathlib.Path("key.txt").write_text("key ok\\n" if ok else "key missing\\n")
subprocess.run(["git", "add", "key.txt"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "checked the key"], check=True)
"""


def test_credentials_reach_the_child_as_secrets_and_nowhere_else(
    tmp_path: Path, swarm: Swarm
) -> None:
    project, _ = swarm_project(tmp_path, swarm, KEY_AGENT, 1)
    (project / ".cub" / "config.json").write_text('{"sandbox": {"env": ["SWARM_TEST_KEY"]}}')
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "allow the key into the sandbox")
    git(project, "push", "-q", "origin", "HEAD")
    secret = "s3cr3t-value-42"
    env = {**swarm_env(swarm), "SWARM_TEST_KEY": secret}
    proc = start_cub(swarm_argv(1, "keyed"), project, env=env)
    try:
        wait_until(lambda: len(services_of(swarm, "keyed")) == 1, timeout=60,
                   what="the child's service")  # fmt: skip
        (service,) = services_of(swarm, "keyed")
        spec = service.attrs["Spec"]
        out, err = finish(proc, 120)
    finally:
        if proc.poll() is None:
            proc.kill()

    assert proc.returncode == 0, out + err
    assert secret not in str(spec)  # not in its environment, labels or command line
    # The service: one replica, never restarted, the sandbox's limits, the run's labels.
    template = spec["TaskTemplate"]
    assert spec["Mode"]["Replicated"]["Replicas"] == 1
    assert template["RestartPolicy"]["Condition"] == "none"
    limits = template["Resources"]["Limits"]
    assert (limits["MemoryBytes"], limits["NanoCPUs"], limits["Pids"]) == (2 << 30, 2 * 10**9, 512)
    assert spec["Labels"] == {
        "cub.run_id": "keyed-t1",
        "cub.parent_run_id": "keyed",
        "cub.task_id": "t1",
    }
    assert [s["File"]["Name"] for s in template["ContainerSpec"]["Secrets"]] == [
        "cub-env-SWARM_TEST_KEY"
    ]
    record = read_run(project, "keyed")
    assert git(project, "show", f"{record.branch}:key.txt") == "key ok"
    for path in [*runs_dir(project).rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert swarm.manager_client().secrets.list(filters={"label": "cub.parent_run_id=keyed"}) == []


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--engine", "swarm", "--sandbox"], "--engine swarm requires --parallel N --sandbox"),
        (["--parallel", "2", "--remote", "git://x/y"], "--remote requires --engine swarm"),
        (["--parallel", "2", "--sandbox", "--engine", "swarm", "--no-network"], "--no-network"),
    ],
    ids=["no-parallel", "remote-alone", "no-network"],
)
def test_swarm_flags_that_do_not_go_together_are_rejected(
    tmp_path: Path, argv: list[str], words: str
) -> None:
    project = make_project(tmp_path / "project", [task("t1", "one")])
    done = run_cub(["run", *argv, *HARNESS], project)
    assert done.returncode == 2, done.stdout + done.stderr
    record = read_run(project)
    assert (record.state, record.reason_code) == ("validation_rejected", "flag_conflict")
    assert words in (record.reason or "")


def test_a_swarm_run_needs_a_manager_a_remote_and_a_committed_backlog(
    tmp_path: Path, swarm: Swarm
) -> None:
    project, _ = swarm_project(tmp_path, swarm, COMMITTING_AGENT, 1)
    worker = run_cub(swarm_argv(1, "on-worker"), project,
                     env={**swarm_env(swarm), "DOCKER_HOST": swarm.worker_url})  # fmt: skip
    assert worker.returncode == 2
    assert read_run(project).reason_code == "docker_unavailable"
    assert "a swarm worker, not a manager" in (read_run(project).reason or "")

    (project / ".cub" / "tasks.jsonl").write_text('{"id": "t9", "title": "new"}\n')
    dirty = run_cub(swarm_argv(1, "dirty"), project, env=swarm_env(swarm))
    assert dirty.returncode == 2
    assert read_run(project).reason_code == "dirty_worktree"
    assert "commit .cub/tasks.jsonl first" in (read_run(project).reason or "")
    git(project, "checkout", "--", ".cub/tasks.jsonl")

    git(project, "remote", "remove", "origin")
    remoteless = run_cub(swarm_argv(1, "remoteless"), project, env=swarm_env(swarm))
    assert remoteless.returncode == 2
    assert read_run(project).reason_code == "invalid_flag"
    assert "pass --remote URL" in (read_run(project).reason or "")


# Spends, then (shown with --stream) prints what looks like cub's usage line, claiming nothing.
SPENDING_AGENT = """
import json, time
print(json.dumps({"cub_usage": {"input_tokens": 600, "output_tokens": 0}}), flush=True)
for _ in range(60):
    print('cub-usage {"tokens_used": 0, "cost_usd": null, "cost_incomplete": false}', flush=True)
    time.sleep(1)
"""


@pytest.mark.parametrize("stream", [False, True], ids=["quiet", "streamed"])
def test_live_children_share_the_token_budget(tmp_path: Path, swarm: Swarm, stream: bool) -> None:
    """Each child alone stays under the limit; together they cross it while still running,
    and the parent stops them (it reads each one's usage from its service's log, where an
    agent's own lines cannot pass for cub's)."""
    project, _ = swarm_project(tmp_path, swarm, SPENDING_AGENT, 2)

    argv = [*swarm_argv(2, "shared"), "--budget-tokens", "1000", *(["--stream"] * stream)]
    done = run_cub(argv, project, env=swarm_env(swarm), timeout=200)

    assert done.returncode == 3, done.stdout + done.stderr
    record = read_run(project, "shared")
    assert (record.state, record.reason_code) == ("budget_exhausted", "token_budget")
    assert [c.state for c in record.children] == ["interrupted", "interrupted"]
    assert record.budget.tokens_used == 1200
    assert {t["status"] for t in read_tasks(project).values()} == {"open"}
    assert services_of(swarm, "shared") == []


def test_the_next_command_after_the_parent_is_sigkilled_stops_and_records_its_children(
    tmp_path: Path, swarm: Swarm
) -> None:
    project, proc = start_sleepers(tmp_path, swarm, "orphan", 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert len(running_tasks(swarm, "orphan")) == 2  # nobody stopped them

    status = run_cub(["status"], project, env=swarm_env(swarm), timeout=120)

    assert "recovered run orphan" in status.stderr, status.stdout + status.stderr
    record = read_run(project, "orphan")
    assert (record.state, record.reason_code, record.recorded_by) == (
        "force_killed",
        "runner_died",
        "recovery",
    )
    # Its children were stopped in order, recorded their own endings and pushed them.
    assert sorted(c.task_id or "" for c in record.children) == ["t1", "t2"]
    assert {c.state for c in record.children} == {"interrupted"}
    assert len(child_records(project, record)) == 2
    assert {t["status"] for t in read_tasks(project).values()} == {"open"}
    assert services_of(swarm, "orphan") == []


def test_recovery_without_the_swarm_records_the_parent_and_leaves_the_claims(
    tmp_path: Path, swarm: Swarm
) -> None:
    project, proc = start_sleepers(tmp_path, swarm, "unreached", 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    try:
        env = {**swarm_env(swarm), "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
        status = run_cub(["status"], project, env=env, timeout=120)

        assert "Traceback" not in status.stderr
        assert "recovered run unreached" in status.stderr, status.stderr
        assert "the swarm could not be asked to stop its services" in status.stderr
        record = read_run(project, "unreached")
        assert (record.state, record.reason_code) == ("force_killed", "runner_died")
        # Its children may still be at work: their tasks stay theirs, for a person to release.
        tasks = read_tasks(project)
        assert {tasks[t]["status"] for t in ("t1", "t2")} == {"in_progress"}
    finally:
        for service in services_of(swarm, "unreached"):
            service.remove()


# Last in this file: it stops the worker's engine for good (the swarm is the session's).
def test_a_lost_node_fails_the_children_it_held_and_names_it(tmp_path: Path, swarm: Swarm) -> None:
    agent = COMMITTING_AGENT.replace('os.environ.get("AGENT_SLEEP", "0")', '"25"')
    project, _ = swarm_project(tmp_path, swarm, agent, 2)
    proc = start_cub(swarm_argv(2, "lost"), project, env=swarm_env(swarm))
    try:
        wait_until(lambda: len(running_tasks(swarm, "lost")) == 2, timeout=60,
                   what="2 children running")  # fmt: skip
        placed = {t["NodeID"] for t in running_tasks(swarm, "lost")}
        assert swarm.worker_node_id in placed, "the swarm put no child on the worker"
        swarm.stop_worker_engine()
        out, err = finish(proc, 150)
    finally:
        if proc.poll() is None:
            proc.kill()

    assert proc.returncode == 1, out + err
    record = read_run(project, "lost")
    assert (record.state, record.reason_code) == ("failed", "tasks_failed")
    worker = f"{swarm.namespace}-worker"
    on_worker = [c for c in record.children if c.node == worker]
    elsewhere = [c for c in record.children if c.node != worker]
    assert on_worker and all(
        c.state == "failed" and worker in (c.problem or "") for c in on_worker
    ), on_worker
    assert all(c.state == "completed" for c in elsewhere), elsewhere
    tasks = read_tasks(project)
    assert {tasks[c.task_id or ""]["status"] for c in on_worker} == {"open"}
    assert services_of(swarm, "lost") == []
