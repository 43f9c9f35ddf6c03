"""`cub run --parallel N`, through the real `cub` process: the parent run supervises one child
`cub` process per task, each in its own worktree and branch, then merges the branches back.

The agents are small scripts: each writes a file named after its task (CUB_TASK_ID) in the
child's worktree and commits it; some fail, conflict, sleep, ignore SIGINT or report usage.
Every agent writes its pid to a file, so the tests can check that none outlives cub.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from cub.lifecycle.signals import SAME_REQUEST_WINDOW
from cub.records.location import runs_dir
from cub.records.schemas import RunRecord
from tests.e2e.support import command_harness
from tests.helpers.agents import (
    TEST_TOKEN_VAR,
    is_alive,
    processes_with_token,
    wait_until,
    write_script,
)
from tests.helpers.cli import all_runs, make_project, read_status, read_tasks, run_cub, start_cub
from tests.helpers.exit_paths import assert_ending, exit_path
from tests.helpers.git import git

pytestmark = pytest.mark.timeout(120)

PARENT = "par"

# The agent: optionally report usage, sleep, fail or write a shared file, then commit a file
# named after its task. Behaviour is chosen per task through environment variables.
AGENT = """
import json, os, signal, subprocess, sys, time
task = os.environ["CUB_TASK_ID"]
pids = os.environ["AGENT_PID_DIR"]
with open(os.path.join(pids, task + ".tmp"), "w") as f:
    f.write(str(os.getpid()))
os.rename(os.path.join(pids, task + ".tmp"), os.path.join(pids, task + ".pid"))
if os.environ.get("AGENT_IGNORE_SIGINT"):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
if os.environ.get("AGENT_USAGE"):
    print(json.dumps({"cub_usage": {"input_tokens": 100, "output_tokens": 0}}), flush=True)
time.sleep(float(os.environ.get("AGENT_SLEEP", "0")))
if task in os.environ.get("AGENT_FAIL", "").split(","):
    print("failing on purpose", flush=True)
    sys.exit(1)
name = "shared.txt" if os.environ.get("AGENT_SHARED") else task + ".txt"
seen = sorted(p for p in os.listdir(".") if p.endswith(".txt"))
with open(name, "w") as f:
    f.write(task + " saw " + ",".join(seen) + "\\n")
