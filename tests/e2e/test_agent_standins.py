"""The real `cub` process driving scripted stand-ins for claude, codex, gemini and opencode.

Each stand-in is a program named like the real CLI, first on PATH, that checks its command line
the way the real one would (refusing what the real one refuses), reads its prompt where the real
one does, and replays the output format captured from the real CLI (notes/harness-formats.md),
including Claude Code's "Not logged in" stream. The PATH holds only the stand-ins and git, so an
agent CLI installed on the machine never interferes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from cub.agents.gemini import CLI_CALL_CHARS
from cub.agents.stream import estimate_tokens
from cub.records.schemas import Usage
from tests.e2e.support import assert_rejected
from tests.helpers.agent_formats import CLAUDE_NOT_LOGGED_IN as CAPTURED_NOT_LOGGED_IN
from tests.helpers.agent_formats import CODEX_SAMPLE, GEMINI_STREAM, OPENCODE_STREAM, json_line
from tests.helpers.agents import TEST_TOKEN_VAR, is_alive, processes_with_token, write_script
from tests.helpers.cli import (
    make_project,
    read_attempt,
    read_run,
    read_tasks,
    run_cub,
    run_dir,
    task,
)

pytestmark = pytest.mark.timeout(60)

SANDBOX = {"harness": {"env": {"IS_SANDBOX": "1"}}}
CLAUDE_VERSION = "2.1.197 (Claude Code)"
VERSIONS = {
    "claude": CLAUDE_VERSION,
    "codex": "codex-cli 0.169.0",
    "gemini": "0.61.0",
    "opencode": "1.18.33",
}

# ------------------------------------------------------------------------- stand-in agents

# Each stand-in: answer --version, check argv like the real CLI, record argv + prompt, replay.
_AGENT = r"""
import json, os, signal, sys, time

NAME = {name!r}
SPEC = json.loads({spec!r})
argv = sys.argv[1:]


def refuse(message, code=2):
    sys.stderr.write(message + "\n")
    sys.exit(code)


def value_of(flag):
    if flag not in argv or argv.index(flag) + 1 >= len(argv):
        refuse(f"error: option '{{flag}}' argument missing")
    return argv[argv.index(flag) + 1]


if argv == ["--version"]:
    print(SPEC["version"])
    sys.exit(0)

model = None
if NAME == "claude":
    if argv[:1] != ["-p"]:
        refuse("error: this stand-in only runs in print mode (-p)")
    if value_of("--output-format") != "stream-json":
        refuse("error: --output-format must be stream-json")
    if "--verbose" not in argv:
        refuse("Error: When using --print, --output-format=stream-json requires --verbose", 1)
    if not value_of("--append-system-prompt").strip():
        refuse("error: empty --append-system-prompt")
    if "--dangerously-skip-permissions" not in argv:
        refuse("error: permission prompts cannot be answered unattended")
    # What the real CLI does as root (every machine here runs as root).
    if os.environ.get("IS_SANDBOX") != "1":
        refuse("--dangerously-skip-permissions cannot be used with root/sudo privileges "
               "for security reasons", 1)
    model = value_of("--model") if "--model" in argv else None
    prompt = sys.stdin.read()
elif NAME == "codex":
    if argv[:2] != ["exec", "--json"] or "--dangerously-bypass-approvals-and-sandbox" not in argv:
        refuse("error: expected `codex exec --json --dangerously-bypass-approvals-and-sandbox`")
    if argv[-1] != "-":
        refuse("error: the prompt must come from stdin (`-`)")
    if "--skip-git-repo-check" not in argv and not os.path.isdir(".git"):
        refuse("Not inside a trusted directory and --skip-git-repo-check was not specified.", 1)
    model = value_of("-m") if "-m" in argv else None
    prompt = sys.stdin.read()
elif NAME == "gemini":
    prompt = value_of("-p")
    if "-y" not in argv:
        refuse("error: approvals needed (-y)")
    if not SPEC.get("plain") and value_of("-o") != "stream-json":
        refuse("error: -o must be stream-json")
    model = value_of("-m") if "-m" in argv else None
elif NAME == "opencode":
    if argv[:1] != ["run"] or value_of("--format") != "json":
        refuse("error: expected `opencode run --format json`")
    model = value_of("-m") if "-m" in argv else None
    if model is not None and "/" not in model:
        refuse("Error: model must be provider/model")
    prompt = sys.stdin.read()  # cub passes the prompt on stdin (a message argument gets mangled)
if not prompt.strip():
    refuse("error: empty prompt")

