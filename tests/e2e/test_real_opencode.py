"""The real OpenCode (opencode-ai 1.18.33) driven by `cub run -H opencode`, against a scripted
OpenAI Chat Completions server on 127.0.0.1 (tests/helpers/model_servers/openai_chat.py).

OpenCode takes its working directory from ``PWD`` rather than from the directory it was
started in, so every test here sets ``PWD`` to what a shell would (the checkout cub is started
from): cub must hand the agent its own work directory, worktree or not.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.agents import TEST_TOKEN_VAR, processes_with_token, wait_for_file
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
from tests.helpers.model_servers.base import CliRig, script_marker
from tests.helpers.model_servers.openai_chat import create_database, opencode_rig

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[CliRig]:
    with opencode_rig(tmp_path) as rig:
        yield rig


def merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def project_for(
    rig: CliRig, path: Path, tasks: list[dict[str, Any]], config: Mapping[str, Any] | None = None
) -> Path:
    return make_project(path, tasks, merged(rig.config, config or {}))


def env_for(rig: CliRig, project: Path, **extra: str) -> dict[str, str]:
    """The rig's environment, and PWD as a shell started in ``project`` would set it."""
    return {**rig.env, "PWD": str(project), **extra}


def scripted(task_id: str, **script: Any) -> dict[str, Any]:
    return task(task_id, description=f"Do the work.\n\n{script_marker(**script)}")


def head(repo: Path, ref: str = "HEAD") -> str:
    return git(repo, "rev-parse", ref).strip()


def files_at(repo: Path, ref: str) -> set[str]:
    return set(git(repo, "ls-tree", "-r", "--name-only", ref).split())


def checkout_state(repo: Path) -> tuple[str, str, str]:
    """What must not change in the user's checkout: HEAD's branch, the index, the files."""
    branch = git(repo, "symbolic-ref", "--short", "HEAD").strip()
    index = git(repo, "ls-files", "--stage")
    status = git(repo, "status", "--porcelain", "--untracked-files=all", "--", ".", ":!.cub")
    return branch, index, status


def assert_usage_matches_ledger(rig: CliRig, usage: Any) -> None:
    want = rig.server.usage_total(rig.counted_kinds)
    got = (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens)
    assert got == (want.input, want.output, want.cache_read), (got, rig.server.ledger)
    assert usage.cache_creation_tokens == want.cache_write == 0
    assert not usage.estimated


# ------------------------------------------------------------------------- a task, its usage


@pytest.mark.timeout(40)
def test_opencode_writes_commits_and_reports_the_ledgers_usage(rig: CliRig, tmp_path: Path) -> None:
    usage = [[1000, 50, 200, 0], [1100, 60, 300, 0], [1300, 70, 400, 0]]
    project = project_for(
        rig,
        tmp_path / "proj",
        [scripted("t1", write=["notes.txt", "hello\n"], commit="add notes", usage=usage)],
    )
    before = head(project)

    result = run_cub(["run", "-H", "opencode", "--main-ok"], project, env=env_for(rig, project))

    assert result.returncode == 0, result.stderr
    run = read_run(project)
    assert run.state == "completed"
    assert read_tasks(project)["t1"]["status"] == "closed"
    branch = run.branch or ""
    assert git(project, "log", "-1", "--format=%s", branch).strip() == "add notes"
    assert git(project, "rev-parse", f"{branch}~1").strip() == before
    assert git(project, "show", f"{branch}:notes.txt") == "hello"
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "succeeded"
    # Three steps reported (write, commit, final); the title request is not in OpenCode's
    # output and must not be in cub's count either.
    kinds = [e.kind for e in rig.server.ledger]
    assert sorted(kinds) == ["final", "title", "tool", "tool"], kinds
    assert_usage_matches_ledger(rig, attempt.usage)
    assert (attempt.usage.input_tokens, attempt.usage.output_tokens) == (3400, 180)
    assert run.budget.tokens_used == attempt.usage.total_tokens


@pytest.mark.timeout(30)
def test_a_401_fails_the_task_fast_with_the_apis_message(rig: CliRig, tmp_path: Path) -> None:
    project = project_for(rig, tmp_path / "proj", [scripted("t1", fail=401)])

    started = time.monotonic()
    result = run_cub(["run", "-H", "opencode", "--main-ok"], project, env=env_for(rig, project))
    took = time.monotonic() - started

    assert result.returncode == 1, result.stderr
    assert read_run(project).state == "failed"
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "failed"
    assert attempt.error is not None
    assert "Incorrect API key provided" in attempt.error.message, attempt.error
    assert took < 20, f"a 401 took {took:.1f}s to fail"
    assert read_tasks(project)["t1"]["status"] != "closed"


@pytest.mark.timeout(40)
@pytest.mark.parametrize(
    ("script", "message"),
    [
        ({"fail": 500}, "APIError: The scripted server failed (500)."),
        ({"malformed": True}, "UnknownError: JSON parsing failed"),
    ],
    ids=["server-error", "broken-stream"],
)
def test_a_failing_provider_fails_the_task_with_opencodes_message(
    rig: CliRig, tmp_path: Path, script: dict[str, Any], message: str
) -> None:
    """A 500 (OpenCode retries it, at once as the answer asks) or a stream that breaks off
    with invalid JSON: the task fails with what OpenCode said, nothing is committed."""
    project = project_for(rig, tmp_path / "proj", [scripted("t1", **script)])
    before = head(project)

    result = run_cub(["run", "-H", "opencode", "--main-ok"], project, env=env_for(rig, project))

    assert result.returncode == 1, result.stderr
    assert read_run(project).state == "failed"
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "failed"
    assert attempt.error is not None and attempt.error.message.startswith(message), attempt.error
    assert head(project) == before
    assert read_tasks(project)["t1"]["status"] != "closed"


