"""Assertions shared by the end-to-end tests, which run the real `cub` process."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from cub.records.location import runs_dir
from cub.records.schemas import RunRecord
from tests.helpers.cli import read_events, read_run, run_dir


def command_harness(script: Path | str) -> list[str]:
    return ["--harness", "command", "--harness-cmd", str(script)]


def stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], *words: str, code: int = 2
) -> str:
    """Exit ``code`` (2 unless told), exactly one line on stderr, naming every one of ``words``."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert_no_traceback(result)
    lines = stderr_lines(result)
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    line = lines[0]
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    return line


def assert_rejected_record(
    project: Path, reason_code: str, line: str | None = None, run_id: str = "newest"
) -> RunRecord:
    """The rejected run left run.json (state, exit code, reason) and a readable journal."""
    record = read_run(project, run_id)
    assert record.state == "validation_rejected"
    assert record.exit_code == 2
    assert record.reason_code == reason_code, record.reason
    assert record.recorded_by == "machine"
    assert record.history and record.history[-1].to == "validation_rejected"
    assert record.history[-1].trigger == "reject"
    if line is not None:
        assert record.reason in line
    assert (run_dir(project, run_id) / "events.jsonl").is_file()
    events = read_events(project, run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].state_to == "validation_rejected"
    assert events[-1].data.get("reason_code") == reason_code
    return record


def assert_rejected(
    result: subprocess.CompletedProcess[str],
    project: Path,
    reason_code: str,
    *words: str,
    run_id: str = "newest",
) -> RunRecord:
    line = assert_one_line_error(result, *words)
    return assert_rejected_record(project, reason_code, line, run_id)


def run_ids(project: Path) -> Sequence[str]:
    root = runs_dir(project)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink())