with open(SPEC["record"], "w") as f:
    json.dump({{"argv": argv, "prompt": prompt, "model": model, "pid": os.getpid()}}, f)

if SPEC.get("stubborn"):
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    if os.fork() == 0:
        os.setsid()  # out of the agent's session and process group
        tmp = SPEC["grandchild_pid_file"] + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.rename(tmp, SPEC["grandchild_pid_file"])
        time.sleep(60)
        os._exit(0)

for delay, line in SPEC["lines"]:
    time.sleep(delay)
    print(line, flush=True)
deadline = time.monotonic() + SPEC.get("linger", 0)
while time.monotonic() < deadline:
    time.sleep(0.05)
    if SPEC.get("stubborn"):
        print("still working", flush=True)
sys.exit(SPEC.get("exit", 0))
"""


def fake_agent(
    bin_dir: Path,
    name: str,
    lines: Sequence[str | tuple[float, str]] = (),
    **spec: Any,
) -> Path:
    """A stand-in for ``name`` replaying ``lines`` (each optionally after a delay)."""
    spec.setdefault("version", VERSIONS[name])
    spec.setdefault("record", str(bin_dir / f"{name}.record.json"))
    spec["lines"] = [line if isinstance(line, tuple) else (0.0, line) for line in lines]
    return write_script(bin_dir / name, _AGENT.format(name=name, spec=json.dumps(spec)))


def recorded(bin_dir: Path, name: str) -> dict[str, Any]:
    return json.loads((bin_dir / f"{name}.record.json").read_text())


@pytest.fixture
def tools_dir(tmp_path: Path) -> Path:
    """The programs cub itself needs (git), and nothing else."""
    path = tmp_path / "tools"
    path.mkdir()
    found = shutil.which("git")
    assert found is not None
    (path / "git").symlink_to(found)
    return path


@pytest.fixture
def path_env(bin_dir: Path, tools_dir: Path) -> dict[str, str]:
    return {"PATH": f"{bin_dir}{os.pathsep}{tools_dir}"}


def cub(
    project: Path, env: dict[str, str], *args: str, timeout: float = 50
) -> subprocess.CompletedProcess[str]:
    return run_cub(["run", *args], project, env=env, timeout=timeout)


def expect(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr


_j = json_line


# ------------------------------------------------------------------------- the streams

# The captured lines (notes/harness-formats.md), with the trimmed "tools" list made valid.
CLAUDE_NOT_LOGGED_IN = [
    '{"type":"system","subtype":"init","cwd":"/tmp/x","session_id":"…","tools":[],"model":"…","permissionMode":"bypassPermissions","apiKeySource":"none","claude_code_version":"2.1.197"}',
    *CAPTURED_NOT_LOGGED_IN[1:],
]


def claude_init(model: str = "claude-sonnet-4-5") -> str:
    return _j(
        {
            "type": "system",
            "subtype": "init",
            "cwd": "/w",
            "session_id": "s1",
            "tools": ["Bash", "Edit"],
            "model": model,
            "permissionMode": "bypassPermissions",
            "apiKeySource": "ANTHROPIC_API_KEY",
            "claude_code_version": "2.1.197",
        }
    )


def claude_assistant(msg_id: str, usage: tuple[int, int, int, int], *blocks: Any) -> str:
    inp, out, read, write = usage
    return _j(
        {
            "type": "assistant",
            "message": {
                "id": msg_id,
                "model": "claude-sonnet-4-5",
                "role": "assistant",
                "type": "message",
                "usage": {
                    "input_tokens": inp,
                    "output_tokens": out,
                    "cache_creation_input_tokens": write,
                    "cache_read_input_tokens": read,
                },
                "content": list(blocks) or [{"type": "text", "text": "Working on it."}],
            },
            "parent_tool_use_id": None,
            "session_id": "s1",
        }
    )


def claude_result(
    usage: tuple[int, int, int, int], cost: float, *, is_error: bool = False, text: str = "Done."
) -> str:
    inp, out, read, write = usage
    return _j(
        {
            "type": "result",
            "subtype": "success",
            "is_error": is_error,
            "duration_ms": 2000,
            "num_turns": 2,
            "result": text,
            "session_id": "s1",
            "total_cost_usd": cost,
            "usage": {
                "input_tokens": inp,
                "cache_creation_input_tokens": write,
                "cache_read_input_tokens": read,
                "output_tokens": out,
            },
            "modelUsage": {},
            "permission_denials": [],
        }
    )


CLAUDE_SUCCESS = [
    claude_init(),
    claude_assistant("msg_1", (10, 5, 100, 20)),
    claude_assistant(
        "msg_1",
        (10, 7, 100, 20),
        {"type": "tool_use", "id": "tu1", "name": "Bash", "input": {"command": "ls"}},
    ),
    _j(
        {
            "type": "user",
            "message": {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": "a.py"}],
            },
        }
    ),
    claude_assistant("msg_2", (3, 40, 200, 0), {"type": "text", "text": "Fixed and committed."}),
    claude_result((20, 50, 310, 25), 0.0421),
]
CLAUDE_USAGE = Usage(
    input_tokens=20,
    output_tokens=50,
    cache_read_tokens=310,
    cache_creation_tokens=25,
    cost_usd=0.0421,
    estimated=False,
)

# The captured events, with the reconnect error before the turn's usage.
CODEX_STREAM = [*CODEX_SAMPLE[:4], CODEX_SAMPLE[5], CODEX_SAMPLE[4]]


def _usage(project: Path, task_id: str) -> Usage:
    return read_attempt(project, task_id).usage


# ================================================================================ claude


def test_claude_usage_cost_model_and_extra_args(
    tmp_path: Path, bin_dir: Path, path_env: dict[str, str]
) -> None:
    config = {
        "harness": {"env": {"IS_SANDBOX": "1"}, "extra_args": {"claude": ["--max-turns", "9"]}}
    }
    project = make_project(tmp_path / "p", [task("t1"), task("t2")], config=config)
    fake_agent(bin_dir, "claude", CLAUDE_SUCCESS)

    result = cub(project, path_env, "--harness", "claude", "--model", "claude-opus-4-1")

    expect(result, 0)
    for task_id in ("t1", "t2"):
        attempt = read_attempt(project, task_id)
        assert attempt.outcome == "succeeded"
        assert attempt.usage == CLAUDE_USAGE
    run = read_run(project)
    assert run.state == "completed"
    assert run.harness is not None
    # The model the agent said it used (its init event), not only the name cub asked for.
    assert (run.harness.name, run.harness.version, run.harness.model) == (
        "claude",
        CLAUDE_VERSION,
        "claude-sonnet-4-5",
    )
    assert read_attempt(project, "t1").model == "claude-sonnet-4-5"
    assert run.budget.tokens_used == 2 * 405
    assert run.budget.cost_usd == pytest.approx(0.0842, abs=1e-9)
    seen = recorded(bin_dir, "claude")
    argv = seen["argv"]
    assert argv[:5] == [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--append-system-prompt",
    ]
    assert argv[5].startswith("You are an autonomous coding agent")
    assert argv[6:] == [
        "--dangerously-skip-permissions",
        "--model",
        "claude-opus-4-1",
        "--max-turns",
        "9",
    ]
    assert seen["prompt"].startswith("## Task t2: task t2")  # the task prompt, on stdin


def test_claude_events_amid_megabytes_of_plain_output_are_all_read(
    tmp_path: Path, bin_dir: Path, path_env: dict[str, str]
) -> None:
    """Between its events, a tool's output on the merged stderr: pieces of it far larger than
    the parser's sieve passes over (`cub.agents.sieve`), each event still in one of them."""
    config = {"harness": {"env": {"IS_SANDBOX": "1"}}}
    project = make_project(tmp_path / "p", [task("t1")], config=config)
    bulk = "\n".join(f"tests/test_mod.py::test_case_{i} PASSED  {{ok}}" for i in range(30000))
    lines = [part for event in CLAUDE_SUCCESS for part in (bulk, event)]
    fake_agent(bin_dir, "claude", [*lines, f"done <promise>COMPLETE</promise>\n{bulk}"])

    result = cub(project, path_env, "--harness", "claude")

    expect(result, 0)
    assert read_attempt(project, "t1").usage == CLAUDE_USAGE
    assert read_run(project).harness.model == "claude-sonnet-4-5"  # type: ignore[union-attr]


