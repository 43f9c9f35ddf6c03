"""`loop.verify` commands, run for real in a shell."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from cub.loop.verify import run_verify
from cub.records.redact import Redactor
from tests.helpers.agents import is_alive, wait_until


def verify(tmp_path: Path, *commands: str, timeout: float = 20) -> tuple[str | None, str]:
    log = tmp_path / "verify.log"
    failure = run_verify(commands, tmp_path, log, timeout=timeout, redact=Redactor())
    return failure, log.read_text() if log.exists() else ""


def test_passing_commands_are_logged_in_order(tmp_path: Path) -> None:
    failure, log = verify(tmp_path, "echo first", "echo second")

    assert failure is None
    assert log.index("$ echo first\nfirst\n[exit 0]") < log.index("$ echo second\nsecond\n")


def test_the_first_failing_command_stops_the_checks(tmp_path: Path) -> None:
    failure, log = verify(tmp_path, "echo broken; exit 3", "echo never")

    assert failure == "verify command 'echo broken; exit 3' failed with exit code 3"
    assert "broken\n[exit 3]" in log
    assert "never" not in log


def test_a_background_process_left_behind_is_not_waited_for(tmp_path: Path) -> None:
    # The background sleep keeps the command's output open; the command itself is done.
    failure, log = verify(tmp_path, "sleep 60 & echo $! > bg.pid; echo done", timeout=30)

    assert failure is None
    assert "done\n[exit 0]" in log
    with contextlib.suppress(ProcessLookupError):  # left running, as a shell's job is
        os.kill(int((tmp_path / "bg.pid").read_text()), signal.SIGKILL)


def test_a_command_that_times_out_is_stopped_with_its_whole_group(tmp_path: Path) -> None:
    failure, log = verify(tmp_path, "sleep 60 & echo $! > bg.pid; sleep 60", timeout=0.5)

    assert failure == "verify command 'sleep 60 & echo $! > bg.pid; sleep 60' timed out after 0.5s"
    assert "[exit -15]" in log  # SIGTERM ended it
    background = int((tmp_path / "bg.pid").read_text())
    wait_until(lambda: not is_alive(background), timeout=5, what="the background sleep to end")


def test_output_is_redacted(tmp_path: Path) -> None:
    _, log = verify(tmp_path, "echo token sk-abcdefghijklmnopqrstuvwx")

    assert "sk-abcdefghijklmnopqrstuvwx" not in log
    assert "token [REDACTED]" in log
