"""A full disk: the run's ending is still recorded (on room set aside when the run started),
the process exits with the code its record says, and the commands that read records say what
is wrong in one line. The disk is a small tmpfs, so these tests need root (they skip without)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.support import assert_no_traceback, command_harness, stderr_lines
from tests.helpers.agents import wait_for_file, write_script
from tests.helpers.cli import make_project, read_run, run_cub, run_dir, start_cub, task

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB filesystem of its own, which an agent can fill."""
    path = tmp_path / "disk"
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _filling_agent(bin_dir: Path, fill: Path, *, then_sleep: bool = False) -> Path:
    """An agent that writes ``fill`` until the disk is full, says so in ``bin_dir/filled``
    (another filesystem), prints a little more, and exits 0 (or sleeps)."""
    return write_script(
        bin_dir / "agent.py",
        f"""
        import time
        try:
            with open({str(fill)!r}, "wb") as f:
                while True:
                    f.write(b"x" * 65536)
                    f.flush()
        except OSError as exc:
            print("the disk is full:", exc, flush=True)
        open({str(bin_dir / "filled")!r}, "w").close()
        print("done", flush=True)
        if {then_sleep!r}:
            time.sleep(60)
        """,
    )


def _records_parse(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)


def test_a_run_whose_agent_fills_the_disk_exits_with_the_code_its_record_says(
    disk: Path, bin_dir: Path
) -> None:
    project = make_project(disk / "project", [task("T-1"), task("T-2")])
    agent = _filling_agent(bin_dir, disk / "fill.bin")
    result = run_cub(["run", *command_harness(f"python3 {agent}")], project)
    assert_no_traceback(result)
    assert (bin_dir / "filled").exists()

    record = read_run(project)
    assert result.returncode == record.exit_code != 0, (result.returncode, record.reason)
    assert record.recorded_by == "machine"
    assert "No space left on device" in record.reason
    assert record.tasks.attempted == ["T-1"]  # no more work once nothing can be recorded
    directory = run_dir(project)
    _records_parse(directory)
    assert not [p.name for p in directory.iterdir() if "reserve" in p.name]
    # The disk is still full: the record reads back all the same.
    status = run_cub(["status"], project)
    assert status.returncode == 0, status.stderr
    assert f"(exit {record.exit_code})" in status.stdout


def test_status_on_a_full_disk_says_so_in_one_line_and_recovers_once_there_is_room(
    disk: Path, bin_dir: Path
) -> None:
    project = make_project(disk / "project", [task("T-1")])
    fill = disk / "fill.bin"
    agent = _filling_agent(bin_dir, fill, then_sleep=True)
    runner = start_cub(["run", *command_harness(f"python3 {agent}")], project)
    try:
        wait_for_file(bin_dir / "filled", timeout=20)
    finally:
        runner.send_signal(signal.SIGKILL)  # cub dies; its agent is left for recovery
        runner.communicate(timeout=10)
    assert runner.returncode == -signal.SIGKILL

    for command in (["status"], ["runs", "list"], ["runs", "show", "latest"]):
        shown = run_cub(command, project)
        assert shown.returncode == 1, (command, shown.stdout, shown.stderr)
        assert_no_traceback(shown)
        (line,) = stderr_lines(shown)
        assert "No space left on device" in line and "free some space" in line, line

    fill.unlink()
    status = run_cub(["status"], project)
    assert status.returncode == 0, status.stderr
    assert_no_traceback(status)
    record = read_run(project)
    # What the process really returned: killed by SIGKILL, 128 + 9.
    assert (record.state, record.reason_code, record.exit_code) == (
        "force_killed",
        "runner_died",
        137,
    )
    _records_parse(run_dir(project))
