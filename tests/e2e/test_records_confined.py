"""Records stay inside the project: a symlinked runs directory is refused, an agent's planted
symlinks in the run's directory lead nothing outside, and cub's own names are not run names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cub.records.reader import runs_dir
from tests.e2e.support import assert_one_line_error, assert_rejected, command_harness
from tests.helpers.agents import write_script
from tests.helpers.cli import make_project, read_attempt, read_run, run_cub, run_dir, task

pytestmark = pytest.mark.timeout(60)

UNTOUCHED = "untouched\n"


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text() if p.is_file() else "<dir>"
        for p in sorted(root.rglob("*"))
    }


def test_a_symlinked_runs_directory_is_refused(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [task("t1")])
    outside = tmp_path / "outside"
    # What a dead run left there, for recovery to finish: it must not write there either.
    (outside / "ghost").mkdir(parents=True)
    (outside / "ghost" / "runner.lock").write_text("")
    runs_dir(project).parent.mkdir(parents=True, exist_ok=True)
    runs_dir(project).symlink_to(outside, target_is_directory=True)
    before = _tree(outside)

    result = run_cub(["run", *command_harness("true")], project)

    line = assert_one_line_error(result, "symlink", "runs")
    assert "fix its permissions" not in line
    assert _tree(outside) == before
    for command in (["status"], ["runs", "list"]):
        run_cub(command, project)
        assert _tree(outside) == before, command


def test_planted_symlinks_in_the_run_directory_lead_nothing_outside(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [task("t1"), task("t2"), task("t3")])
    outside = tmp_path / "outside"
    (outside / "dir2").mkdir(parents=True)
    for name in ("log3", "task1.json", "prompt3.md", "events.jsonl", "hooks.log"):
        (outside / name).write_text(UNTOUCHED)
    hook = project / ".cub" / "hooks" / "post-task.d" / "say"
    hook.parent.mkdir(parents=True)
    hook.write_text("#!/bin/sh\necho post-task hook ran\n")
    hook.chmod(0o755)
    agent = write_script(
        tmp_path / "agent.py",
        f"""
import os
outside = {str(outside)!r}
run = os.environ["CUB_RUN_DIR"]
task = os.environ["CUB_TASK_ID"]
print("hello from", task, flush=True)
if task == "t1":
    os.makedirs(os.path.join(run, "tasks", "t3"), exist_ok=True)
    plant = {{
        os.path.join(run, "tasks", "t2"): os.path.join(outside, "dir2"),
        os.path.join(run, "tasks", "t3", "harness.log"): os.path.join(outside, "log3"),
        os.path.join(run, "tasks", "t3", "prompt.md"): os.path.join(outside, "prompt3.md"),
        os.path.join(run, "tasks", "t1", "task.json"): os.path.join(outside, "task1.json"),
    }}
    for link, target in plant.items():
        os.symlink(target, link)
    for name in ("events.jsonl", "hooks.log"):
        path = os.path.join(run, name)
        if os.path.exists(path):
            os.rename(path, path + ".moved")
        os.symlink(os.path.join(outside, name), path)
""",
    )
    before = _tree(outside)

    result = run_cub(["run", *command_harness(agent)], project)

    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert _tree(outside) == before
    record = read_run(project)
    assert (record.state, record.tasks.succeeded) == ("completed", 3), record.reason
    tasks = run_dir(project) / "tasks"
    for task_id in ("t1", "t2", "t3"):
        assert read_attempt(project, task_id).outcome == "succeeded"
        for name in ("task.json", "harness.log", "prompt.md"):
            path = tasks / task_id / name
            assert not path.is_symlink() and path.is_file(), path
        assert f"hello from {task_id}" in (tasks / task_id / "harness.log").read_text()
    assert not (tasks / "t2").is_symlink()
    events = run_dir(project) / "events.jsonl"
    assert not events.is_symlink()
    assert events.read_text().strip()  # the journal went on, in the run's own directory
    hooks_log = run_dir(project) / "hooks.log"
    assert not hooks_log.is_symlink() and "post-task hook ran" in hooks_log.read_text()


@pytest.mark.parametrize("name", ["latest", ".latest.1.tmp"])
def test_names_cub_uses_in_the_runs_directory_are_rejected(tmp_path: Path, name: str) -> None:
    project = make_project(tmp_path / "proj", [task("t1")])

    result = run_cub(["run", "--ready", "--name", name], project)

    record = assert_rejected(result, project, "invalid_name", "--name", repr(name), "reserved")
    assert record.run_id != name
    # A rejection never takes `latest`, and nothing else made it.
    assert not os.path.lexists(runs_dir(project) / "latest")
