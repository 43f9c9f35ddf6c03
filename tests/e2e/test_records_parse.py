"""Records that always parse, whatever the agent prints: redaction works on a record's values
(never on its encoded JSON), and usage an agent reports is validated before it is counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cub.agents.stream import MAX_COST_USD, MAX_TOKENS
from tests.e2e.support import assert_no_traceback, command_harness
from tests.helpers.agents import write_script
from tests.helpers.cli import make_project, read_attempt, read_run, run_cub, run_dir, task

pytestmark = pytest.mark.timeout(60)

SECRET = "hunter2"


def _every_record_parses(directory: Path) -> list[Path]:
    """Decode every JSON file and every journal line under ``directory``; returns the files."""
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
    return files


def _listed(project: Path) -> dict[str, dict[str, object]]:
    result = run_cub(["runs", "list", "--json"], project)
    assert result.returncode == 0, result.stderr
    return {str(s["run_id"]): s for s in json.loads(result.stdout)}


def test_a_redaction_pattern_never_breaks_a_record(tmp_path: Path, bin_dir: Path) -> None:
    # The pattern eats everything up to the next blank: in encoded JSON that is the closing
    # quote and brackets of the value (and the pattern itself, in the recorded config).
    project = make_project(
        tmp_path / "project",
        [task("T-1", f"Rotate the password={SECRET} of the test database")],
        config={
            "redaction": {"patterns": ["password=\\S+"]},
            "harness": {"env": {"DB_URL": f"postgres://app:password={SECRET}@db/app"}},
        },
    )
    agent = write_script(
        bin_dir / "agent.py",
        f"""
        import json
        print('password={SECRET}"}}')
        print(json.dumps({{"password={SECRET}": ["password={SECRET}\\\\"]}}))
        print('{{"cub_usage": {{"input_tokens": 12, "output_tokens": 3}}}}')
        print("<stuck>the database refused password={SECRET} again</stuck>")
        """,
    )
    result = run_cub(["run", *command_harness(f"python3 {agent}")], project)
    assert_no_traceback(result)

    directory = run_dir(project)
    files = _every_record_parses(directory)
    assert {"run.json", "status.json", "events.jsonl", "task.json", "harness.log"} <= {
        p.name for p in files
    }
    for path in files:
        assert SECRET not in path.read_text(errors="replace"), path
    record = read_run(project)
    assert record.state == "failed" and record.reason_code == "agent_stuck"
    assert result.returncode == record.exit_code == 1
    assert "[REDACTED]" in record.reason
    attempt = read_attempt(project, "T-1")
    assert attempt.outcome == "stuck"
    assert attempt.usage.input_tokens == 12 and attempt.usage.output_tokens == 3
    # Read back as ended, not as a run that is still live.
    listed = _listed(project)[record.run_id]
    assert listed["state"] == "failed" and listed["live"] is False
    status = run_cub(["status"], project)
    assert status.returncode == 0, status.stderr
    assert "failed (exit 1)" in status.stdout


def test_negative_usage_is_refused_so_the_token_budget_holds(tmp_path: Path, bin_dir: Path) -> None:
    project = make_project(
        tmp_path / "project",
        [task("T-1"), task("T-2")],
        config={"budget": {"tokens": 100}},
    )
    agent = write_script(
        bin_dir / "agent.py",
        """
        print('{"cub_usage": {"input_tokens": -1000}}', flush=True)
        print('{"cub_usage": {"output_tokens": 7, "cost_usd": -5.0}}', flush=True)
        print('{"cub_usage": {"input_tokens": 150}}', flush=True)
        """,
    )
    result = run_cub(["run", *command_harness(f"python3 {agent}")], project)
    assert_no_traceback(result)

    record = read_run(project)
    assert (record.state, record.reason_code) == ("budget_exhausted", "token_budget")
    assert result.returncode == record.exit_code == 3
    assert record.budget.tokens_used == 150
    assert record.tasks.attempted == ["T-1"]
    usage = read_attempt(project, "T-1").usage
    assert (usage.input_tokens, usage.output_tokens, usage.cost_usd) == (150, 0, None)


def test_absurd_usage_is_capped_and_the_run_stays_readable(tmp_path: Path, bin_dir: Path) -> None:
    project = make_project(tmp_path / "project", [task("T-1")])
    agent = write_script(
        bin_dir / "agent.py",
        """
        print('{"cub_usage": {"input_tokens": 1e30, "cost_usd": 1e300}}')
        print('{"cub_usage": {"output_tokens": 1%s}}' % ("0" * 400))
        print('{"cub_usage": {"cache_read_tokens": 1%s}}' % ("0" * 5000))
        print('{"cub_usage": {"cache_creation_tokens": 1e400}}')
        """,
    )
    result = run_cub(["run", *command_harness(f"python3 {agent}")], project)
    assert_no_traceback(result)

    record = read_run(project)
    assert (record.state, result.returncode) == ("completed", 0)
    usage = read_attempt(project, "T-1").usage
    assert (usage.input_tokens, usage.output_tokens) == (MAX_TOKENS, MAX_TOKENS)
    assert (usage.cache_read_tokens, usage.cache_creation_tokens) == (0, 0)
    assert usage.cost_usd == MAX_COST_USD
    assert record.budget.tokens_used == 2 * MAX_TOKENS
    _every_record_parses(run_dir(project))

    listed = _listed(project)[record.run_id]
    assert listed["state"] == "completed" and listed["live"] is False
    table = run_cub(["runs", "list"], project)
    assert_no_traceback(table)
    (line,) = [ln for ln in table.stdout.splitlines() if ln.startswith(record.run_id)]
    assert str(2 * MAX_TOKENS) in line and len(line) < 200
    for command in (["status"], ["runs", "show", "latest"]):
        shown = run_cub(command, project)
        assert shown.returncode == 0, shown.stderr
        assert_no_traceback(shown)
