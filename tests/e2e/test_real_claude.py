"""The real Claude Code CLI under the real `cub run -H claude`, against the scripted Anthropic
Messages API on 127.0.0.1 (tests/helpers/model_servers/anthropic.py).

What only Claude does: it falls back to a non-streaming request after a broken stream (and
then prints zero totals in its final result), it names its model with a context-window tag
(``claude-opus-4-8[1m]``), and it words API errors its own way.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from cub.records.schemas import TaskAttempt, Usage
from tests.helpers.agents import TEST_TOKEN_VAR, processes_with_token, wait_for_file
from tests.helpers.cli import (
    make_project,
    read_attempt,
    read_run,
    read_tasks,
    run_cub,
    run_dir,
    start_cub,
    task,
)
from tests.helpers.git import git
from tests.helpers.model_servers.anthropic import claude_rig
from tests.helpers.model_servers.base import (
    CliRig,
    TurnUsage,
    agent_program,
    path_with,
    script_marker,
)

pytestmark = pytest.mark.timeout(60)

USAGE = [[1000, 50, 200, 30], [1100, 60, 210, 0], [1300, 70, 500, 5]]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[CliRig]:
    with claude_rig(tmp_path) as rig:
        yield rig


def project_with(rig: CliRig, root: Path, **script: Any) -> Path:
    description = f"Follow the script.\n\n{script_marker(**script)}\n"
    return make_project(
        root / "p", [task("t1", "scripted task", description=description)], rig.config
    )


def cub_run(
    rig: CliRig, project: Path, *args: str, timeout: float = 40
) -> subprocess.CompletedProcess[str]:
    return run_cub(["run", "-H", "claude", "--once", *args], project, env=rig.env, timeout=timeout)


def expect(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr


def tokens(usage: Usage) -> TurnUsage:
    return TurnUsage(
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_creation_tokens,
    )


def models_seen(rig: CliRig) -> set[str]:
    return {str(r.body.get("model")) for r in rig.server.model_calls() if isinstance(r.body, dict)}


def assert_committed(project: Path, message: str, path: str, content: str) -> None:
    """Committed on the run's branch (the run worked in a worktree of its own)."""
    branch = read_run(project).branch or ""
    assert git(project, "show", f"{branch}:{path}") == content.rstrip("\n")
    assert git(project, "log", "-1", "--format=%s", branch).strip() == message


# ------------------------------------------------------------------------------ tests


def test_a_scripted_task_completes_with_the_servers_usage_and_model(
    rig: CliRig, tmp_path: Path
) -> None:
    project = project_with(
        rig,
        tmp_path,
        write=["notes.txt", "hello\n"],
        commit="add notes",
        final="All done.",
        usage=USAGE,
    )

    expect(cub_run(rig, project), 0)

    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "succeeded", attempt.error
    assert_committed(project, "add notes", "notes.txt", "hello\n")
    assert read_tasks(project)["t1"]["status"] == "closed"
    # Three model calls (write, commit, final), all streamed; the usage is the server's.
    calls = rig.server.model_calls()
    assert [c.body.get("stream") for c in calls] == [True, True, True]
    assert [e.kind for e in rig.server.ledger] == ["tool", "tool", "final"]
    assert tokens(attempt.usage) == rig.server.usage_total(rig.counted_kinds)
    assert attempt.usage.cost_usd is not None and attempt.usage.cost_usd > 0  # Claude's price


def test_after_a_broken_stream_the_usage_is_the_servers_not_zero(
    rig: CliRig, tmp_path: Path
) -> None:
    """Defect 3: every stream breaks off, Claude asks again without streaming and its result's
    totals are 0; cub must keep the true usage (the running sum / modelUsage)."""
    project = project_with(
        rig,
        tmp_path,
        write=["notes.txt", "hello\n"],
        commit="add notes",
        final="All done.",
        malformed=True,
        usage=USAGE,
    )

    expect(cub_run(rig, project), 0)

    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "succeeded", attempt.error
    assert_committed(project, "add notes", "notes.txt", "hello\n")
    # Each turn: a stream that broke, then the same question without streaming.
    assert [c.body.get("stream") for c in rig.server.model_calls()] == [True, None] * 3
    expected = rig.server.usage_total(rig.counted_kinds)
    assert expected == TurnUsage(3400, 180, 910, 35)
    assert tokens(attempt.usage) == expected
    assert attempt.usage.cost_usd is not None and attempt.usage.cost_usd > 0
    run = read_run(project)
    assert run.budget.tokens_used == expected.total


