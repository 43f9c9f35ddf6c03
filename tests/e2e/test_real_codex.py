"""The real `cub` driving the real `codex` 0.171 against a scripted Responses API on 127.0.0.1.

Codex writes the file with its own ``apply_patch`` tool, commits with ``exec_command``, and
reports usage once, in ``turn.completed``. These tests pin what cub makes of that: the exact
figure at the end, an estimate (flagged) while none is known, and codex's failures.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from cub.records.schemas import TaskAttempt
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
from tests.helpers.model_servers.base import CliRig, script_marker
from tests.helpers.model_servers.openai_responses import codex_rig

pytestmark = pytest.mark.timeout(30)

USAGE = [[100, 10, 20, 5], [200, 20, 40, 0], [300, 30, 60, 0], [400, 40, 80, 0]]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[CliRig]:
    with codex_rig(tmp_path) as rig:
        yield rig


def project_with(tmp_path: Path, rig: CliRig, **script: Any) -> Path:
    description = "Follow the script.\n" + script_marker(**script)
    return make_project(
        tmp_path / "p", [task("t1", "codex task", description=description)], config=rig.config
    )


def cub_run(project: Path, rig: CliRig, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cub(["run", "-H", "codex", *args], project, env=rig.env, timeout=25)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def git(project: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=project, capture_output=True, text=True, check=True
    ).stdout


def calls_of(rig: CliRig) -> int:
    return len(rig.server.model_calls())


def tool_outputs(rig: CliRig) -> list[str]:
    """The tool output item types codex sent back, in the last request."""
    body = rig.server.model_calls()[-1].body
    return [i["type"] for i in body["input"] if i.get("type", "").endswith("_output")]


def test_usage_recorded_is_exactly_the_ledger(tmp_path: Path, rig: CliRig) -> None:
    project = project_with(
        tmp_path,
        rig,
        write=["notes.txt", "hello\nworld\n"],
        commit="add notes",
        shell="echo extra",
        final="All done.",
        usage=USAGE,
    )

    result = cub_run(project, rig)

    assert result.returncode == 0, (result.stdout, result.stderr)
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "succeeded"
    expected = rig.server.usage_total(rig.counted_kinds)
    assert [e.kind for e in rig.server.ledger] == ["tool", "tool", "tool", "final"]
    usage = attempt.usage
    assert usage.estimated is False
    assert (
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_creation_tokens,
    ) == (expected.input, expected.output, expected.cache_read, expected.cache_write)
    assert usage.cost_usd is None  # codex reports no cost and no price table was given
    assert read_run(project).budget.tokens_used == expected.total == 1305
    # codex used its own tools: apply_patch (freeform) wrote the file, exec_command committed
    assert tool_outputs(rig) == [
        "custom_tool_call_output",
        "function_call_output",
        "function_call_output",
    ]
    branch = read_run(project).branch or ""
    assert git(project, "show", f"{branch}:notes.txt").strip() == "hello\nworld"
    assert "add notes" in git(project, "log", "--format=%s", branch)
    assert read_tasks(project)["t1"]["status"] == "closed"
    # cub's prompt reached the model on stdin
    first = rig.server.model_calls()[0].body
    assert "Task t1: codex task" in str(first["input"])


def test_401_fails_the_task_fast_with_the_apis_message(tmp_path: Path, rig: CliRig) -> None:
    project = project_with(tmp_path, rig, fail=401)

    started = time.monotonic()
    result = cub_run(project, rig)
    elapsed = time.monotonic() - started

    assert result.returncode != 0
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "failed"
    assert attempt.error is not None
    assert "401 Unauthorized: Incorrect API key provided" in attempt.error.message
    assert calls_of(rig) == 1  # retries are off: one request, no reconnecting
    assert elapsed < 15
    # no figure ever came: what is recorded is an estimate and says so
    assert attempt.usage.estimated is True
    assert rig.server.ledger == []


def test_500_fails_once_and_codex_replaces_the_apis_message(tmp_path: Path, rig: CliRig) -> None:
    project = project_with(tmp_path, rig, fail=500)

    result = cub_run(project, rig)

    assert result.returncode != 0
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "failed"
    assert attempt.error is not None
    # codex 0.171 reports any 5xx with its own text, not the API's body
    assert "high demand" in attempt.error.message
    assert calls_of(rig) == 1


def test_broken_stream_reconnects_then_fails_with_the_real_cause(
    tmp_path: Path, rig: CliRig
) -> None:
    description = "Follow the script.\n" + script_marker(malformed=True)
    retries = ["-c", "model_providers.scripted.stream_max_retries=2"]
    config = {"harness": {"extra_args": {"codex": retries}}}
    project = make_project(tmp_path / "p", [task("t1", description=description)], config=config)

    cub_run(project, rig)

    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "failed"
    assert attempt.error is not None
    # the "Reconnecting... n/2" errors are not the failure; the disconnect is
    assert attempt.error.message.startswith("stream disconnected before completion")
    log = (run_dir(project) / "tasks" / "t1" / "harness.log").read_text()
    assert "Reconnecting... 1/2" in log and "Reconnecting... 2/2" in log
    assert calls_of(rig) == 3


def test_a_token_budget_stops_codex_mid_task_on_the_estimate(tmp_path: Path, rig: CliRig) -> None:
    ready = tmp_path / "ready"
    project = project_with(
        tmp_path, rig, commit="work", shell=f"touch {ready} && sleep 20", final="late"
    )

    started = time.monotonic()
    result = cub_run(project, rig, "--budget-tokens", "50")
    elapsed = time.monotonic() - started

    run = read_run(project)
    assert (run.state, run.reason_code) == ("budget_exhausted", "token_budget"), result.stderr
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "interrupted"
    # codex never printed a figure: the record is the estimate, flagged, never zero
    assert attempt.usage.estimated is True
    assert attempt.usage.total_tokens >= 50
    assert run.budget.tokens_used == attempt.usage.total_tokens
    assert elapsed < 15  # it did not wait for `sleep 20`
    assert running_with(str(ready)) == []
    assert "final" not in [e.kind for e in rig.server.ledger]


def _wait_for(path: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_sigint_while_codex_runs_a_command_keeps_an_estimate(tmp_path: Path, rig: CliRig) -> None:
    ready = tmp_path / "ready"
    project = project_with(
        tmp_path, rig, commit="work", shell=f"touch {ready} && sleep 20", usage=USAGE
    )
    proc = start_cub(["run", "-H", "codex"], project, env=rig.env)
    try:
        _wait_for(ready)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in stderr, stderr

    assert read_run(project).state == "interrupted"
    attempt: TaskAttempt = read_attempt(project, "t1")
    assert attempt.outcome == "interrupted"
    # codex exits at once on SIGINT without turn.completed: the two calls it made are lost
    # to it, so cub keeps its estimate, flagged as one
    assert [e.kind for e in rig.server.ledger] == ["tool", "tool"]
    assert attempt.usage.estimated is True
    assert attempt.usage.total_tokens > 0
    assert running_with(str(ready)) == []  # codex's command went with it


def running_with(text: str) -> list[psutil.Process]:
    """Live processes whose command line mentions ``text``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if text in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found