def test_claude_not_logged_in_fails_the_task(
    tmp_path: Path, bin_dir: Path, path_env: dict[str, str]
) -> None:
    project = make_project(tmp_path / "p", [task("t1")], config=SANDBOX)
    fake_agent(bin_dir, "claude", CLAUDE_NOT_LOGGED_IN, exit=1)

    result = cub(project, path_env, "--harness", "claude")

    expect(result, 1)
    run = read_run(project)
    assert (run.state, run.reason_code) == ("failed", "task_failed")
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "failed"
    assert attempt.error is not None
    assert "Not logged in" in attempt.error.message
    assert attempt.usage == Usage(cost_usd=0.0)
    log = (run_dir(project) / "tasks" / "t1" / "harness.log").read_text()
    assert "Not logged in · Please run /login" in log
    assert read_tasks(project)["t1"]["status"] != "closed"


def test_claude_root_refusal_says_to_set_is_sandbox(
    tmp_path: Path, bin_dir: Path, path_env: dict[str, str]
) -> None:
    project = make_project(tmp_path / "p", [task("t1")])  # no harness.env
    fake_agent(bin_dir, "claude", CLAUDE_SUCCESS)

    result = cub(project, path_env, "--harness", "claude")

    expect(result, 1)
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "failed"
    assert attempt.error is not None
    assert "harness.env.IS_SANDBOX=1" in attempt.error.message


