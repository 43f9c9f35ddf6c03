"""Every refusal of SPEC §5, through the real `cub run` process.

Each rejected invocation must exit 2, say on one stderr line what is wrong (naming the flags, the
file and line, or the key), print no traceback, and leave a `validation_rejected` run record with
the machine's reason_code and a journal.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cub.records.location import runs_dir
from tests.e2e.support import (
    assert_no_traceback,
    assert_one_line_error,
    assert_rejected,
    command_harness,
    stderr_lines,
)
from tests.helpers.cli import (
    CUB,
    cub_env,
    make_project,
    read_run,
    read_tasks,
    run_cub,
    run_dir,
    task,
    write_tasks,
)
from tests.helpers.exit_paths import assert_ending, exit_path
from tests.helpers.git import git, make_repo

pytestmark = pytest.mark.timeout(60)

OK_HARNESS = command_harness("true")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj", [task("a"), task("b")])


# --------------------------------------------------------------------------- flag conflicts

CONFLICTS = [
    # (extra args, words the message must contain)
    (["--direct", "hi", "--task", "a"], ["--direct", "--task"]),
    (["--direct", "hi", "--epic", "e1"], ["--direct", "--epic"]),
    (["--direct", "hi", "--label", "x"], ["--direct", "--label"]),
    (["--direct", "hi", "--ready"], ["--direct", "--ready"]),
    (["--direct", "hi", "--parallel", "2"], ["--direct", "--parallel"]),
    (["--direct", "hi", "--gh-issue", "7"], ["--direct", "--gh-issue"]),
    (["--gh-issue", "7", "--task", "a"], ["--gh-issue", "--task"]),
    (["--gh-issue", "7", "--epic", "e1"], ["--gh-issue", "--epic"]),
    (["--gh-issue", "7", "--label", "x"], ["--gh-issue", "--label"]),
    (["--gh-issue", "7", "--ready"], ["--gh-issue", "--ready"]),
    (["--gh-issue", "7", "--parallel", "2"], ["--gh-issue", "--parallel"]),
    (["--once", "--parallel", "2"], ["--once", "--parallel"]),
    (["--ready", "--sandbox"], ["--ready", "--sandbox"]),
    (["--ready", "--parallel", "2"], ["--ready", "--parallel"]),
    (["--from-branch", "main", "--use-current-branch"], ["--from-branch", "--use-current-branch"]),
    (["--no-network"], ["--no-network", "--sandbox"]),
    (["--sandbox-keep"], ["--sandbox-keep", "--sandbox"]),
    (["--worktree-keep", "--in-place"], ["--worktree-keep", "--in-place"]),
    (["--worktree", "--in-place"], ["--worktree", "--in-place"]),
    (["--worktree", "--use-current-branch"], ["--worktree", "--use-current-branch"]),
    (["--allow-dirty"], ["--allow-dirty", "--in-place"]),
    (["--in-place", "--sandbox"], ["--in-place", "--sandbox"]),
    (["--harness", "claude", "--harness-cmd", "true"], ["--harness-cmd", "--harness claude"]),
]


@pytest.mark.parametrize(
    ("args", "words"), CONFLICTS, ids=[" ".join(args) for args, _ in CONFLICTS]
)
def test_flag_conflict_is_rejected_naming_both_flags(
    project: Path, args: list[str], words: list[str]
) -> None:
    # Docker is pointed nowhere: a conflict must be reported before anything is contacted.
    result = run_cub(["run", *args], project, env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    line = assert_one_line_error(result, *words)
    assert_rejected(result, project, "flag_conflict", *words)
    # The explanation says why, not only which flags.
    assert len(line.split(":", 2)[-1].split()) >= 4, line
    assert all(t["status"] == "open" for t in read_tasks(project).values())


# ------------------------------------------------------------------- environment and harness


def test_sandbox_without_docker_engine_names_docker_host(project: Path) -> None:
    result = run_cub(
        ["run", "--sandbox", *OK_HARNESS],
        project,
        env={"DOCKER_HOST": "unix:///nonexistent.sock"},
    )
    record = assert_rejected(
        result, project, "docker_unavailable", "--sandbox", "DOCKER_HOST=unix:///nonexistent.sock"
    )
    assert record.mode == "sandbox"


def test_command_harness_without_a_command(project: Path) -> None:
    result = run_cub(["run", "--harness", "command"], project)
    assert_rejected(
        result, project, "missing_harness_command", "--harness command", "--harness-cmd"
    )


def test_unknown_harness_is_named_as_the_flag(project: Path) -> None:
    result = run_cub(["run", "--harness", "nope"], project)
    assert_rejected(result, project, "unknown_harness", "--harness", "'nope'", "claude", "command")


def _restricted_path(tmp_path: Path) -> str:
    """A PATH with only git and python on it."""
    bin_dir = tmp_path / "restricted-bin"
    bin_dir.mkdir()
    git_path = shutil.which("git")
    assert git_path is not None
    (bin_dir / "git").symlink_to(git_path)
    (bin_dir / "python3").symlink_to(sys.executable)
    (bin_dir / "python").symlink_to(sys.executable)
    return str(bin_dir)


def test_harness_program_not_installed(project: Path, tmp_path: Path) -> None:
    result = run_cub(
        ["run", "--harness", "claude"], project, env={"PATH": _restricted_path(tmp_path)}
    )
    record = assert_rejected(result, project, "harness_not_found", "claude", "PATH")
    assert record.harness is None


def test_no_harness_found_names_what_was_looked_for(project: Path, tmp_path: Path) -> None:
    result = run_cub(["run"], project, env={"PATH": _restricted_path(tmp_path)})
    assert_rejected(result, project, "harness_not_found", "claude", "codex", "opencode", "gemini")


def test_harness_cmd_program_not_installed(project: Path, tmp_path: Path) -> None:
    result = run_cub(
        ["run", *command_harness("no-such-agent-program --flag")],
        project,
        env={"PATH": _restricted_path(tmp_path)},
    )
    assert_rejected(result, project, "harness_not_found", "no-such-agent-program")


# ------------------------------------------------------------------------------- --direct


def test_direct_from_missing_file(project: Path) -> None:
    result = run_cub(["run", "--direct", "@missing.md", *OK_HARNESS], project)
    record = assert_rejected(result, project, "invalid_direct_input", "--direct", "missing.md")
    assert record.mode == "direct"


def test_direct_stdin_that_is_a_terminal(project: Path) -> None:
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [*CUB, "run", "--direct", "-", *OK_HARNESS],
            cwd=project,
            env=cub_env(),
            stdin=terminal,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert_rejected(result, project, "invalid_direct_input", "--direct -", "terminal")


def test_direct_stdin_that_is_empty(project: Path) -> None:
    result = run_cub(["run", "--direct", "-", *OK_HARNESS], project, input="")
    assert_rejected(result, project, "invalid_direct_input", "--direct", "stdin", "empty")


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_direct_text_that_is_empty(project: Path, text: str) -> None:
    result = run_cub(["run", "--direct", text, *OK_HARNESS], project)
    assert_rejected(result, project, "invalid_direct_input", "--direct", "empty")


# ---------------------------------------------------------------------------------- config


def _write_config(project: Path, text: str) -> None:
    (project / ".cub" / "config.json").write_text(text)


def test_config_that_does_not_parse_names_file_and_line(project: Path) -> None:
    _write_config(project, '{\n  "loop": {\n    "max_attempts": 2,,\n  }\n}\n')
    result = run_cub(["run", *OK_HARNESS], project)
    assert_rejected(result, project, "invalid_config", ".cub/config.json", "line 3", "JSON")


def test_config_unknown_key_names_the_key_path(project: Path) -> None:
    _write_config(project, json.dumps({"loop": {"on_falure": "retry"}}))
    result = run_cub(["run", *OK_HARNESS], project)
    assert_rejected(result, project, "invalid_config", ".cub/config.json", "loop.on_falure")


def test_config_wrong_type_names_key_and_type(project: Path) -> None:
    _write_config(project, json.dumps({"loop": {"max_attempts": "three"}}))
    result = run_cub(["run", *OK_HARNESS], project)
    assert_rejected(
        result, project, "invalid_config", ".cub/config.json", "loop.max_attempts", "int"
    )


def test_user_config_error_names_the_user_file(project: Path, isolated_home: Path) -> None:
    user_config = isolated_home / ".config" / "cub" / "config.json"
    user_config.parent.mkdir(parents=True)
    user_config.write_text(json.dumps({"hooks": {"fail_fast": "yes"}}))
    result = run_cub(["run", *OK_HARNESS], project)
    assert_rejected(result, project, "invalid_config", str(user_config), "hooks.fail_fast")


# ------------------------------------------------------------------------------- task file


def _write_task_lines(project: Path, *lines: str) -> None:
    (project / ".cub" / "tasks.jsonl").write_text("".join(line + "\n" for line in lines))


def test_task_file_bad_line_names_file_and_line(project: Path) -> None:
    _write_task_lines(project, json.dumps(task("a")), '{"id": "b", oops}')
    result = run_cub(["run", *OK_HARNESS], project)
    assert_rejected(result, project, "invalid_task_file", ".cub/tasks.jsonl:2", "JSON")


def test_task_file_bad_field_names_line_and_key(project: Path) -> None:
    _write_task_lines(project, json.dumps(task("a")), json.dumps(task("b", priority=9)))
    result = run_cub(["run", *OK_HARNESS], project)
    assert_rejected(result, project, "invalid_task_file", ".cub/tasks.jsonl:2", "priority")


def test_task_file_unsafe_task_id(project: Path) -> None:
    _write_task_lines(project, json.dumps(task("a")), json.dumps(task("../x")))
    result = run_cub(["run", *OK_HARNESS], project)
    assert_rejected(result, project, "invalid_task_file", ".cub/tasks.jsonl:2", "'../x'")
    # No directory was made from the id, inside the run or beside it.
    assert not (run_dir(project) / "tasks").exists()
    assert not (runs_dir(project) / "x").exists()
    assert not (project / ".cub" / "x").exists()


def test_task_file_duplicate_ids(project: Path) -> None:
    _write_task_lines(project, json.dumps(task("a")), json.dumps(task("b")), json.dumps(task("a")))
    result = run_cub(["run", *OK_HARNESS], project)
    assert_rejected(
        result, project, "invalid_task_file", ".cub/tasks.jsonl:3", "duplicate", "'a'", "line 1"
    )


def test_task_that_does_not_exist(project: Path) -> None:
    result = run_cub(["run", "--task", "zzz", *OK_HARNESS], project)
    assert_rejected(result, project, "task_not_found", "--task", "zzz")


# ---------------------------------------------------------------------------------- --name


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "bad name"])
def test_invalid_name(project: Path, name: str) -> None:
    result = run_cub(["run", "--name", name, *OK_HARNESS], project)
    record = assert_rejected(result, project, "invalid_name", "--name", repr(name))
    assert record.run_id != name
    assert not (runs_dir(project) / "x").exists()
    assert not (project / ".cub" / "x").exists()


def test_name_of_an_existing_run(project: Path) -> None:
    first = run_cub(["run", "--name", "nightly", "--ready"], project)
    assert first.returncode == 0, first.stderr
    assert read_run(project, "nightly").state == "completed"

    result = run_cub(["run", "--name", "nightly", *OK_HARNESS], project)
    record = assert_rejected(result, project, "invalid_name", "'nightly'", "already exists")
    assert record.run_id != "nightly"
    # The existing run's record is untouched.
    assert read_run(project, "nightly").state == "completed"
    assert all(t["status"] == "open" for t in read_tasks(project).values())


# --------------------------------------------------------------------------------- branches


def test_use_current_branch_on_main_needs_main_ok(project: Path) -> None:
    result = run_cub(["run", "--use-current-branch", *OK_HARNESS], project)
    assert_rejected(result, project, "main_branch", "--use-current-branch", "'main'", "--main-ok")
    assert git(project, "branch", "--show-current") == "main"


def test_main_ok_lets_use_current_branch_pass(project: Path) -> None:
    write_tasks(project, [])
    result = run_cub(["run", "--use-current-branch", "--main-ok", *OK_HARNESS], project)
    assert result.returncode == 0, result.stderr
    record = read_run(project)
    assert record.state == "completed"
    assert record.branch == "main"
    assert git(project, "branch", "--show-current") == "main"


def test_use_current_branch_on_master_needs_main_ok(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [task("a")], branch="master")
    result = run_cub(["run", "--use-current-branch", *OK_HARNESS], project)
    assert_rejected(result, project, "main_branch", "'master'", "--main-ok")


def test_main_ok_without_a_main_branch_is_a_no_op(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [], branch="feature")
    result = run_cub(["run", "--in-place", "--main-ok", *OK_HARNESS], project)
    assert result.returncode == 0, result.stderr
    record = read_run(project)
    assert record.state == "completed"
    assert record.branch == "feature"
    assert git(project, "branch", "--show-current") == "feature"


def test_a_run_works_on_a_branch_of_its_own_whatever_the_checkout_is_on(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [task("a")], branch="feature")
    committing = "git commit -q --allow-empty -m work"
    result = run_cub(["run", "--harness", "command", "--harness-cmd", committing], project)
    assert result.returncode == 0, result.stderr
    record = read_run(project)
    assert record.branch is not None and record.branch.startswith("cub/")
    assert git(project, "merge-base", "feature", record.branch) == git(
        project, "rev-parse", "feature"
    )
    assert git(project, "branch", "--show-current") == "feature"


@exit_path("reject", "validating", "dirty_worktree")
def test_in_place_refuses_a_checkout_with_uncommitted_changes(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [task("a")])
    (project / "README.md").write_text("the user's unsaved edit\n")
    result = run_cub(["run", "--in-place", *OK_HARNESS], project)
    assert_rejected(result, project, "dirty_worktree", "--in-place", "README.md", "--allow-dirty")
    assert_ending(project, result.returncode, "reject", "validating", "dirty_worktree")
    assert git(project, "branch", "--show-current") == "main"
    assert read_tasks(project)["a"]["status"] == "open"

    allowed = run_cub(["run", "--in-place", "--allow-dirty", *OK_HARNESS], project)
    assert allowed.returncode == 0, allowed.stderr
    # Without --in-place the edit is simply not the run's business: it stays where it is.
    (project / "README.md").write_text("another edit\n")
    run_cub(["tasks", "add", "b"], project)
    isolated = run_cub(["run", *OK_HARNESS], project)
    assert isolated.returncode == 0, isolated.stderr
    assert (project / "README.md").read_text() == "another edit\n"


# ------------------------------------------------------------------------ project and git


def test_not_a_git_repository(tmp_path: Path) -> None:
    project = tmp_path / "plain"
    project.mkdir()
    write_tasks(project, [task("a")])
    result = run_cub(["run", *OK_HARNESS], project)
    assert_rejected(result, project, "not_a_git_repo", str(project), "git")


def test_ready_works_outside_git(tmp_path: Path) -> None:
    project = tmp_path / "plain"
    project.mkdir()
    write_tasks(project, [task("a", "first thing")])
    result = run_cub(["run", "--ready"], project)
    assert result.returncode == 0, result.stderr
    assert "first thing" in result.stdout
    record = read_run(project)
    assert (record.state, record.mode, record.reason_code) == ("completed", "dry-run", "dry_run")


def test_no_task_backend_suggests_cub_init(tmp_path: Path) -> None:
    project = make_repo(tmp_path / "repo")
    result = run_cub(["run", *OK_HARNESS], project)
    assert_rejected(result, project, "no_backend", "tasks.jsonl", "cub init")


def test_invalid_duration(project: Path) -> None:
    result = run_cub(["run", "--grace", "abc", *OK_HARNESS], project)
    assert_rejected(result, project, "invalid_flag", "--grace", "'abc'")


@pytest.mark.parametrize("flag", ["--timeout", "--task-timeout", "--idle-timeout"])
def test_invalid_durations_of_every_flag(project: Path, flag: str) -> None:
    result = run_cub(["run", flag, "soon", *OK_HARNESS], project)
    assert_rejected(result, project, "invalid_flag", flag, "'soon'")


# ----------------------------------------------------------------------- click usage errors

USAGE_ERRORS = [
    (["--bogus"], ["--bogus"]),
    (["--parallel", "99"], ["--parallel", "99"]),
    (["--max-iterations", "x"], ["--max-iterations", "'x'"]),
    (["--on-failure", "sometimes"], ["--on-failure", "sometimes"]),
    (["--task"], ["--task"]),
]


@pytest.mark.parametrize(
    ("args", "words"), USAGE_ERRORS, ids=[" ".join(args) for args, _ in USAGE_ERRORS]
)
def test_usage_error_in_a_project_leaves_a_record(
    project: Path, args: list[str], words: list[str]
) -> None:
    result = run_cub(["run", *args], project)
    record = assert_rejected(result, project, "usage_error", *words)
    assert record.argv == ["run", *args]


def test_usage_error_with_json_still_prints_a_record(project: Path) -> None:
    result = run_cub(["run", "--json", "--bogus"], project)
    assert result.returncode == 2
    assert_no_traceback(result)
    payload = json.loads(result.stdout)
    assert payload["state"] == "validation_rejected"
    assert payload["reason_code"] == "usage_error"
    assert payload["run_id"] == read_run(project).run_id


@pytest.mark.parametrize(
    "args",
    [["--bogus"], ["--no-network"], ["--parallel", "99"], ["--name", "../x"]],
    ids=lambda a: " ".join(a),
)
def test_rejection_outside_any_project(tmp_path: Path, args: list[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cub(["run", *args], empty)
    assert_one_line_error(result, args[0])
    assert list(empty.iterdir()) == [], "a rejection outside a project must not create files"


# ------------------------------------------------------------------ records not writable


def test_rejection_when_runs_dir_cannot_be_created(project: Path) -> None:
    # Works as root too: nothing can create a directory where a file is.
    runs_dir(project).parent.mkdir(parents=True, exist_ok=True)
    runs_dir(project).write_text("not a directory\n")
    result = run_cub(["run", "--no-network"], project)
    assert result.returncode == 2
    assert_no_traceback(result)
    lines = stderr_lines(result)
    assert "--no-network" in lines[-1] and "--sandbox" in lines[-1]
    assert len(lines) <= 2, result.stderr  # at most: cannot write records + the rejection
    assert runs_dir(project).read_text() == "not a directory\n"


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """``directory`` cannot be written to, for the body of the ``with``: chmod 0500 for a user;
    for root, who writes through permissions, a read-only bind mount of it onto itself."""
    if os.geteuid() != 0:
        directory.chmod(0o500)
        try:
            yield
        finally:
            directory.chmod(0o700)
        return
    where = str(directory.resolve())
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("running as root, and there is no mount(8) to make a read-only directory")
    bound = _mount("--bind", where, where)
    if bound.returncode != 0:
        pytest.skip(f"running as root, and a bind mount is not permitted: {bound.stderr.strip()}")
    try:
        made_read_only = _mount("-o", "remount,bind,ro", where, where)
        if made_read_only.returncode != 0:
            pytest.skip(f"cannot remount read-only: {made_read_only.stderr.strip()}")
        with pytest.raises(OSError):
            (directory / "probe").touch()  # the mount really refuses writes, even root's
        yield
    finally:
        unmounted = subprocess.run(["umount", where], capture_output=True, text=True, timeout=30)
        assert unmounted.returncode == 0, unmounted.stderr


def test_rejection_when_cub_dir_is_read_only(project: Path) -> None:
    cub_dir = project / ".cub"
    with read_only(cub_dir):
        result = run_cub(["run", "--once", "--parallel", "2"], project)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "--once" in stderr_lines(result)[-1]
    # Records are not kept in .cub/: the rejection has one all the same.
    assert read_run(project).state == "validation_rejected"


def test_valid_run_whose_records_cannot_be_written_does_no_work(project: Path) -> None:
    runs_dir(project).parent.mkdir(parents=True, exist_ok=True)
    runs_dir(project).write_text("not a directory\n")
    result = run_cub(["run", *OK_HARNESS], project)
    assert_no_traceback(result)
    assert result.returncode == 2, result.stderr
    assert ".git/cub/runs" in stderr_lines(result)[-1]
    assert git(project, "branch", "--show-current") == "main"
    assert git(project, "branch", "--list", "cub/*") == ""
    assert all(t.get("attempts", 0) == 0 for t in read_tasks(project).values())
