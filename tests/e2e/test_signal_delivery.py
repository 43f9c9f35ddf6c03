"""One request to stop is one interrupt, however it is delivered.

GNU `timeout -s INT` signals cub and then cub's whole process group, so cub gets the same
SIGINT twice within microseconds; a shell's `kill -INT -PGID` next to a `kill -INT PID` does the
same. Copies that arrive within cub's same-request window (0.5 s) are one interrupt with its
grace; a signal sent after it is a second request and kills at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.support import command_harness
from tests.helpers.agents import (
    TEST_TOKEN_VAR,
    processes_with_token,
    wait_for_file,
    write_script,
)
from tests.helpers.cli import (
    CUB,
    cub_env,
    make_project,
    read_attempt,
    read_run,
    read_tasks,
    start_cub,
    task,
)

pytestmark = pytest.mark.timeout(60)


def winding_down_agent(path: Path, ready: Path, stopped: Path) -> Path:
    """On SIGINT or SIGTERM it takes 0.3 s to wind down, notes it did in ``stopped``, and
    exits 130: an agent killed at once never writes ``stopped``."""
    return write_script(
        path,
        f"""
import os, signal, sys, time
def stop(signum, frame):
    time.sleep(0.3)
    with open({str(stopped)!r}, "a") as f:
        f.write(signal.Signals(signum).name + "\\n")
    os._exit(130)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
print("agent started", flush=True)
open({str(ready)!r}, "w").close()
time.sleep(60)
""",
    )


def assert_one_interrupt(project: Path, code: int, stopped: Path) -> None:
    """The run was interrupted once: the agent had its grace and stopped by itself."""
    record = read_run(project)
    assert (record.state, record.exit_code, record.reason_code) == ("interrupted", 130, "sigint")
    assert code == 130
    assert [t.trigger for t in record.history][-2:] == ["interrupt", "stopped"]
    attempt = read_attempt(project, "t1")
    assert (attempt.outcome, attempt.exit_code, attempt.signal) == ("interrupted", 130, None)
    assert stopped.read_text().split() == ["SIGINT"]
    entry = read_tasks(project)["t1"]
    assert (entry["status"], entry.get("assignee")) == ("open", None)


@pytest.mark.parametrize("round_", range(2))
def test_timeout_s_int_is_one_interrupt_not_a_force_kill(
    tmp_path: Path, bin_dir: Path, round_: int
) -> None:
    """The real `timeout` program: its SIGINT reaches cub directly and via the process group."""
    project = make_project(tmp_path / "proj", [task("t1"), task("t2")])
    ready, stopped = bin_dir / "ready", bin_dir / "stopped"
    agent = winding_down_agent(bin_dir / "agent", ready, stopped)
    token = uuid.uuid4().hex
    # --preserve-status: timeout exits with cub's own code instead of its 124.
    command = ["timeout", "--preserve-status", "-s", "INT", "2", *CUB, "run"]
    result = subprocess.run(
        [*command, *command_harness(agent)],
        cwd=project,
        env=cub_env({TEST_TOKEN_VAR: token}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert ready.exists(), "the agent had not started when timeout fired"
    assert "Traceback" not in result.stderr, result.stderr
    assert_one_interrupt(project, result.returncode, stopped)
    assert not processes_with_token(token)


def test_copies_of_one_signal_a_moment_apart_are_one_interrupt(
    tmp_path: Path, bin_dir: Path
) -> None:
    """The same request delivered twice, 0.1 s apart (a loaded machine, two senders): still
    one interrupt, with its grace."""
    project = make_project(tmp_path / "proj", [task("t1"), task("t2")])
    ready, stopped = bin_dir / "ready", bin_dir / "stopped"
    agent = winding_down_agent(bin_dir / "agent", ready, stopped)
    proc = start_cub(["run", *command_harness(agent)], project)
    wait_for_file(ready)

    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.1)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)

    assert "Traceback" not in err, err
    assert_one_interrupt(project, proc.returncode, stopped)
    assert out.count("interrupt: stopping the agent") == 1, out


def test_a_second_sigint_a_second_later_still_kills_at_once(tmp_path: Path, bin_dir: Path) -> None:
    project = make_project(tmp_path / "proj", [task("t1"), task("t2")])
    ready, stopped = bin_dir / "ready", bin_dir / "stopped"
    # This agent ignores SIGINT, so only a force kill ends the attempt before the 10 s grace.
    agent = write_script(
        bin_dir / "agent",
        f"""
import signal, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
open({str(ready)!r}, "w").close()
time.sleep(60)
""",
    )
    proc = start_cub(["run", *command_harness(agent)], project)
    wait_for_file(ready)

    os.kill(proc.pid, signal.SIGINT)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGINT)
    sent = time.monotonic()
    out, err = proc.communicate(timeout=30)

    assert time.monotonic() - sent < 1.0
    assert "Traceback" not in err, err
    assert proc.returncode == 137, (out, err)
    record = read_run(project)
    assert (record.state, record.reason_code) == ("force_killed", "second_interrupt")
    attempt = read_attempt(project, "t1")
    assert (attempt.outcome, attempt.signal) == ("killed", signal.SIGKILL)
    assert not stopped.exists()
