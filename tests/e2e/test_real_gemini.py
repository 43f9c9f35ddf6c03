"""The real Gemini CLI (0.61), driven by `cub run -H gemini`, against a scripted Gemini API.

The model server lives in this process on 127.0.0.1 (tests/helpers/model_servers/gemini.py);
the CLI's home, settings and temporary files are under the test's directory. What is checked:
the usage cub records is what the API reported (the routing check included: Gemini CLI counts
it in its stats), the cost is priced per model the API named (not under "auto"), API errors fail
the attempt fast with the API's message, and a token budget stops Gemini mid-task on cub's
estimate (the CLI reports no usage before its final result).
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from cub.agents.gemini import CLI_CALL_CHARS
from tests.helpers.agents import TEST_TOKEN_VAR, processes_with_token, wait_for_file, wait_until
from tests.helpers.cli import (
    make_project,
    read_attempt,
    read_run,
    run_cub,
    run_dir,
    start_cub,
    task,
)
from tests.helpers.git import git
from tests.helpers.model_servers.base import CliRig, TurnUsage, script_marker
from tests.helpers.model_servers.gemini import gemini_rig

pytestmark = pytest.mark.timeout(40)

# Usage per turn, without cache writes (Gemini's usage has none).
USAGE = [[2100, 120, 400, 0], [2600, 90, 1800, 0], [3100, 60, 2300, 0], [3500, 40, 2900, 0]]
ROUTER = "gemini-3.5-flash-lite"  # the models Gemini CLI 0.61 picks under "auto"
WORKER = "gemini-3.1-pro-preview-customtools"
PRICES = {
    ROUTER: {"input_per_mtok": 0.1, "output_per_mtok": 0.4, "cache_read_per_mtok": 0.025},
    WORKER: {"input_per_mtok": 2.0, "output_per_mtok": 12.0, "cache_read_per_mtok": 0.2},
}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[CliRig]:
    with gemini_rig(tmp_path) as rig:
        yield rig


def project_with(tmp_path: Path, rig: CliRig, script: Mapping[str, Any], **config: Any) -> Path:
    marker = script_marker(**script)
    merged = {**rig.config, **config}
    return make_project(tmp_path / "p", [task("t1", "add notes", description=marker)], merged)


def cub(project: Path, rig: CliRig, *args: str) -> Any:
    return run_cub(["run", "-H", "gemini", "--once", *args], project, env=rig.env, timeout=35)


def priced(usage: TurnUsage, price: Mapping[str, float]) -> float:
    return (
        usage.input * price["input_per_mtok"]
        + usage.output * price["output_per_mtok"]
        + usage.cache_read * price.get("cache_read_per_mtok", 0.0)
    ) / 1_000_000


def test_usage_recorded_is_what_the_api_reported(tmp_path: Path, rig: CliRig) -> None:
    script = {"write": ["notes.txt", "hello"], "commit": "add notes", "shell": "true"}
    project = project_with(tmp_path, rig, {**script, "final": "Done.", "usage": USAGE})

    result = cub(project, rig)

    assert result.returncode == 0, result.stderr
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "succeeded"
    branch = read_run(project).branch or ""
    assert "add notes" in git(project, "log", "--format=%s", branch)
    assert git(project, "show", f"{branch}:notes.txt") == "hello"
    # The routing check is a model call of its own, and Gemini CLI counts it in its stats.
    assert "routing" in rig.counted_kinds
    kinds = [entry.kind for entry in rig.server.ledger]
    assert kinds == ["routing", "tool", "tool", "tool", "final"]
    expected = rig.server.usage_total(rig.counted_kinds)
    usage = attempt.usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (
        expected.input,
        expected.output,
        expected.cache_read,
    )
    assert usage.cache_creation_tokens == 0
    assert usage.estimated is False
    assert read_run(project).budget.tokens_used == expected.total
    # The model that did the work, not "auto".
    assert attempt.model == WORKER


def test_cost_is_priced_per_model_the_api_named(tmp_path: Path, rig: CliRig) -> None:
    script = {"write": ["notes.txt", "hi"], "commit": "add notes", "usage": USAGE}
    project = project_with(tmp_path, rig, script, budget={"prices": PRICES})

    result = cub(project, rig)

    assert result.returncode == 0, result.stderr
    by_model: dict[str, float] = {}
    for entry in rig.server.ledger:
        assert entry.model is not None
        by_model[entry.model] = by_model.get(entry.model, 0.0) + priced(
            entry.usage, PRICES[entry.model]
        )
    assert set(by_model) == {ROUTER, WORKER}
    attempt = read_attempt(project, "t1")
    assert attempt.usage.cost_usd == pytest.approx(sum(by_model.values()))
    assert read_run(project).budget.cost_usd == pytest.approx(sum(by_model.values()))


def test_the_cost_is_complete_when_every_model_is_priced(tmp_path: Path, rig: CliRig) -> None:
    """Under "auto" the model is unknown until the result, so the running estimate has no cost;
    once the result priced every model the run's cost is complete. (Fails today: cub marks the
    run's cost incomplete for good at the first usage update without a cost.)"""
    project = project_with(
        tmp_path, rig, {"write": ["a", "b"], "usage": USAGE}, budget={"prices": PRICES}
    )

    result = cub(project, rig)

    assert result.returncode == 0, result.stderr
    assert read_attempt(project, "t1").usage.cost_usd is not None
    run = read_run(project)
    assert run.budget.cost_usd is not None
    assert run.budget.cost_incomplete is False