# ------------------------------------------------------------------------- defect 1: PWD


@pytest.mark.timeout(45)
def test_worktree_commit_lands_on_the_run_branch_not_the_checkout(
    rig: CliRig, tmp_path: Path
) -> None:
    """Defect 1: OpenCode works in $PWD; cub passed the caller's PWD through, so under
    --worktree the commit landed on the checkout's branch while the run said `completed`."""
    project = project_for(
        rig, tmp_path / "proj", [scripted("t1", write=["notes.txt", "hi\n"], commit="add notes")]
    )
    main_before = head(project, "main")
    checkout_before = checkout_state(project)

    result = run_cub(["run", "--worktree", "-H", "opencode"], project, env=env_for(rig, project))

    assert result.returncode == 0, result.stderr
    run = read_run(project)
    assert run.state == "completed"
    assert run.branch and run.branch.startswith("cub/"), run.branch
    assert head(project, "main") == main_before, "the commit landed on main"
    assert checkout_state(project) == checkout_before, "the user's checkout was touched"
    assert not (project / "notes.txt").exists()
    assert git(project, "log", "-1", "--format=%s", run.branch).strip() == "add notes"
    assert "notes.txt" in files_at(project, run.branch)
    assert head(project, f"{run.branch}~1") == main_before


@pytest.mark.timeout(60)
def test_parallel_worktree_commits_land_only_on_run_branches(rig: CliRig, tmp_path: Path) -> None:
    """Defect 1 with --parallel 2: each child's commit on its own branch, merged into the run
    branch; nothing in the main checkout."""
    project = project_for(
        rig,
        tmp_path / "proj",
        [
            scripted("t1", write=["one.txt", "1\n"], commit="add one"),
            scripted("t2", write=["two.txt", "2\n"], commit="add two"),
        ],
    )
    create_database(rig, project)  # a first use's race is not what this test is about
    main_before = head(project, "main")
    checkout_before = checkout_state(project)

    # Two OpenCode agents starting at once on one database now and then fail at start
    # ("database is locked", no request made): as the README says, retry.
    result = run_cub(
        ["run", "--worktree", "--parallel", "2", "-H", "opencode", "--on-failure", "retry"],
        project,
        env=env_for(rig, project),
    )

    assert result.returncode == 0, result.stderr + result.stdout
    run = read_run(project)
    assert run.state == "completed"
    assert head(project, "main") == main_before, "a commit landed on main"
    assert checkout_state(project) == checkout_before, "the user's checkout was touched"
    assert not (project / "one.txt").exists() and not (project / "two.txt").exists()
    assert run.branch and run.branch.startswith("cub/"), run.branch
    assert {"one.txt", "two.txt"} <= files_at(project, run.branch)
    subjects = git(project, "log", "--format=%s", f"main..{run.branch}").split("\n")
    assert {"add one", "add two"} <= set(subjects)
    assert len(run.children) == 2
    for child in run.children:
        branch = read_run(project, child.run_id).branch
        assert branch and branch.startswith("cub/"), branch
        # Merged into the run branch, then deleted: no branch per task is left behind.
        assert f"cub: merge {child.task_id} from run {child.run_id}" in subjects
        assert git(project, "branch", "--list", branch) == ""


# ------------------------------------------------------------------------- defect 8: stopping


def agent_signals(project: Path) -> list[dict[str, Any]]:
    return [e.data for e in read_events(project) if e.kind == "agent_signalled"]


@pytest.mark.timeout(45)
def test_ctrl_c_stops_opencode_mid_tool_with_sigterm(rig: CliRig, tmp_path: Path) -> None:
    """Defect 8: OpenCode ignores SIGINT now and then; cub must stop it with SIGTERM, journal
    that, and leave nothing of the agent's tree running."""
    ready = tmp_path / "tool-started"
    project = project_for(
        rig,
        tmp_path / "proj",
        [scripted("t1", shell=f"touch {ready} && sleep 120", final="never")],
        {"loop": {"grace": 5}},
    )
    token = uuid.uuid4().hex
    proc = start_cub(
        ["run", "-H", "opencode", "--main-ok"],
        project,
        env=env_for(rig, project, **{TEST_TOKEN_VAR: token}),
    )
    try:
        wait_for_file(ready, timeout=30)
        assert processes_with_token(token), "the agent's processes carry no test token"
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=25)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for left in processes_with_token(token):
            left.kill()

    assert proc.returncode == 130, err
    run = read_run(project)
    assert run.state == "interrupted"
    assert "Traceback" not in err + out
    signalled = agent_signals(project)
    assert signalled, [e.kind for e in read_events(project)]
    assert signalled[0]["signal"] == "SIGTERM", signalled
    assert isinstance(signalled[0].get("pid"), int)
    assert took < 5, f"cub took {took:.1f}s to stop OpenCode"
    left = processes_with_token(token)
    assert not left, [p.cmdline() for p in left]
    assert read_tasks(project)["t1"]["status"] != "closed"


def test_the_rig_keeps_opencode_away_from_the_callers_directory(rig: CliRig) -> None:
    """The rig's PWD is an empty trap directory, never the directory pytest runs in."""
    trap = Path(rig.env["PWD"])
    assert trap.is_dir() and not any(trap.iterdir())
    assert Path.cwd() not in (trap, *trap.parents)
    config = json.loads(Path(rig.env["OPENCODE_CONFIG"]).read_text())
    base_url = config["provider"]["scripted"]["options"]["baseURL"]
    assert base_url == f"{rig.server.url}/v1"
