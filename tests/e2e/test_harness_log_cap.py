"""harness.log has a cap (`loop.log_max_bytes`): beyond it cub stops writing the log but still
reads and parses the agent's output, and records the cut in the log and in the journal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.support import command_harness
from tests.helpers.agents import write_script
from tests.helpers.cli import make_project, read_attempt, read_events, run_cub, run_dir, task

pytestmark = pytest.mark.timeout(60)


def test_a_chatty_agent_fills_the_log_up_to_its_cap_and_the_cut_is_recorded(
    tmp_path: Path, bin_dir: Path
) -> None:
    project = make_project(
        tmp_path / "proj", [task("t1")], config={"loop": {"log_max_bytes": 2000}}
    )
    usage = json.dumps({"cub_usage": {"input_tokens": 1234, "output_tokens": 56}})
    agent = write_script(
        bin_dir / "agent",
        f"""
        for n in range(1000):
            print(f"line {{n:04d}} " + "x" * 89, flush=True)
        print({usage!r}, flush=True)  # after the cap: still read and counted
        """,
    )
    result = run_cub(["run", *command_harness(agent), "--once"], project)

    assert result.returncode == 0, result.stderr
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "succeeded"
    assert (attempt.usage.input_tokens, attempt.usage.output_tokens) == (1234, 56)
    total = 1000 * 100 + len(usage) + 1
    log = (run_dir(project) / "tasks" / "t1" / "harness.log").read_bytes()
    assert log[:2000] == b"".join(f"line {n:04d} {'x' * 89}\n".encode() for n in range(20))
    notice = log[2000:].decode()
    assert notice == (
        f"[cub] harness.log reached its cap of 2000 bytes (loop.log_max_bytes): "
        f"{total - 2000} more bytes of output were not written\n"
    )
    (cut,) = [e for e in read_events(project) if e.kind == "harness_log_capped"]
    assert cut.task_id == "t1"
    assert cut.data == {"max_bytes": 2000, "dropped_bytes": total - 2000}


def test_a_log_under_its_cap_is_whole_and_nothing_is_journaled(
    tmp_path: Path, bin_dir: Path
) -> None:
    project = make_project(tmp_path / "proj", [task("t1")])
    agent = write_script(bin_dir / "agent", 'print("done", flush=True)\n')
    result = run_cub(["run", *command_harness(agent), "--once"], project)

    assert result.returncode == 0, result.stderr
    assert (run_dir(project) / "tasks" / "t1" / "harness.log").read_bytes() == b"done\n"
    assert not [e for e in read_events(project) if e.kind == "harness_log_capped"]


def test_a_cap_that_is_not_a_positive_number_is_refused(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [task("t1")], config={"loop": {"log_max_bytes": 0}})
    result = run_cub(["run", "--harness", "command", "--harness-cmd", "true"], project)

    assert result.returncode == 2
    assert "log_max_bytes" in result.stderr