def test_claude_is_error_result_with_exit_0_is_a_failure(
    tmp_path: Path, bin_dir: Path, path_env: dict[str, str]
) -> None:
    project = make_project(tmp_path / "p", [task("t1")], config=SANDBOX)
    lines = [
        claude_init(),
        claude_result((5, 6, 0, 0), 0.001, is_error=True, text="API Error: 500"),
    ]
    fake_agent(bin_dir, "claude", lines, exit=0)

    result = cub(project, path_env, "--harness", "claude")

    expect(result, 1)
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "failed"
    assert attempt.exit_code == 0
    assert attempt.error is not None
    assert attempt.error.message == "API Error: 500"
    assert attempt.usage == Usage(input_tokens=5, output_tokens=6, cost_usd=0.001)


def test_claude_stuck_signal_in_a_text_block(
    tmp_path: Path, bin_dir: Path, path_env: dict[str, str]
) -> None:
    project = make_project(tmp_path / "p", [task("t1")], config=SANDBOX)
    stuck = {"type": "text", "text": 'I cannot go on.\n<stuck>the "api" spec is missing</stuck>'}
    lines = [
        claude_init(),
        claude_assistant("m1", (1, 2, 0, 0), stuck),
        claude_result((1, 2, 0, 0), 0.01),
    ]
    fake_agent(bin_dir, "claude", lines)

    result = cub(project, path_env, "--harness", "claude")

    expect(result, 1)
    run = read_run(project)
    assert (run.state, run.reason_code) == ("failed", "agent_stuck")
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "stuck"
    assert attempt.stuck_reason == 'the "api" spec is missing'


def test_claude_lingering_after_a_successful_result_is_still_a_success(
    tmp_path: Path, bin_dir: Path, path_env: dict[str, str]
) -> None:
    project = make_project(tmp_path / "p", [task("t1")], config=SANDBOX)
    fake_agent(bin_dir, "claude", CLAUDE_SUCCESS, linger=30)

    started = time.monotonic()
    result = cub(project, path_env, "--harness", "claude")

    expect(result, 0)
    assert time.monotonic() - started < 20
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "succeeded"
    assert attempt.usage == CLAUDE_USAGE


@pytest.mark.parametrize("priced", [False, True], ids=["result-crosses", "price-table-mid-stream"])
def test_cost_budget_overrun_mid_stream_stops_quickly(
    tmp_path: Path, bin_dir: Path, path_env: dict[str, str], priced: bool
) -> None:
    config: dict[str, Any] = {"harness": {"env": {"IS_SANDBOX": "1"}}}
    if priced:
        # No result at all: the running cost comes from the price table.
        config["budget"] = {
            "prices": {"claude-sonnet-4-5": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}}
        }
        lines = [claude_init(), claude_assistant("m1", (10_000, 2_000, 0, 0))]  # $0.06
        expected_cost = 0.06
    else:
        lines = [
            claude_init(),
            claude_assistant("m1", (10, 20, 0, 0)),
            claude_result((10, 20, 0, 0), 0.08),
        ]
        expected_cost = 0.08
    project = make_project(tmp_path / "p", [task("t1"), task("t2")], config=config)
    fake_agent(bin_dir, "claude", lines, linger=30)

    started = time.monotonic()
    result = cub(project, path_env, "--harness", "claude", "--budget", "0.05")
    elapsed = time.monotonic() - started

    expect(result, 3)
    assert elapsed < 15, elapsed
    run = read_run(project)
    assert (run.state, run.reason_code) == ("budget_exhausted", "cost_budget")
    assert run.budget.cost_usd == pytest.approx(expected_cost)
    attempt = read_attempt(project, "t1")
    # A result that crosses the budget reports the task done: it is settled as done, never
    # reopened; without a result the agent was cut short.
    assert attempt.outcome == ("interrupted" if priced else "succeeded")
    assert read_tasks(project)["t1"]["status"] == ("open" if priced else "closed")
    assert attempt.usage.cost_usd == pytest.approx(expected_cost)
    assert not (run_dir(project) / "tasks" / "t2").exists()