def test_the_recorded_model_is_the_one_the_api_was_asked_for(rig: CliRig, tmp_path: Path) -> None:
    """Defect 9: with no model configured, Claude picks its default; the records name the
    model the API saw (not Claude's "[1m]"-tagged name, not nothing)."""
    project = project_with(rig, tmp_path, final="Nothing to do.")

    expect(cub_run(rig, project), 0)

    seen = models_seen(rig)
    assert len(seen) == 1
    (model,) = seen
    assert read_attempt(project, "t1").model == model
    run = read_run(project)
    assert run.harness is not None
    assert run.harness.model == model


def test_a_model_alias_is_recorded_as_the_model_it_resolved_to(rig: CliRig, tmp_path: Path) -> None:
    """`-m sonnet` is Claude's alias; the API is asked for a full model id, and that id is what
    the task's record names."""
    project = project_with(rig, tmp_path, final="Nothing to do.")

    expect(cub_run(rig, project, "--model", "sonnet"), 0)

    (model,) = models_seen(rig)
    assert model.startswith("claude-sonnet-"), model
    assert read_attempt(project, "t1").model == model


def test_the_run_record_names_the_resolved_model_not_the_alias(rig: CliRig, tmp_path: Path) -> None:
    """run.json's harness.model is the model the API saw, as task.json's is (not "sonnet")."""
    project = project_with(rig, tmp_path, final="Nothing to do.")

    expect(cub_run(rig, project, "--model", "sonnet"), 0)

    (model,) = models_seen(rig)
    run = read_run(project)
    assert run.harness is not None
    assert run.harness.model == model


@pytest.mark.parametrize(
    ("status", "words"),
    [
        # Claude words a 401 its own way; the API's "invalid x-api-key" is not shown.
        (401, ["Invalid API key", "authentication_failed"]),
        (500, ["API Error: 500", "Internal server error"]),
    ],
)
def test_an_api_error_fails_the_task_at_once(
    rig: CliRig, tmp_path: Path, status: int, words: list[str]
) -> None:
    project = project_with(rig, tmp_path, write=["notes.txt", "x"], fail=status)

    started = time.monotonic()
    result = cub_run(rig, project)
    elapsed = time.monotonic() - started

    expect(result, 1)
    assert elapsed < 15, f"took {elapsed:.1f}s: are Claude's API retries turned off?"
    assert len(rig.server.model_calls()) == 1  # no retries
    run = read_run(project)
    assert (run.state, run.reason_code) == ("failed", "task_failed")
    attempt: TaskAttempt = read_attempt(project, "t1")
    assert attempt.outcome == "failed"
    assert attempt.error is not None
    for word in words:
        assert word in attempt.error.message, attempt.error.message
    assert tokens(attempt.usage) == TurnUsage(0, 0)
    assert not (project / "notes.txt").exists()
    assert read_tasks(project)["t1"]["status"] != "closed"
    log = (run_dir(project) / "tasks" / "t1" / "harness.log").read_text()
    assert words[0] in log


def test_only_the_scripted_server_is_asked(rig: CliRig, tmp_path: Path) -> None:
    """Claude's own traffic (its HEAD probe, the model calls) all reached the scripted server,
    with the dummy key; nothing it needs went elsewhere (run this under `unshare --net` to be
    sure nothing else was tried)."""
    project = project_with(rig, tmp_path, final="Nothing to do.")

    expect(cub_run(rig, project), 0)

    requests = rig.server.requests
    assert [(r.method, r.path) for r in requests] == [
        ("HEAD", "/"),
        ("POST", "/v1/messages?beta=true"),
    ]
    assert all(r.headers.get("x-api-key") == "dummy" for r in requests[1:])
    config_dir = Path(rig.env["CLAUDE_CONFIG_DIR"])
    assert config_dir.is_relative_to(tmp_path) and any(config_dir.iterdir())


class Signalled(NamedTuple):
    project: Path
    returncode: int
    stdout: str
    stderr: str
    latency: float  # seconds from the signal to cub's exit
    left: list[list[str]]  # command lines of the agent's processes still alive afterwards