subprocess.run(["git", "add", name], check=True)
subprocess.run(["git", "commit", "-q", "-m", "work on " + task], check=True)
"""


@pytest.fixture
def agent(tmp_path: Path) -> Path:
    (tmp_path / "bin").mkdir()
    return write_script(tmp_path / "bin" / "agent.py", AGENT)


@pytest.fixture
def pid_dir(tmp_path: Path) -> Path:
    path = tmp_path / "pids"
    path.mkdir()
    return path


def _env(pid_dir: Path, token: str = "", **extra: str) -> dict[str, str]:
    env = {"AGENT_PID_DIR": str(pid_dir), TEST_TOKEN_VAR: token or uuid.uuid4().hex}
    env.update(extra)
    return env


def _args(agent: Path, width: int, *extra: str) -> list[str]:
    return [
        "run",
        "--parallel",
        str(width),
        "--name",
        PARENT,
        *command_harness(agent),
        *extra,
    ]


def _tasks(*ids: str, **fields: object) -> list[dict[str, object]]:
    return [
        {"id": i, "title": f"task {i}", "status": "open", "priority": 2, "issue_type": "task"}
        | fields
        for i in ids
    ]


def _records(project: Path) -> tuple[RunRecord, dict[str, RunRecord]]:
    runs = {r.run_id: r for r in all_runs(project)}
    parent = runs.pop(PARENT)
    return parent, {r.run_id: r for r in runs.values()}


def _on_branch(project: Path, branch: str) -> set[str]:
    return set(git(project, "ls-tree", "--name-only", branch).split())


def _assert_no_survivors(pid_dir: Path, token: str) -> None:
    pids = [int(p.read_text()) for p in pid_dir.glob("*.pid")]
    assert pids, "no agent ever started"
    wait_until(lambda: not any(is_alive(p) for p in pids), timeout=3, what="agents gone")
    # Nothing started under the run is left: no agent, no grandchild, no child cub.
    wait_until(lambda: processes_with_token(token) == [], timeout=3, what="no survivors")


def test_independent_tasks_run_as_children_and_merge(
    tmp_path: Path, agent: Path, pid_dir: Path
) -> None:
    project = make_project(tmp_path / "p", _tasks("T1", "T2", "T3", "T4"))
    result = run_cub(_args(agent, 2), project, env=_env(pid_dir, AGENT_SLEEP="0.3"))
    assert result.returncode == 0, result.stdout + result.stderr
    parent, children = _records(project)
    assert (parent.mode, parent.state, parent.reason_code) == (
        "parallel",
        "completed",
        "all_tasks_done",
    )
    assert parent.branch == f"cub/{PARENT}"
    assert [h.trigger for h in parent.history][-2:] == ["supervise", "children_done"]
    assert sorted(c.task_id for c in parent.children) == ["T1", "T2", "T3", "T4"]
    assert {(c.run_id, c.state, c.exit_code) for c in parent.children} == {
        (f"{PARENT}-{t}", "completed", 0) for t in ("T1", "T2", "T3", "T4")
    }
    assert (parent.tasks.succeeded, parent.tasks.failed) == (4, 0)
    assert sorted(parent.tasks.attempted) == ["T1", "T2", "T3", "T4"]
    assert parent.budget.tasks_used == 4 and parent.budget.iterations == 4
    assert len(children) == 4
    for child in children.values():
        assert child.parent_run_id == PARENT and child.mode == "run"
        assert child.state == "completed"
        assert child.branch == f"cub/{child.run_id}"
    assert {"T1.txt", "T2.txt", "T3.txt", "T4.txt"} <= _on_branch(project, parent.branch)
    # The parent merged in a worktree of its own: the checkout never left main.
    assert git(project, "branch", "--show-current") == "main"
    assert all(t["status"] == "closed" for t in read_tasks(project).values())
    # The children removed their worktrees; their branches, merged, are gone too.
    assert git(project, "worktree", "list").count("\n") == 0
    assert git(project, "branch", "--list", f"cub/{PARENT}-*") == ""
    # Each child's console output is kept with the parent; `latest` names the parent again.
    runs = runs_dir(project)
    assert sorted(p.name for p in (runs / PARENT / "children").iterdir()) == [
        f"{PARENT}-{t}.log" for t in ("T1", "T2", "T3", "T4")
    ]
    assert (runs / "latest").resolve().name == PARENT


@exit_path("children_done", "supervising", "no_ready_tasks")
def test_nothing_ready_completes_without_children(
    tmp_path: Path, agent: Path, pid_dir: Path
) -> None:
    tasks = [
        *_tasks("A", status="in_progress", assignee="another-run"),
        *_tasks("B", dependsOn=["A"]),
    ]
    project = make_project(tmp_path / "p", tasks)
    result = run_cub(_args(agent, 2), project, env=_env(pid_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert_ending(
        project, result.returncode, "children_done", "supervising", "no_ready_tasks", run_id=PARENT
    )
    parent, children = _records(project)
    assert (parent.state, parent.reason_code) == ("completed", "no_ready_tasks")
    assert parent.children == [] and children == {}


@exit_path("exhaust_budget", "supervising", "task_budget")
def test_the_task_budget_caps_how_many_children_start(
    tmp_path: Path, agent: Path, pid_dir: Path
) -> None:
    project = make_project(tmp_path / "p", _tasks("T1", "T2", "T3"))
    result = run_cub(
        [*_args(agent, 3), "--budget-tasks", "2"], project, env=_env(pid_dir, AGENT_SLEEP="0.2")
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert_ending(
        project, result.returncode, "exhaust_budget", "supervising", "task_budget", run_id=PARENT
    )
    parent, _ = _records(project)
    assert (parent.state, parent.reason_code) == ("budget_exhausted", "task_budget")
    assert sorted(c.task_id for c in parent.children) == ["T1", "T2"]
    assert {"T1.txt", "T2.txt"} <= _on_branch(project, parent.branch or "")
    assert read_tasks(project)["T3"]["status"] == "open"


def test_a_dependent_task_waits_for_its_dependency_and_builds_on_it(
    tmp_path: Path, agent: Path, pid_dir: Path
) -> None:
    tasks = [*_tasks("A"), *_tasks("B", dependsOn=["A"]), *_tasks("C")]
    project = make_project(tmp_path / "p", tasks)
    result = run_cub(_args(agent, 3), project, env=_env(pid_dir, AGENT_SLEEP="0.3"))
    assert result.returncode == 0, result.stdout + result.stderr
    parent, children = _records(project)
    assert parent.state == "completed"
    a, b = children[f"{PARENT}-A"], children[f"{PARENT}-B"]
    assert a.ended_at <= b.started_at  # B ran in a later wave
    assert [c.task_id for c in parent.children][-1] == "B"
    # B started from a run branch that already had A's work merged.
    saw = git(project, "show", f"{parent.branch}:B.txt")
    assert "A.txt" in saw
    assert {"A.txt", "B.txt", "C.txt"} <= _on_branch(project, parent.branch)


def test_a_failing_child_fails_the_parent_and_the_others_merge(
    tmp_path: Path, agent: Path, pid_dir: Path
) -> None:
    project = make_project(tmp_path / "p", _tasks("T1", "T2", "T3"))
    env = _env(pid_dir, AGENT_SLEEP="0.2", AGENT_FAIL="T2")
    result = run_cub(_args(agent, 3), project, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    parent, _ = _records(project)
    assert (parent.state, parent.reason_code) == ("failed", "tasks_failed")
    assert [h.trigger for h in parent.history][-1] == "children_failed"
    states = {c.task_id: c.state for c in parent.children}
    assert states == {"T1": "completed", "T2": "failed", "T3": "completed"}
    assert (parent.tasks.succeeded, parent.tasks.failed) == (2, 1)
    on_branch = _on_branch(project, parent.branch or "")
    assert {"T1.txt", "T3.txt"} <= on_branch and "T2.txt" not in on_branch


@exit_path("children_failed", "supervising", "merge_conflict")
def test_a_branch_that_does_not_merge_fails_its_task(
    tmp_path: Path, agent: Path, pid_dir: Path
) -> None:
    project = make_project(tmp_path / "p", _tasks("T1", "T2"))
    env = _env(pid_dir, AGENT_SLEEP="0.2", AGENT_SHARED="1")
    result = run_cub(_args(agent, 2), project, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_ending(
        project,
        result.returncode,
        "children_failed",
        "supervising",
        "merge_conflict",
        run_id=PARENT,
    )
    parent, children = _records(project)
    assert (parent.state, parent.reason_code) == ("failed", "merge_conflict")
    assert "T2" in parent.reason
    # Both children succeeded; the first branch in task order merged, the second did not.
    assert all(c.state == "completed" for c in children.values())
    assert {(c.task_id, c.state, c.reason_code) for c in parent.children} == {
        ("T1", "completed", "task_done"),
        ("T2", "completed", "merge_conflict"),
    }
    assert (parent.tasks.succeeded, parent.tasks.failed) == (1, 1)
    assert git(project, "show", f"{parent.branch}:shared.txt").startswith("T1 ")
    tasks = read_tasks(project)
    assert tasks["T1"]["status"] == "closed"
    assert tasks["T2"]["status"] == "failed"
    assert "merge_conflict" in tasks["T2"]["notes"] and "close_reason" not in tasks["T2"]
    # The merge was aborted: a clean tree, the conflicting branch kept.
    assert git(project, "status", "--porcelain", "--untracked-files=no") == ""
    assert git(project, "branch", "--list", f"cub/{PARENT}-T2")


def _start_sleepers(
    tmp_path: Path, agent: Path, pid_dir: Path, count: int, **env: str
) -> tuple[Path, subprocess.Popen[str], str]:
    ids = [f"T{i}" for i in range(1, count + 1)]
    project = make_project(tmp_path / "p", _tasks(*ids))
    token = uuid.uuid4().hex
    proc = start_cub(
        _args(agent, count), project, env=_env(pid_dir, token, AGENT_SLEEP="30", **env)
    )
    wait_until(lambda: all((pid_dir / f"{i}.pid").exists() for i in ids), timeout=20, what="agents")
    return project, proc, token


def test_sigint_stops_every_child_then_the_parent(
    tmp_path: Path, agent: Path, pid_dir: Path
) -> None:
    project, proc, token = _start_sleepers(tmp_path, agent, pid_dir, 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    parent, children = _records(project)
    assert (parent.state, parent.reason_code) == ("interrupted", "sigint")
    assert [h.trigger for h in parent.history][-2:] == ["interrupt", "stopped"]
    assert len(children) == 2
    for child in children.values():
        assert (child.state, child.exit_code, child.recorded_by) == ("interrupted", 130, "machine")
    assert {c.state for c in parent.children} == {"interrupted"}
    assert all(t["status"] == "open" for t in read_tasks(project).values())
    _assert_no_survivors(pid_dir, token)


def test_second_sigint_kills_every_child_at_once(
    tmp_path: Path, agent: Path, pid_dir: Path
) -> None:
    project, proc, token = _start_sleepers(tmp_path, agent, pid_dir, 2, AGENT_IGNORE_SIGINT="1")
    proc.send_signal(signal.SIGINT)
    wait_until(lambda: read_status(project, PARENT).state == "stopping", what="stopping")
    # The children are stopping too, their agents ignoring SIGINT for the 10 s grace.
    wait_until(
        lambda: all(
            read_status(project, f"{PARENT}-{t}").state == "stopping" for t in ("T1", "T2")
        ),
        what="children stopping",
    )
    time.sleep(SAME_REQUEST_WINDOW + 0.1)  # a second request, not the first delivered twice
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 3.0
    assert proc.returncode == 137, out + err
    parent, children = _records(project)
    assert (parent.state, parent.reason_code) == ("force_killed", "second_interrupt")
    assert len(children) == 2
    for child in children.values():
        assert child.state == "force_killed"
        assert child.parent_run_id == PARENT
    assert {c.state for c in parent.children} == {"force_killed"}
    assert all(t["status"] == "open" for t in read_tasks(project).values())
    _assert_no_survivors(pid_dir, token)


@exit_path("force_kill", "supervising", "runner_died")
def test_children_of_a_killed_parent_stop_in_order(
    tmp_path: Path, agent: Path, pid_dir: Path
) -> None:
    """SIGKILL of the parent itself: its children get SIGTERM from the kernel and stop in
    order; the next cub command records the parent through recovery."""
    project, proc, token = _start_sleepers(tmp_path, agent, pid_dir, 2)
    wait_until(
        lambda: all(
            read_status(project, f"{PARENT}-{t}").state == "executing" for t in ("T1", "T2")
        ),
        what="children executing",
    )
    proc.kill()
    proc.communicate(timeout=10)
    wait_until(lambda: len(all_runs(project)) == 2, timeout=20, what="the children's own records")
    for child in all_runs(project):
        assert (child.state, child.reason_code, child.exit_code) == ("interrupted", "sigterm", 143)
    _assert_no_survivors(pid_dir, token)
    run_cub(["runs", "list"], project)
    assert_ending(
        project,
        proc.returncode,
        "force_kill",
        "supervising",
        "runner_died",
        recorded_by="recovery",
        run_id=PARENT,
    )
    parent, _ = _records(project)
    assert (parent.state, parent.reason_code, parent.recorded_by) == (
        "force_killed",
        "runner_died",
        "recovery",
    )


@exit_path("exhaust_budget", "supervising", "token_budget")
def test_the_token_budget_is_shared_by_the_children(
    tmp_path: Path, agent: Path, pid_dir: Path
) -> None:
    project = make_project(tmp_path / "p", _tasks("T1", "T2", "T3"))
    token = uuid.uuid4().hex
    env = _env(pid_dir, token, AGENT_SLEEP="30", AGENT_USAGE="1")
    result = run_cub([*_args(agent, 2), "--budget-tokens", "150"], project, env=env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert_ending(
        project, result.returncode, "exhaust_budget", "supervising", "token_budget", run_id=PARENT
    )
    parent, children = _records(project)
    assert (parent.state, parent.reason_code) == ("budget_exhausted", "token_budget")
    assert [h.trigger for h in parent.history][-1] == "exhaust_budget"
    # Each child stayed under 150 on its own; together they crossed it.
    assert parent.budget.tokens_used == 200 and parent.budget.tokens_limit == 150
    assert len(children) == 2
    assert {c.state for c in children.values()} == {"interrupted"}
    assert not (pid_dir / "T3.pid").exists()
    _assert_no_survivors(pid_dir, token)


def test_four_children_run_at_once_and_never_more(
    tmp_path: Path, agent: Path, pid_dir: Path
) -> None:
    """Eight tasks whose agent sleeps 1 s, four at a time: the children's recorded run
    intervals overlap, never more than four deep. (How much faster that is lives in
    tools/bench/bench_parallel.py: wall time is the machine's, not the behaviour's.)"""
    ids = [f"T{i}" for i in range(1, 9)]
    project = make_project(tmp_path / "p", _tasks(*ids))
    result = run_cub(_args(agent, 4), project, env=_env(pid_dir, AGENT_SLEEP="1"))
    assert result.returncode == 0, result.stdout + result.stderr
    parent, children = _records(project)
    assert parent.state == "completed" and len(parent.children) == 8
    spans = sorted(
        (datetime.fromisoformat(c.started_at), datetime.fromisoformat(c.ended_at or ""))
        for c in children.values()
    )
    deepest = max(sum(1 for s, e in spans if s <= at < e) for at, _ in spans)
    assert 2 <= deepest <= 4, spans
    assert {f"{i}.txt" for i in ids} <= _on_branch(project, parent.branch or "")


@pytest.mark.parametrize("kind", ["jsonl", "prd", "beads"])
def test_a_closed_task_whose_branch_did_not_merge_becomes_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    from cub.modes.parallel.merge import fail_merged_task
    from cub.tasks.beads import BeadsBackend
    from cub.tasks.jsonl import JsonlBackend
    from cub.tasks.prd import PrdBackend
    from tests.tasks.conftest import FAKE_BD, seed_beads

    closed = _tasks("T1", status="closed", close_reason="done", closed_at="2025-01-01")
    backend: JsonlBackend | PrdBackend | BeadsBackend
    if kind == "jsonl":
        path = tmp_path / ".cub" / "tasks.jsonl"
        path.parent.mkdir()
        path.write_text(json.dumps(closed[0]) + "\n")
        backend = JsonlBackend(path, tmp_path)
    elif kind == "prd":
        path = tmp_path / "prd.json"
        path.write_text(json.dumps({"tasks": closed}))
        backend = PrdBackend(path, tmp_path)
    else:
        (tmp_path / "bin").mkdir()
        write_script(tmp_path / "bin" / "bd", FAKE_BD)
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
        seed_beads(tmp_path, closed)
        backend = BeadsBackend(tmp_path)
    assert fail_merged_task(backend, "T1", "merge_conflict: conflicts in a.txt")
    task = backend.get("T1")
    assert task.status == "failed"
    assert "merge_conflict: conflicts in a.txt" in (task.notes or "")
    if kind != "beads":
        assert task.close_reason is None and task.closed_at is None