def test_idle_timeout_trips_on_a_silent_agent(
    tmp_path: Path, bin_dir: Path, path_env: dict[str, str]
) -> None:
    project = make_project(tmp_path / "p", [task("t1")], config=SANDBOX)
    fake_agent(bin_dir, "claude", [claude_init()], linger=30)

    started = time.monotonic()
    result = cub(project, path_env, "--harness", "claude", "--idle-timeout", "1s")

    expect(result, 1)
    assert time.monotonic() - started < 15
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "timed_out"
    assert attempt.error is not None
    assert "idle" in attempt.error.message


def test_task_timeout_kills_a_stubborn_tree(
    tmp_path: Path, bin_dir: Path, path_env: dict[str, str]
) -> None:
    project = make_project(tmp_path / "p", [task("t1")], config=SANDBOX)
    grandchild_file = bin_dir / "grandchild.pid"
    fake_agent(
        bin_dir,
        "claude",
        [claude_init()],
        linger=50,
        stubborn=True,
        grandchild_pid_file=str(grandchild_file),
    )
    token = uuid.uuid4().hex
    env = {**path_env, TEST_TOKEN_VAR: token}

    started = time.monotonic()
    result = cub(project, env, "--harness", "claude", "--task-timeout", "2s")

    expect(result, 1)
    assert time.monotonic() - started < 20
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "timed_out"
    agent_pid = recorded(bin_dir, "claude")["pid"]
    grandchild_pid = int(grandchild_file.read_text())
    assert not is_alive(agent_pid)
    assert not is_alive(grandchild_pid)
    survivors = processes_with_token(token)
    for proc in survivors:  # never leave them running, even when the assertion fails
        proc.kill()
    assert survivors == []


# ================================================================================= codex


@pytest.mark.parametrize("priced", [False, True], ids=["no-price-table", "price-table"])
def test_codex_usage_and_cost(
    tmp_path: Path, bin_dir: Path, path_env: dict[str, str], priced: bool
) -> None:
    config: dict[str, Any] = {}
    if priced:
        price = {"input_per_mtok": 1.25, "output_per_mtok": 10.0, "cache_read_per_mtok": 0.125}
        config = {"budget": {"prices": {"gpt-5-codex": price}}}
    project = make_project(tmp_path / "p", [task("t1")], config=config)
    fake_agent(bin_dir, "codex", CODEX_STREAM)

    result = cub(project, path_env, "--harness", "codex", "-m", "gpt-5-codex")

    expect(result, 0)
    cost = 0.0025125 if priced else None
    assert _usage(project, "t1") == Usage(
        input_tokens=400, output_tokens=200, cache_read_tokens=100, cost_usd=cost
    )
    run = read_run(project)
    assert run.budget.tokens_used == 700
    # Unknown stays unknown at the run level too (never $0), and a known cost is not rounded.
    assert run.budget.cost_usd == cost
    assert run.budget.cost_incomplete is (cost is None)
    assert run.harness is not None
    assert (run.harness.name, run.harness.version, run.harness.model) == (
        "codex",
        "codex-cli 0.169.0",
        "gpt-5-codex",
    )
    seen = recorded(bin_dir, "codex")
    assert seen["argv"] == [
        "exec",
        "--json",
        "--dangerously-bypass-approvals-and-sandbox",
        "--skip-git-repo-check",
        "-m",
        "gpt-5-codex",
        "-",
    ]
    assert seen["prompt"].startswith("You are an autonomous coding agent")
    assert "## Task t1: task t1" in seen["prompt"]


def test_codex_turn_failed_fails_the_task(
    tmp_path: Path, bin_dir: Path, path_env: dict[str, str]
) -> None:
    project = make_project(tmp_path / "p", [task("t1")])
    lines = [*CODEX_STREAM[:5], _j({"type": "turn.failed", "error": {"message": "quota exceeded"}})]
    fake_agent(bin_dir, "codex", lines, exit=1)

    result = cub(project, path_env, "--harness", "codex")

    expect(result, 1)
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "failed"
    assert attempt.error is not None
    assert attempt.error.message == "quota exceeded"
    assert "-m" not in recorded(bin_dir, "codex")["argv"]


