"""No agent process outlives `cub run`, even one that cleared its environment and left the
agent's session (`env -i setsid sh -c 'sleep N &'`): such an escapee has neither the agent's
tree marker nor its session, and its parent is gone, so only cub being a child subreaper (it
is re-parented to cub) finds it. cub's other children (hooks and what they leave running) are
not the agent's and are left alone.

Escapees are found by their command line: ``sleep N`` with a number unique to the test.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cub.records.location import runs_dir
from cub.records.store import read_runner
from tests.e2e.support import command_harness
from tests.helpers.agents import wait_for_file, wait_until, write_script
from tests.helpers.cli import make_project, read_attempt, read_events, read_run, start_cub, task

pytestmark = pytest.mark.timeout(60)


def sleepers(seconds: int) -> list[psutil.Process]:
    """Live (not zombie) ``sleep <seconds>`` processes."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.cmdline() == [
                "sleep",
                str(seconds),
            ]:
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def mark() -> Iterator[int]:
    """A number no other test uses: the escapee sleeps that many seconds."""
    seconds = random.randint(300_000, 999_999)
    yield seconds
    for proc in sleepers(seconds):  # never leave one behind, whatever the test found
        proc.kill()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj", [task("t1")])


def escaping_agent(
    path: Path, seconds: int, ready: Path, *, then: str, ignore: bool = False
) -> Path:
    """An agent that starts ``sleep <seconds>`` with no environment, in a session of its own,
    through a shell that exits at once (so the sleep is an orphan), then runs ``then``."""
    ignoring = (
        "for name in ('SIGINT', 'SIGTERM', 'SIGHUP'):\n"
        "    signal.signal(getattr(signal, name), signal.SIG_IGN)\n"
        if ignore
        else ""
    )
    return write_script(
        path,
        f"""
import os, signal, subprocess, sys, time
{ignoring}
subprocess.run(["env", "-i", "setsid", "sh", "-c", "sleep {seconds} &"], check=True)
print("escapee started", flush=True)
open({str(ready)!r}, "w").close()
{then}
""",
    )


def wait_for_escapee(seconds: int) -> psutil.Process:
    wait_until(lambda: bool(sleepers(seconds)), what=f"sleep {seconds} running")
    (escapee,) = sleepers(seconds)
    # It really escaped: nothing in its environment (so no tree marker) but the PWD its shell
    # set, and it left the agent's session.
    assert set(escapee.environ()) <= {"PWD"}
    return escapee


def assert_no_escapee_left(seconds: int) -> None:
    deadline = time.monotonic() + 2  # a SIGKILLed process is gone in moments, not minutes
    while sleepers(seconds) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not sleepers(seconds), "the agent's escapee outlived cub"


def test_an_escapee_is_gone_when_the_run_ends_normally(
    project: Path, bin_dir: Path, mark: int
) -> None:
    agent = escaping_agent(bin_dir / "agent", mark, bin_dir / "ready", then="sys.exit(0)")
    cub = start_cub(["run", *command_harness(agent), "--once"], project)
    _, stderr = cub.communicate(timeout=30)

    assert cub.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert read_attempt(project, "t1").outcome == "succeeded"
    assert read_run(project).state == "completed"
    assert_no_escapee_left(mark)


def test_an_escapee_is_gone_after_ctrl_c(project: Path, bin_dir: Path, mark: int) -> None:
    ready = bin_dir / "ready"
    agent = escaping_agent(bin_dir / "agent", mark, ready, then="time.sleep(60)")
    cub = start_cub(["run", *command_harness(agent), "--once"], project)
    try:
        wait_for_file(ready)
        escapee = wait_for_escapee(mark)
        assert escapee.ppid() == cub.pid  # re-parented to cub, not to init
        cub.send_signal(signal.SIGINT)
        _, stderr = cub.communicate(timeout=30)
    finally:
        cub.kill()
        cub.wait()

    assert cub.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert read_run(project).state == "interrupted"
    assert read_attempt(project, "t1").outcome == "interrupted"
    assert_no_escapee_left(mark)


