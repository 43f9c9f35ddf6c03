"""A swarm run's child without the swarm: `cub run --clone-url URL --clone-ref REF` in an empty
directory clones its workspace from a (local, bare) remote, runs, and pushes its branch and its
whole record back, however it ended. The swarm tests (tests/sandbox/test_swarm.py) run the same
child in containers on two nodes."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

import msgspec

from cub.records.schemas import RunRecord
from cub.workspace.records_ref import records_ref, write_tree
from tests.e2e.support import command_harness
from tests.helpers.agents import wait_for_file
from tests.helpers.cli import make_project, run_cub, start_cub, task
from tests.helpers.git import git

COMMITTING = """
import pathlib, subprocess
pathlib.Path("work.txt").write_text("done\\n")
subprocess.run(["git", "add", "work.txt"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "the work"], check=True)
"""
SLEEPING = """
import pathlib, time
pathlib.Path("started").touch()
time.sleep(60)
"""


def remote_with_base(tmp_path: Path, agent: str) -> str:
    """A bare remote holding a project (backlog and agent committed) at refs/cub/base/P-t1."""
    project = make_project(tmp_path / "project", [task("t1", "the task")])
    (project / "agent.py").write_text(textwrap.dedent(agent).lstrip())
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "backlog and agent")
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(project), str(remote))
    git(project, "push", "-q", str(remote), "HEAD:refs/cub/base/P-t1")
    return str(remote)


def child_argv(remote: str) -> list[str]:
    return ["run", "--task", "t1", "--name", "P-t1", "--parent-run-id", "P",
            "--clone-url", remote, "--clone-ref", "refs/cub/base/P-t1", "--main-ok",
            *command_harness("python3 ./agent.py")]  # fmt: skip


def pushed_record(remote: str, into: Path) -> RunRecord:
    """The record the child pushed, written out the way a parent writes it."""
    write_tree(Path(remote), records_ref("P-t1"), into)
    return msgspec.json.decode((into / "run.json").read_bytes(), type=RunRecord)


def test_a_child_clones_works_and_pushes_its_branch_and_record(tmp_path: Path) -> None:
    remote = remote_with_base(tmp_path, COMMITTING)
    here = tmp_path / "node"
    here.mkdir()

    done = run_cub(child_argv(remote), here)

    assert done.returncode == 0, done.stdout + done.stderr
    record = pushed_record(remote, tmp_path / "fetched")
    assert (record.run_id, record.parent_run_id, record.state) == ("P-t1", "P", "completed")
    assert record.branch is not None
    assert git(Path(remote), "log", "-1", "--format=%s", record.branch) == "the work"
    # The whole run directory came along: the attempt, its prompt, its log, the journal.
    fetched = tmp_path / "fetched"
    assert (fetched / "events.jsonl").is_file() and (fetched / "status.json").is_file()
    assert (fetched / "tasks" / "t1" / "task.json").is_file()
    assert (fetched / "tasks" / "t1" / "harness.log").is_file()


def test_an_interrupted_child_still_pushes_its_record(tmp_path: Path) -> None:
    remote = remote_with_base(tmp_path, SLEEPING)
    here = tmp_path / "node"
    here.mkdir()
    proc = start_cub(child_argv(remote), here)
    try:
        wait_for_file(here / "work" / "started", timeout=30)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()

    assert proc.returncode == 143, out + err
    record = pushed_record(remote, tmp_path / "fetched")
    assert (record.state, record.reason_code) == ("interrupted", "sigterm")


def test_a_refused_push_is_said_and_the_run_keeps_its_ending(tmp_path: Path) -> None:
    remote = remote_with_base(tmp_path, COMMITTING)
    hook = Path(remote) / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'no pushes today'\nexit 1\n")
    hook.chmod(0o755)
    here = tmp_path / "node"
    here.mkdir()

    done = run_cub(child_argv(remote), here)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "cub: could not push the run's results to" in done.stderr
    assert git(Path(remote), "for-each-ref", "refs/cub/records/") == ""


def test_a_remote_that_cannot_be_cloned_is_one_line(tmp_path: Path) -> None:
    here = tmp_path / "node"
    here.mkdir()

    done = run_cub(child_argv(str(tmp_path / "missing.git")), here)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"cannot clone {tmp_path / 'missing.git'}" in done.stderr
