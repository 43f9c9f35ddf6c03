"""An attempt's outcome is settled from the agent's whole output, before anything else can
change it: a budget crossed as the agent finishes, an agent that completes its task during the
stop grace, a reader that closed cub's stdout. Real `cub` processes, scripted agents.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.support import command_harness
from tests.helpers.agents import wait_for_file, write_script
from tests.helpers.cli import (
    CUB,
    cub_env,
    make_project,
    read_attempt,
    read_run,
    read_status,
    read_tasks,
    run_cub,
    start_cub,
    task,
)
from tests.helpers.git import git

pytestmark = pytest.mark.timeout(60)

# Reports usage, then works on; asked to stop, it commits what it finished and exits 0.
FINISHES_WHEN_ASKED = """
import json, signal, subprocess, sys, time
from pathlib import Path
def finish(*_):
    Path("done.txt").write_text("finished while stopping\\n")
    subprocess.run(["git", "add", "done.txt"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", "finish the task"], check=True)
    sys.exit(0)
signal.signal(signal.SIGINT, finish)
print(json.dumps({{"cub_usage": {{"input_tokens": {tokens}, "output_tokens": 10}}}}), flush=True)
Path({ready!r}).touch()
time.sleep(30)
"""


def agent(bin_dir: Path, tokens: int) -> list[str]:
    ready = bin_dir / "ready"
    script = write_script(
        bin_dir / "agent.py", FINISHES_WHEN_ASKED.format(tokens=tokens, ready=str(ready))
    )
    return command_harness(f"{sys.executable} {script}")


def test_an_agent_that_finishes_after_the_budget_ran_out_keeps_its_task_closed(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "p", [task("t1"), task("t2")])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    result = run_cub(["run", *agent(bin_dir, 5000), "--budget-tokens", "1000"], project)

    assert result.returncode == 3, result.stdout + result.stderr
    run = read_run(project)
    assert (run.state, run.reason_code) == ("budget_exhausted", "token_budget")
    assert read_attempt(project, "t1").outcome == "succeeded"
    tasks = read_tasks(project)
    assert tasks["t1"]["status"] == "closed"  # never reopened to be done again
    assert tasks["t2"]["status"] == "open"
    assert git(project, "log", "-1", "--format=%s", run.branch or "") == "finish the task"
    assert (run.tasks.succeeded, run.tasks.interrupted) == (1, 0)
    assert read_status(project).current_task is None  # done, so not shown as running


def test_an_agent_that_finishes_within_the_grace_of_a_ctrl_c_keeps_its_task_closed(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "p", [task("t1")])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    proc = start_cub(["run", *agent(bin_dir, 10)], project)
    wait_for_file(bin_dir / "ready")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == 130, out + err
    run = read_run(project)
    assert run.state == "interrupted"
    assert read_attempt(project, "t1").outcome == "succeeded"
    assert read_tasks(project)["t1"]["status"] == "closed"
    assert git(project, "log", "-1", "--format=%s", run.branch or "") == "finish the task"
    assert read_status(project).current_task is None


def test_a_closed_stdout_never_changes_how_a_run_ends(tmp_path: Path) -> None:
    """`cub run -s … | head -1`: the reader goes away after one line; the run goes on, ends as
    it would have, and exits with its own code."""
    project = make_project(tmp_path / "p", [task("t1"), task("t2")])
    chatty = write_script(
        tmp_path / "agent.py",
        "import time\nfor i in range(200):\n    print('line', i, flush=True)\n"
        "    time.sleep(0.002)\n",
    )
    proc = subprocess.Popen(
        [*CUB, "run", "-s", *command_harness(f"{sys.executable} {chatty}")],
        cwd=project,
        env=cub_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err
    run = read_run(project)
    assert (run.state, run.tasks.succeeded) == ("completed", 2)


def test_a_read_only_command_stops_quietly_when_its_reader_goes_away(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", [task(f"t{i}") for i in range(3)])
    for i in range(30):
        run_cub(["run", "--ready", "--name", f"dry-{i}"], project)
    proc = subprocess.Popen(
        [*CUB, "runs", "list"],
        cwd=project,
        env=cub_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    time.sleep(0.1)
    _, err = proc.communicate(timeout=30)

    # click's own handling: no message, exit 1 (0 if it was done before it noticed).
    assert err == b"", err
    assert proc.returncode in (0, 1)