def test_an_escapee_is_gone_after_a_second_ctrl_c(project: Path, bin_dir: Path, mark: int) -> None:
    ready = bin_dir / "ready"
    # It ignores the first interrupt, so the run is still in its grace when the second comes.
    agent = escaping_agent(bin_dir / "agent", mark, ready, then="time.sleep(60)", ignore=True)
    cub = start_cub(["run", *command_harness(agent), "--once"], project)
    try:
        wait_for_file(ready)
        wait_for_escapee(mark)
        cub.send_signal(signal.SIGINT)
        wait_until(
            lambda: any(e.state_to == "stopping" for e in read_events(project)),
            what="the run stopping",
        )
        time.sleep(0.7)  # a second Ctrl+C, not the first one delivered twice
        cub.send_signal(signal.SIGINT)
        _, stderr = cub.communicate(timeout=30)
    finally:
        cub.kill()
        cub.wait()

    assert cub.returncode == 137, stderr
    assert "Traceback" not in stderr
    assert (read_run(project).state, read_run(project).reason_code) == (
        "force_killed",
        "second_interrupt",
    )
    assert read_attempt(project, "t1").outcome == "killed"
    assert_no_escapee_left(mark)


def test_what_a_hook_leaves_running_is_not_taken_for_an_escapee(
    project: Path, bin_dir: Path, mark: int
) -> None:
    """The on-budget-warning hook runs while the agent does and leaves a process behind (it is
    re-parented to cub too): it is the hook's, not the agent's, and cub does not kill it. The
    hook itself is recorded with its own exit code."""
    hooks = project / ".cub" / "hooks" / "on-budget-warning.d"
    hooks.mkdir(parents=True)
    hook_done = bin_dir / "hook-done"
    write_script(
        hooks / "10-leave-a-service",
        f"#!/bin/sh\nsetsid sh -c 'sleep {mark} &'\ntouch {hook_done}\nexit 3\n",
    )
    agent = write_script(
        bin_dir / "agent",
        f"""
import json, os, time
print(json.dumps({{"cub_usage": {{"input_tokens": 900, "output_tokens": 0}}}}), flush=True)
deadline = time.monotonic() + 20
while not os.path.exists({str(hook_done)!r}) and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(1)  # several of cub's process sweeps while the hook's orphan is cub's child
""",
    )
    cub = start_cub(["run", *command_harness(agent), "--once", "--budget-tokens", "1000"], project)
    _, stderr = cub.communicate(timeout=30)

    assert cub.returncode == 0, stderr
    assert read_attempt(project, "t1").outcome == "succeeded"
    hook_events = [e for e in read_events(project) if e.data.get("point") == "on-budget-warning"]
    assert hook_events, [e.kind for e in read_events(project)]
    assert [h["exit_code"] for e in hook_events for h in e.data["hooks"]] == [3]
    (service,) = sleepers(mark)  # still running after cub exited
    assert service.ppid() != os.getpid()


def test_an_escapee_of_a_parallel_child_that_was_killed_is_gone(
    tmp_path: Path, bin_dir: Path, mark: int
) -> None:
    """The child cub dies (SIGKILL) with its agent's escapee re-parented to it: the escapee
    moves on to the parent, which kills it when it collects the dead child."""
    project = make_project(tmp_path / "par", [task("t1")])
    ready = bin_dir / "ready"
    agent = escaping_agent(bin_dir / "agent", mark, ready, then="time.sleep(60)")
    cub = start_cub(["run", "--parallel", "2", "--name", "par", *command_harness(agent)], project)
    try:
        wait_for_file(ready)
        escapee = wait_for_escapee(mark)
        child = read_runner(runs_dir(project) / "par-t1")
        assert child is not None and escapee.ppid() == child.pid  # the child's, so far
        os.kill(child.pid, signal.SIGKILL)
        _, stderr = cub.communicate(timeout=30)
    finally:
        cub.kill()
        cub.wait()

    assert "Traceback" not in stderr
    assert read_run(project, "par-t1").state == "force_killed"
    assert_no_escapee_left(mark)
    killed = [e for e in read_events(project, "par") if e.kind == "orphans_killed"]
    assert killed and escapee.pid in killed[0].data["pids"]
