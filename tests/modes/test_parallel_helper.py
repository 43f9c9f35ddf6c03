"""The children of a `--parallel` run are forked by a helper that has cub imported already
(`cub.modes.parallel.forkserver`, `cub.cli.child_server`), not executed anew: what that must not
change. Each child is still a `cub run` in a session of its own, with its output in its log,
stopped by SIGTERM when whoever forked it dies; the parent still learns how each one ended, even
when the helper died first; and a child leaves the project's recovery to its parent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from cub.errors import CubError
from cub.modes.parallel.forkserver import LOST_EXIT, ForkServer
from cub.records.location import runs_dir
from tests.e2e.support import command_harness
from tests.helpers.agents import (
    TEST_TOKEN_VAR,
    processes_with_token,
    wait_for_file,
    wait_until,
    write_script,
)
from tests.helpers.cli import (
    all_runs,
    cub_env,
    make_project,
    read_run,
    read_status,
    read_tasks,
    run_cub,
    start_cub,
    task,
)
from tests.helpers.git import git

pytestmark = pytest.mark.timeout(120)

PARENT = "par"

# Writes "<task>.started", sleeps SLEEP_<task> seconds (none unless set), then commits a file
# named after its task.
AGENT = """
import os, subprocess, time
task = os.environ["CUB_TASK_ID"]
open(os.path.join(os.environ["AGENT_DIR"], task + ".started"), "w").close()
time.sleep(float(os.environ.get("SLEEP_" + task, "0")))
open(task + ".txt", "w").write(task + "\\n")
subprocess.run(["git", "add", task + ".txt"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "work on " + task], check=True)
"""


@pytest.fixture
def agent_dir(tmp_path: Path) -> Path:
    path = tmp_path / "agent"
    path.mkdir()
    write_script(path / "agent.py", AGENT)
    return path


def _start_parallel(
    project: Path, agent_dir: Path, token: str, *flags: str, **sleeps: str
) -> subprocess.Popen[str]:
    env = {"AGENT_DIR": str(agent_dir), TEST_TOKEN_VAR: token}
    env.update({f"SLEEP_{name}": seconds for name, seconds in sleeps.items()})
    args = ["run", "--parallel", "2", "--name", PARENT, *flags]
    return start_cub([*args, *command_harness(agent_dir / "agent.py")], project, env=env)


def _runner_pid(project: Path, task_id: str) -> int:
    return read_status(project, f"{PARENT}-{task_id}").runner.pid


def test_every_child_is_forked_by_one_helper_in_a_session_of_its_own(
    tmp_path: Path, agent_dir: Path
) -> None:
    project = make_project(tmp_path / "p", [task("A"), task("B")])
    token = uuid.uuid4().hex
    cub = _start_parallel(project, agent_dir, token, A="30", B="30")
    try:
        for name in ("A", "B"):
            wait_for_file(agent_dir / f"{name}.started", timeout=20)
        children = [psutil.Process(_runner_pid(project, name)) for name in ("A", "B")]
        helpers = {child.ppid() for child in children}
        assert len(helpers) == 1
        helper = psutil.Process(helpers.pop())
        assert helper.ppid() == cub.pid
        assert "cub.cli.child_server" in helper.cmdline()
        assert all(os.getsid(child.pid) == child.pid for child in children)
        cub.send_signal(signal.SIGINT)
        out, err = cub.communicate(timeout=30)
    finally:
        if cub.poll() is None:
            cub.kill()
            cub.communicate()
    assert cub.returncode == 130, out + err
    for child in all_runs(project):
        if child.run_id != PARENT:
            assert (child.state, child.exit_code) == ("interrupted", 130)
    # The children's console output is in their logs, the helper is gone with the run.
    logs = runs_dir(project) / PARENT / "children"
    assert "interrupted" in (logs / f"{PARENT}-A.log").read_text()
    wait_until(lambda: processes_with_token(token) == [], timeout=5, what="no survivors")


def test_the_children_of_a_helper_that_died_stop_in_order_and_a_new_helper_starts_the_rest(
    tmp_path: Path, agent_dir: Path
) -> None:
    """The helper is SIGKILLed while it has two children: the kernel SIGTERMs them, they stop
    and record it; the parent, whose children they now are, reaps them, and a new helper forks
    the child of the task still to do."""
    project = make_project(tmp_path / "p", [task("A"), task("B"), task("C")])
    token = uuid.uuid4().hex
    cub = _start_parallel(project, agent_dir, token, "--on-failure", "continue", A="30", B="30")
    try:
        for name in ("A", "B"):
            wait_for_file(agent_dir / f"{name}.started", timeout=20)
        wait_until(
            lambda: all(
                read_status(project, f"{PARENT}-{name}").state == "executing" for name in ("A", "B")
            ),
            what="children executing",
        )
        helper = psutil.Process(_runner_pid(project, "A")).ppid()
        os.kill(helper, signal.SIGKILL)
        out, err = cub.communicate(timeout=60)
    finally:
        if cub.poll() is None:
            cub.kill()
            cub.communicate()
    assert cub.returncode == 1, out + err
    parent = read_run(project, PARENT)
    assert (parent.state, parent.reason_code) == ("failed", "tasks_failed")
    ended = {c.task_id: (c.state, c.exit_code) for c in parent.children}
    assert ended == {"A": ("interrupted", 143), "B": ("interrupted", 143), "C": ("completed", 0)}
    for name in ("A", "B"):
        child = read_run(project, f"{PARENT}-{name}")
        assert (child.reason_code, child.recorded_by) == ("sigterm", "machine")
    assert "C.txt" in git(project, "ls-tree", "--name-only", parent.branch or "")
    assert read_tasks(project)["C"]["status"] == "closed"
    wait_until(lambda: processes_with_token(token) == [], timeout=5, what="no survivors")


def test_the_helper_reports_each_childs_exit_and_output(tmp_path: Path) -> None:
    server = ForkServer(tmp_path, cub_env())
    try:
        version = server.start(["--version"], tmp_path, tmp_path / "version.log")
        unknown = server.start(["no-such-command"], tmp_path, tmp_path / "unknown.log")
        assert version.wait(timeout=20) == 0
        assert unknown.wait(timeout=20) == 2
    finally:
        server.close()
    assert "version" in (tmp_path / "version.log").read_text()
    assert "No such command" in (tmp_path / "unknown.log").read_text()


def test_a_child_whose_log_cannot_be_written_is_not_started(tmp_path: Path) -> None:
    server = ForkServer(tmp_path, cub_env())
    try:
        with pytest.raises(CubError, match="cannot open"):
            server.start(["--version"], tmp_path, tmp_path / "missing" / "child.log")
        assert server.start(["--version"], tmp_path, tmp_path / "ok.log").wait(timeout=20) == 0
    finally:
        server.close()


def test_the_end_of_a_child_whose_helper_died_is_still_seen(tmp_path: Path) -> None:
    """Here the parent (this test) is no subreaper: the orphaned child goes to init, so how it
    exited cannot be had, only that it ended (`LOST_EXIT`); its own record has the rest."""
    project = make_project(tmp_path / "p", [task("t1")])
    ready = tmp_path / "ready"
    agent = write_script(
        tmp_path / "agent.py",
        f"import time\nopen({str(ready)!r}, 'w').close()\ntime.sleep(30)\n",
    )
    server = ForkServer(project, cub_env())
    try:
        child = server.start(
            ["run", "--once", *command_harness(agent)], project, tmp_path / "child.log"
        )
        wait_for_file(ready, timeout=20)
        wait_until(lambda: read_status(project).state == "executing", what="executing")
        os.kill(psutil.Process(child.pid).ppid(), signal.SIGKILL)
        assert child.wait(timeout=30) == LOST_EXIT
        assert not server.alive()
    finally:
        server.close()
    record = read_run(project)
    assert (record.state, record.reason_code, record.exit_code) == ("interrupted", "sigterm", 143)


def test_a_child_run_leaves_the_projects_recovery_to_its_parent(tmp_path: Path) -> None:
    """A run whose runner died is recovered by the next `cub` command, but not by a child of a
    parallel run: its parent recovered the project when it started."""
    project = make_project(tmp_path / "p", [task("t1"), task("t2")])
    ready = tmp_path / "ready"
    sleeper = write_script(
        tmp_path / "sleeper.py",
        f"import time\nopen({str(ready)!r}, 'w').close()\ntime.sleep(60)\n",
    )
    dead = start_cub(["run", "--task", "t1", "--name", "dead", *command_harness(sleeper)], project)
    wait_for_file(ready, timeout=20)
    wait_until(lambda: read_status(project, "dead").state == "executing", what="executing")
    dead.kill()
    dead.communicate()
    quick = write_script(tmp_path / "quick.py", "import sys\nsys.stdin.read()\n")

    as_a_child = ["run", "--task", "t2", "--name", "par-t2", "--parent-run-id", "par"]
    child = run_cub([*as_a_child, *command_harness(quick)], project)
    assert child.returncode == 0, child.stdout + child.stderr
    assert "recovered run dead" not in child.stderr
    assert not (runs_dir(project) / "dead" / "run.json").exists()

    later = run_cub(["runs", "list"], project)
    assert "recovered run dead" in later.stderr
    assert read_run(project, "dead").state == "force_killed"


def test_the_helper_dies_with_the_run_that_started_it(tmp_path: Path) -> None:
    # A parallel run SIGKILLed: its helper ends (SIGTERM from the kernel, or the end of its
    # requests, whichever it sees first; its children get their SIGTERM when it is gone), so
    # nothing is left forking for a run that is gone.
    parent = write_script(
        tmp_path / "parent.py",
        """
        import sys
        from pathlib import Path
        from cub.modes.parallel.forkserver import ForkServer
        server = ForkServer(Path.cwd(), dict(__import__("os").environ))
        print(server._proc.pid, flush=True)
        sys.stdin.read()  # until killed
        """,
    )
    proc = subprocess.Popen(
        [str(parent)], cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    helper = psutil.Process(int(proc.stdout.readline()))
    assert helper.ppid() == proc.pid
    proc.kill()
    proc.wait()
    helper.wait(10)  # psutil.TimeoutExpired if it stays
    assert not helper.is_running()


def test_a_helper_whose_run_is_already_gone_does_not_stay(tmp_path: Path) -> None:
    # Its parent died before the death signal was armed: the pid it was given is not its
    # parent's, so it ends at once.
    done = subprocess.run(
        [sys.executable, "-m", "cub.cli.child_server", "1"],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == -signal.SIGTERM