def test_a_price_for_auto_is_not_used(tmp_path: Path, rig: CliRig) -> None:
    """Only the worker is priced (and "auto", which is no model): the router's tokens have no
    price, so the cost is unknown rather than wrong."""
    prices = {"auto": PRICES[WORKER], WORKER: PRICES[WORKER]}
    project = project_with(tmp_path, rig, {"final": "Done."}, budget={"prices": prices})

    result = cub(project, rig)

    assert result.returncode == 0, result.stderr
    assert read_attempt(project, "t1").usage.cost_usd is None
    run = read_run(project)
    assert run.budget.cost_usd is None
    assert run.budget.cost_incomplete is True


def test_explicit_model_is_priced_and_skips_routing(tmp_path: Path, rig: CliRig) -> None:
    price = PRICES[WORKER]
    project = project_with(
        tmp_path,
        rig,
        {"final": "Done.", "usage": USAGE},
        budget={"prices": {"gemini-2.5-pro": price}},
    )

    result = cub(project, rig, "-m", "gemini-2.5-pro")

    assert result.returncode == 0, result.stderr
    assert [(e.kind, e.model) for e in rig.server.ledger] == [("final", "gemini-2.5-pro")]
    attempt = read_attempt(project, "t1")
    assert attempt.model == "gemini-2.5-pro"
    assert attempt.usage.cost_usd == pytest.approx(priced(rig.server.ledger[0].usage, price))


def test_401_fails_fast_with_the_api_message(tmp_path: Path, rig: CliRig) -> None:
    project = project_with(tmp_path, rig, {"fail": 401})

    started = time.monotonic()
    result = cub(project, rig)
    took = time.monotonic() - started

    assert result.returncode == 1, result.stderr
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "failed"
    assert attempt.error is not None
    assert "API key not valid. Please pass a valid API key." in attempt.error.message
    assert read_run(project).state == "failed"
    assert took < 20
    # No retries: one routing check and one chat call, each refused once.
    assert len(rig.server.model_calls()) == 2
    # Nothing was used: the result's stats are exact zeros, not an estimate.
    assert attempt.usage.total_tokens == 0
    assert attempt.usage.estimated is False


def test_500_with_a_named_model_fails_without_retries(tmp_path: Path, rig: CliRig) -> None:
    """general.maxAttempts=1 holds for a named model (under "auto" the CLI's own model policy
    retries the routing check 5 times and the chat call 3 times, ≈54 s: see the rig)."""
    project = project_with(tmp_path, rig, {"fail": 500})

    result = cub(project, rig, "-m", "gemini-2.5-pro")

    assert result.returncode == 1, result.stderr
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "failed"
    assert attempt.error is not None
    assert "An internal error has occurred." in attempt.error.message
    assert len(rig.server.model_calls()) == 1


def test_a_broken_stream_fails_the_attempt(tmp_path: Path, rig: CliRig) -> None:
    project = project_with(tmp_path, rig, {"malformed": True})

    result = cub(project, rig)

    assert result.returncode == 1, result.stderr
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "failed"
    assert attempt.error is not None
    assert "JSON" in attempt.error.message
    # What was answered (the routing check) is still counted, exactly.
    routing = rig.server.usage_total(("routing",))
    assert attempt.usage.total_tokens == routing.total
    assert attempt.usage.estimated is False