# ================================================================================ gemini


def test_gemini_stream_json(tmp_path: Path, bin_dir: Path, path_env: dict[str, str]) -> None:
    project = make_project(tmp_path / "p", [task("t1")])
    fake_agent(bin_dir, "gemini", GEMINI_STREAM)

    result = cub(project, path_env, "--harness", "gemini", "--model", "gemini-2.5-pro")

    expect(result, 0)
    assert _usage(project, "t1") == Usage(
        input_tokens=500, output_tokens=350, cache_read_tokens=1000, estimated=False
    )
    assert read_run(project).budget.tokens_used == 1850
    argv = recorded(bin_dir, "gemini")["argv"]
    assert argv[0] == "-p"
    assert "## Task t1: task t1" in argv[1]
    assert argv[2:] == ["-y", "-o", "stream-json", "-m", "gemini-2.5-pro"]


def test_gemini_plain_text_is_estimated(
    tmp_path: Path, bin_dir: Path, path_env: dict[str, str]
) -> None:
    project = make_project(tmp_path / "p", [task("t1")])
    out = ["I updated the parser.", "All tests pass.", "Done: 2 files changed."]
    fake_agent(bin_dir, "gemini", out, plain=True)

    result = cub(project, path_env, "--harness", "gemini")

    expect(result, 0)
    prompt = recorded(bin_dir, "gemini")["prompt"]
    usage = _usage(project, "t1")
    assert usage == Usage(
        input_tokens=estimate_tokens(CLI_CALL_CHARS + len(prompt)),
        output_tokens=estimate_tokens(sum(len(line) + 1 for line in out)),
        estimated=True,
    )
    assert usage.output_tokens == 16
    assert read_run(project).budget.tokens_used == usage.total_tokens


# ============================================================================== opencode


def test_opencode_sums_steps(tmp_path: Path, bin_dir: Path, path_env: dict[str, str]) -> None:
    project = make_project(tmp_path / "p", [task("t1")])
    fake_agent(bin_dir, "opencode", OPENCODE_STREAM)

    result = cub(project, path_env, "--harness", "opencode", "-m", "anthropic/claude-sonnet-4-5")

    expect(result, 0)
    usage = _usage(project, "t1")
    assert (usage.input_tokens, usage.output_tokens) == (1300, 160)
    assert (usage.cache_read_tokens, usage.cache_creation_tokens) == (1800, 50)
    assert usage.cost_usd == pytest.approx(0.02)
    run = read_run(project)
    assert run.budget.tokens_used == 3310
    assert run.budget.cost_usd == pytest.approx(0.02)
    argv = recorded(bin_dir, "opencode")["argv"]
    assert argv == ["run", "--format", "json", "-m", "anthropic/claude-sonnet-4-5"]
    assert "## Task t1: task t1" in recorded(bin_dir, "opencode")["prompt"]


# ============================================================================ detection


QUICK = {
    "claude": [claude_result((1, 1, 0, 0), 0.001)],
    "codex": [CODEX_STREAM[-1]],
    "gemini": [GEMINI_STREAM[-1]],
    "opencode": [OPENCODE_STREAM[-1]],
}


@pytest.mark.parametrize(
    ("installed", "chosen"),
    [
        (["claude", "codex", "gemini", "opencode"], "claude"),
        (["codex", "gemini", "opencode"], "codex"),
        (["gemini", "opencode"], "opencode"),
        (["gemini"], "gemini"),
    ],
)
def test_auto_detection_by_priority(
    tmp_path: Path,
    bin_dir: Path,
    path_env: dict[str, str],
    installed: list[str],
    chosen: str,
) -> None:
    project = make_project(tmp_path / "p", [task("t1")], config=SANDBOX)
    for name in installed:
        fake_agent(bin_dir, name, QUICK[name])

    result = cub(project, path_env, "--once")

    expect(result, 0)
    run = read_run(project)
    assert run.harness is not None
    assert (run.harness.name, run.harness.version) == (chosen, VERSIONS[chosen])
    assert [p.name for p in bin_dir.glob("*.record.json")] == [f"{chosen}.record.json"]


def test_auto_detection_with_no_agent_is_rejected(tmp_path: Path, path_env: dict[str, str]) -> None:
    project = make_project(tmp_path / "p", [task("t1")])

    result = cub(project, path_env)

    assert_rejected(result, project, "harness_not_found", "claude", "codex", "opencode", "gemini")