def signal_while_its_tool_sleeps(rig: CliRig, tmp_path: Path, sig: int) -> Signalled:
    """`cub run -H claude` with Claude's Bash tool in `sleep 60`; ``sig`` to cub; wait."""
    ready = tmp_path / "ready"
    project = project_with(rig, tmp_path, shell=f"touch {ready} && sleep 60", usage=USAGE)
    token = uuid.uuid4().hex
    cub = start_cub(
        ["run", "-H", "claude", "--once"], project, env={**rig.env, TEST_TOKEN_VAR: token}
    )
    try:
        wait_for_file(ready, timeout=20)
        time.sleep(0.2)
        sent = time.monotonic()
        cub.send_signal(sig)
        stdout, stderr = cub.communicate(timeout=20)
        latency = time.monotonic() - sent
    finally:
        if cub.poll() is None:
            cub.kill()
            cub.communicate()
        left = processes_with_token(token)
        for proc in left:
            proc.kill()
    return Signalled(project, cub.returncode, stdout, stderr, latency, [p.cmdline() for p in left])


def test_ctrl_c_while_its_bash_tool_sleeps_keeps_the_usage(rig: CliRig, tmp_path: Path) -> None:
    """SIGINT to cub while Claude's Bash tool runs `sleep 60`: the run is interrupted within
    seconds, nothing of Claude's is left, and the usage Claude reports on its way out (its
    final result, printed only if its tool did not die of the same signal first) is recorded."""
    project, code, stdout, stderr, latency, left = signal_while_its_tool_sleeps(
        rig, tmp_path, signal.SIGINT
    )

    assert code == 130, (stdout, stderr)
    assert "Traceback" not in stderr, stderr
    assert latency < 10
    assert not left, left
    run = read_run(project)
    assert (run.state, run.reason_code) == ("interrupted", "sigint")
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "interrupted"
    assert [e.kind for e in rig.server.ledger] == ["tool"]
    assert tokens(attempt.usage) == rig.server.usage_total(rig.counted_kinds)
    assert attempt.usage.cost_usd is not None and attempt.usage.cost_usd > 0
    assert read_tasks(project)["t1"]["status"] == "open"


def test_sigterm_while_its_bash_tool_sleeps_leaves_nothing_behind(
    rig: CliRig, tmp_path: Path
) -> None:
    """SIGTERM kills Claude at once (exit 143, no final result) and leaves its Bash tool's
    `sleep 60` running in a process group of its own: cub must still end that too."""
    project, code, stdout, stderr, latency, left = signal_while_its_tool_sleeps(
        rig, tmp_path, signal.SIGTERM
    )

    assert code == 143, (stdout, stderr)
    assert "Traceback" not in stderr, stderr
    assert not left, left
    # Claude is gone within ~0.05 s; its orphaned tool must not cost the whole 10 s grace (a
    # service manager's SIGTERM usually comes with a SIGKILL deadline of about that much).
    assert latency < 5
    run = read_run(project)
    assert (run.state, run.reason_code) == ("interrupted", "sigterm")
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "interrupted"
    # No final result: only the streamed input and cache counts are known, never more.
    known = rig.server.usage_total(rig.counted_kinds)
    assert attempt.usage.input_tokens == known.input
    assert attempt.usage.output_tokens <= known.output


def test_without_any_credential_claude_fails_not_logged_in(tmp_path: Path) -> None:
    """No key, no server, no login (HOME is a fresh directory): Claude Code's own refusal is
    the attempt's failure, in its words."""
    program_dir = tmp_path / "bin"
    program_dir.mkdir()
    (program_dir / "claude").symlink_to(agent_program("claude"))
    # pass_env: the agent gets PATH, HOME, LANG, TERM and IS_SANDBOX only, so no credential in
    # the caller's environment can reach it.
    config = {"harness": {"env": {"IS_SANDBOX": "1"}, "pass_env": ["IS_SANDBOX"]}}
    project = make_project(tmp_path / "p", [task("t1")], config=config)

    result = run_cub(
        ["run", "-H", "claude", "--task-timeout", "40s"],
        project,
        env={"PATH": path_with(program_dir), "DISABLE_AUTOUPDATER": "1"},
    )

    assert result.returncode == 1, result.stdout + result.stderr
    run = read_run(project)
    assert run.state == "failed"
    assert run.harness is not None and run.harness.version
    attempt = read_attempt(project, "t1")
    log = (run_dir(project) / "tasks" / "t1" / "harness.log").read_text()
    assert attempt.error is not None and "Not logged in" in attempt.error.message, log
    assert "Not logged in" in log