def test_a_token_budget_stops_gemini_mid_task_on_the_estimate(tmp_path: Path, rig: CliRig) -> None:
    """Gemini CLI prints no usage before its result, so cub's estimate is what a token budget
    sees: about 12,000 tokens a model call (the CLI's own system prompt and tools). A budget of
    1.5 calls ends the attempt after its first tool call, long before the script's end."""
    assert not rig.usage_mid_task
    script = {
        "write": ["notes.txt", "hi"],
        "commit": "add notes",
        "shell": "sleep 30",
        "delay": 1.0,
    }
    project = project_with(tmp_path, rig, script)
    budget = CLI_CALL_CHARS // 4 * 3 // 2 + 2_000

    result = cub(project, rig, "--budget-tokens", str(budget))

    assert result.returncode == 3, result.stderr
    run = read_run(project)
    assert run.state == "budget_exhausted"
    attempt = read_attempt(project, "t1")
    assert attempt.usage.estimated is True
    assert attempt.usage.total_tokens > budget
    assert run.budget.tokens_used == attempt.usage.total_tokens
    # Stopped before the commit turn was answered.
    assert "add notes" not in git(project, "log", "--format=%s", "--all")
    assert [e.kind for e in rig.server.ledger][-1] != "final"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_gemini_and_its_tool(tmp_path: Path, rig: CliRig, signum: int) -> None:
    ready = tmp_path / "ready"
    script = {"shell": f"touch {ready} && sleep 60", "final": "Done."}
    project = project_with(tmp_path, rig, script)
    token = uuid.uuid4().hex
    proc = start_cub(
        ["run", "-H", "gemini", "--once"], project, env={**rig.env, TEST_TOKEN_VAR: token}
    )
    try:
        wait_for_file(ready, timeout=20)
        assert processes_with_token(token), "gemini is not running"
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=25)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signum, stderr
    run = read_run(project)
    assert run.state == "interrupted"
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "interrupted"
    # Gemini CLI printed no result: its usage is cub's estimate, and says so.
    assert attempt.usage.estimated is True
    assert attempt.usage.total_tokens > 0
    wait_until(lambda: not processes_with_token(token), timeout=5, what="gemini's tree gone")


def test_gemini_keeps_its_files_in_the_test_directory(tmp_path: Path, rig: CliRig) -> None:
    project = project_with(tmp_path, rig, {"fail": 401})

    cub(project, rig)

    # Its error report goes to TMPDIR (the rig's), not to the machine's /tmp.
    tmp = Path(rig.env["TMPDIR"])
    reports = list(tmp.glob("gemini-client-error-*.json"))
    assert reports, sorted(p.name for p in tmp.iterdir())
    assert json.loads(reports[0].read_text())["error"]
    home = Path(rig.env["GEMINI_CLI_HOME"])
    assert (home / ".gemini" / "settings.json").exists()
    assert (run_dir(project) / "tasks" / "t1" / "harness.log").exists()


def test_a_stuck_signal_in_gemini_s_text_leaves_the_task_open(tmp_path: Path, rig: CliRig) -> None:
    final = "I looked around. <stuck>the task names a file that does not exist</stuck>"
    project = project_with(tmp_path, rig, {"final": final})

    cub(project, rig)

    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "stuck"
    assert attempt.stuck_reason == "the task names a file that does not exist"
    assert attempt.usage.estimated is False


def test_a_tool_result_of_megabytes_full_of_unclosed_stuck_tags(
    tmp_path: Path, rig: CliRig
) -> None:
    """Gemini prints a tool's whole output as one JSON line, which cub cuts at 1 MiB: the
    pieces are plain text, full of `<stuck>` with no end tag. The run goes on at once (the
    signal was searched for with a regex that took minutes over such a line) and nobody is
    taken to be stuck."""
    shell = "seq 1 300000 | sed 's/$/ <stuck>x/'; true"
    project = project_with(tmp_path, rig, {"shell": shell, "final": "Done."})

    result = cub(project, rig)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    attempt = read_attempt(project, "t1")
    assert (attempt.outcome, attempt.stuck_reason) == ("succeeded", None)
    assert read_run(project).state == "completed"
