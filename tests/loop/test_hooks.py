from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cub.hooks.scripts import (
    HOOK_POINTS,
    find_hooks,
    hook_env,
    run_hooks,
    user_hooks_dir,
)
from cub.records.redact import Redactor
from tests.helpers.agents import is_alive, wait_until


def write_hook(directory: Path, name: str, body: str, executable: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


def project_hooks(project: Path, point: str) -> Path:
    return project / ".cub" / "hooks" / f"{point}.d"


def run(point: str, project: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    options: dict[str, object] = {"env": {}, "timeout": 10.0}
    options.update(kwargs)
    return run_hooks(point, project_dir=project, **options)  # type: ignore[arg-type]


# A hook that leaves a TERM-ignoring child behind, records the child's pid and waits forever.
STUBBORN_HOOK = """
sh -c 'trap "" TERM; echo $$ > child.pid; while :; do sleep 0.1; done' &
while [ ! -s child.pid ]; do sleep 0.05; done
touch ready
while :; do sleep 0.1; done
"""


def test_hook_points_are_those_of_the_spec() -> None:
    assert HOOK_POINTS == (
        "pre-loop",
        "pre-task",
        "post-task",
        "on-error",
        "on-budget-warning",
        "post-loop",
    )


def test_user_hooks_run_before_project_hooks_each_sorted_by_name(project: Path) -> None:
    user_dir = user_hooks_dir("pre-task")
    assert user_dir == Path(os.environ["XDG_CONFIG_HOME"]) / "cub" / "hooks" / "pre-task.d"
    for name in ("20-user", "10-user"):
        write_hook(user_dir, name, f"echo {name} >> order.txt")
    for name in ("30-project", "05-project"):
        write_hook(project_hooks(project, "pre-task"), name, f"echo {name} >> order.txt")

    found = find_hooks("pre-task", project)
    result = run("pre-task", project)

    assert [p.name for p in found] == ["10-user", "20-user", "05-project", "30-project"]
    assert (project / "order.txt").read_text().split() == [p.name for p in found]
    assert [o.name for o in result.outcomes] == [p.name for p in found]
    assert not result.failed
    assert result.first_failure is None


def test_explicit_user_dir_replaces_the_default(project: Path, tmp_path: Path) -> None:
    write_hook(user_hooks_dir("post-loop"), "default", "true")
    write_hook(tmp_path / "elsewhere", "custom", "true")

    found = find_hooks("post-loop", project, user_dir=tmp_path / "elsewhere")

    assert [p.name for p in found] == ["custom"]


def test_hook_receives_cub_environment(project: Path, tmp_path: Path) -> None:
    write_hook(project_hooks(project, "post-task"), "dump-env", 'env > "$CUB_PROJECT_DIR/env.txt"')
    env = hook_env(
        "run-1",
        tmp_path / "runs" / "run-1",
        project,
        "claude",
        task_id="t-1",
        task_title="Add a thing",
        outcome="success",
        exit_code=0,
    )

    result = run("post-task", project, env=env)

    assert not result.failed
    dumped = dict(
        line.split("=", 1) for line in (project / "env.txt").read_text().splitlines() if "=" in line
    )
    assert dumped["CUB_HOOK"] == "post-task"
    assert dumped["CUB_RUN_ID"] == "run-1"
    assert dumped["CUB_RUN_DIR"] == str(tmp_path / "runs" / "run-1")
    assert dumped["CUB_PROJECT_DIR"] == str(project)
    assert dumped["CUB_HARNESS"] == "claude"
    assert dumped["CUB_TASK_ID"] == "t-1"
    assert dumped["CUB_TASK_TITLE"] == "Add a thing"
    assert dumped["CUB_TASK_OUTCOME"] == "success"
    assert dumped["CUB_EXIT_CODE"] == "0"
    assert "CUB_RUN_STATE" not in dumped
    assert dumped["HOME"] == os.environ["HOME"]  # the caller's environment is kept


def test_hook_env_sets_only_what_is_given(tmp_path: Path) -> None:
    env = hook_env("r", tmp_path, tmp_path, "command", run_state="interrupted")

    assert env == {
        "CUB_RUN_ID": "r",
        "CUB_RUN_DIR": str(tmp_path),
        "CUB_PROJECT_DIR": str(tmp_path),
        "CUB_HARNESS": "command",
        "CUB_RUN_STATE": "interrupted",
    }


def test_hooks_run_in_the_project_directory_by_default(project: Path, tmp_path: Path) -> None:
    write_hook(project_hooks(project, "pre-loop"), "where", "pwd > where.txt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    run("pre-loop", project)
    run("pre-loop", project, cwd=elsewhere)

    assert Path((project / "where.txt").read_text().strip()).resolve() == project.resolve()
    assert (elsewhere / "where.txt").exists()


def test_non_executable_files_are_skipped_and_reported(project: Path) -> None:
    hooks = project_hooks(project, "pre-task")
    write_hook(hooks, "10-runs", "echo ran >> ran.txt")
    not_executable = write_hook(hooks, "20-not-executable", "echo bad >> ran.txt", executable=False)
    (hooks / ".gitkeep").write_text("")
    (hooks / "subdir").mkdir()

    result = run("pre-task", project)

    assert [p.name for p in find_hooks("pre-task", project)] == ["10-runs"]
    assert [o.name for o in result.outcomes] == ["10-runs"]
    assert result.skipped == [str(not_executable)]
    assert (project / "ran.txt").read_text() == "ran\n"


def test_failing_hook_is_reported_and_later_hooks_still_run(project: Path) -> None:
    hooks = project_hooks(project, "pre-task")
    write_hook(hooks, "10-fails", "echo broken; exit 3")
    write_hook(hooks, "20-runs", "echo ran > ran.txt")

    result = run("pre-task", project)

    assert result.failed
    assert [o.exit_code for o in result.outcomes] == [3, 0]
    failure = result.first_failure
    assert failure is not None
    assert failure.name == "10-fails"
    assert failure.exit_code == 3
    assert not failure.timed_out
    assert failure.output_tail == "broken\n"
    assert (project / "ran.txt").exists()


def test_stop_on_failure_stops_at_the_first_failing_hook(project: Path) -> None:
    hooks = project_hooks(project, "pre-loop")
    write_hook(hooks, "10-fails", "exit 1")
    write_hook(hooks, "20-never", "echo ran > ran.txt")

    result = run("pre-loop", project, stop_on_failure=True)

    assert [o.name for o in result.outcomes] == ["10-fails"]
    assert result.failed
    assert not (project / "ran.txt").exists()


def test_hook_that_cannot_be_executed_is_a_failure_not_an_exception(project: Path) -> None:
    hooks = project_hooks(project, "on-error")
    no_shebang = hooks / "10-no-shebang"
    hooks.mkdir(parents=True)
    no_shebang.write_text("echo this is not a program\n")
    no_shebang.chmod(0o755)
    write_hook(hooks, "20-runs", "true")

    result = run("on-error", project)

    failure = result.first_failure
    assert failure is not None
    assert failure.name == "10-no-shebang"
    assert failure.exit_code is None
    assert failure.error is not None
    assert "Exec format error" in failure.output_tail
    assert result.outcomes[1].exit_code == 0


def test_timeout_kills_the_hook_and_the_children_it_started(project: Path) -> None:
    write_hook(project_hooks(project, "pre-task"), "stubborn", STUBBORN_HOOK)

    started = time.monotonic()
    result = run("pre-task", project, timeout=1.0)
    elapsed = time.monotonic() - started

    outcome = result.outcomes[0]
    assert outcome.timed_out
    assert result.failed
    # The child ignores SIGTERM: only the SIGKILL after the grace period stops it.
    assert elapsed >= 1.0 + 2.0 - 0.2
    child = int((project / "child.pid").read_text())
    # A zombie waiting for its reaper counts as gone.
    wait_until(
        lambda: not is_alive(child),
        timeout=5.0,
        what=f"the end of background child {child} after the hook's timeout",
    )


class Forced(BaseException):
    pass


@pytest.fixture
def alarm() -> Iterator[None]:
    def raise_forced(signum: int, frame: object) -> None:
        raise Forced

    previous = signal.signal(signal.SIGALRM, raise_forced)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.usefixtures("alarm")
def test_exception_while_a_hook_runs_kills_its_process_group(project: Path) -> None:
    write_hook(project_hooks(project, "post-loop"), "stubborn", STUBBORN_HOOK)
    signal.setitimer(signal.ITIMER_REAL, 1.0)

    with pytest.raises(Forced):
        run("post-loop", project, timeout=60.0)

    child = int((project / "child.pid").read_text())
    wait_until(
        lambda: not is_alive(child),
        timeout=5.0,
        what=f"the end of background child {child} after the interrupted hook",
    )


def test_hooks_log_gets_redacted_output_with_a_header_per_hook(
    project: Path, tmp_path: Path
) -> None:
    secret = "sk-" + "a1b2c3d4" * 4
    hooks = project_hooks(project, "post-task")
    write_hook(hooks, "10-leaks", f"echo 'token {secret}'; echo 'on stderr' >&2")
    write_hook(hooks, "20-fails", "echo nope; exit 2")
    log_dir = tmp_path / "run"

    result = run("post-task", project, log_dir=log_dir, redact=Redactor())

    log = (log_dir / "hooks.log").read_text()
    assert secret not in log
    assert "token [REDACTED]" in log
    assert "on stderr" in log
    headers = [line for line in log.splitlines() if line.startswith("===")]
    assert len(headers) == 2
    assert "post-task 10-leaks exit=0 duration=" in headers[0]
    assert "post-task 20-fails exit=2 duration=" in headers[1]
    assert result.outcomes[0].output_tail == "token [REDACTED]\non stderr\n"


def test_output_tail_keeps_the_end_of_long_output(project: Path) -> None:
    write_hook(
        project_hooks(project, "pre-task"),
        "chatty",
        "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done",
    )

    outcome = run("pre-task", project).outcomes[0]

    assert len(outcome.output_tail) <= 2048
    assert outcome.output_tail.endswith("line-1999\n")


def test_missing_hook_directories_give_an_empty_result(project: Path, tmp_path: Path) -> None:
    result = run("on-budget-warning", project, log_dir=tmp_path / "run")

    assert find_hooks("on-budget-warning", project) == []
    assert result.outcomes == []
    assert result.skipped == []
    assert not result.failed
    assert not (tmp_path / "run" / "hooks.log").exists()


def test_unknown_hook_point_is_a_programming_error(project: Path) -> None:
    with pytest.raises(ValueError, match="unknown hook point 'pre-commit'"):
        find_hooks("pre-commit", project)
