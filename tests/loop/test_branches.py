from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cub.errors import SetupFailed
from cub.workspace.branches import (
    BranchSetup,
    HeadTracker,
    branch_name_for,
    prepare_branch,
)
from cub.workspace.git import common_dir, repo_root
from tests.helpers.git import git, make_repo

PROTECTED = ("main", "master")


def valid_branch_name(name: str) -> bool:
    proc = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True)
    return proc.returncode == 0


def prepare(repo: Path, **kwargs: object) -> BranchSetup:
    options: dict[str, object] = {
        "protected": PROTECTED,
        "use_current_branch": False,
        "from_branch": None,
        "wanted": "cub/r-1",
    }
    options.update(kwargs)
    return prepare_branch(repo, **options)  # type: ignore[arg-type]


def commit_file(repo: Path, name: str, text: str = "x\n") -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"add {name}")
    return git(repo, "rev-parse", "HEAD")


def on_branch(repo: Path) -> str:
    return git(repo, "symbolic-ref", "--short", "HEAD")


# --- names ---------------------------------------------------------------------------------


def test_branch_names_by_flag() -> None:
    common = {"task_id": None, "epic": None, "gh_issue": None, "issue_slug": None}
    assert branch_name_for("20240101-abc", **common) == "cub/20240101-abc"  # type: ignore[arg-type]
    assert branch_name_for("r", **{**common, "task_id": "cub-042"}) == "task/cub-042"  # type: ignore[arg-type]
    assert branch_name_for("r", **{**common, "epic": "auth"}) == "feature/auth"  # type: ignore[arg-type]
    assert branch_name_for("r", **{**common, "prefix": "bots/cub-"}) == "bots/cub-r"  # type: ignore[arg-type]


def test_issue_branch_gets_a_short_lowercase_slug() -> None:
    name = branch_name_for(
        "r",
        task_id=None,
        epic=None,
        gh_issue=17,
        issue_slug="Crash when the config file has a BOM -- and also other things!!!",
    )

    assert name == "fix/issue-17-crash-when-the-config-file-has-a-bom-and"
    assert len(name.removeprefix("fix/issue-17-")) <= 40
    assert (
        branch_name_for("r", task_id=None, epic=None, gh_issue=5, issue_slug="!!!") == "fix/issue-5"
    )


@pytest.mark.parametrize(
    "task_id",
    [
        "a..b",
        "x.lock",
        "-lead",
        "has space",
        "we~ird^:?*[",
        "a@{1}",
        "@",
        ".hidden",
        "trailing.",
        "slash/inside",
        "ünïcode",
        "back\\slash",
        "ctrl\x01char",
        "..",
        "/",
    ],
)
def test_hostile_task_ids_still_give_valid_branch_names(task_id: str) -> None:
    name = branch_name_for("r", task_id=task_id, epic=None, gh_issue=None, issue_slug=None)

    assert name.startswith("task")
    assert valid_branch_name(name), name


@settings(max_examples=60, deadline=None)
@given(text=st.text(min_size=1, max_size=60), which=st.sampled_from(["task", "epic", "run"]))
def test_any_input_gives_a_valid_branch_name(text: str, which: str) -> None:
    if "\x00" in text:
        text = text.replace("\x00", "")
    name = branch_name_for(
        text if which == "run" else "r",
        task_id=text if which == "task" else None,
        epic=text if which == "epic" else None,
        gh_issue=None,
        issue_slug=None,
    )
    assert valid_branch_name(name), name


@settings(max_examples=30, deadline=None)
@given(title=st.text(max_size=120), number=st.integers(min_value=1, max_value=10**6))
def test_any_issue_title_gives_a_valid_branch_name(title: str, number: int) -> None:
    name = branch_name_for("r", task_id=None, epic=None, gh_issue=number, issue_slug=title)
    assert valid_branch_name(name), name


# --- switching -----------------------------------------------------------------------------


def test_on_main_in_a_fresh_repository_creates_the_run_branch(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    head = git(repo, "rev-parse", "HEAD")

    setup = prepare(repo)

    assert setup == BranchSetup(
        branch="cub/r-1", created=True, base_commit=head, previous_branch="main"
    )
    assert on_branch(repo) == "cub/r-1"
    assert git(repo, "remote") == ""


def test_on_master_too(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", branch="master")

    assert prepare(repo).created
    assert on_branch(repo) == "cub/r-1"


def test_on_a_feature_branch_stays(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "switch", "-q", "-c", "my-feature")

    setup = prepare(repo)

    assert setup.branch == "my-feature"
    assert not setup.created
    assert setup.previous_branch == "my-feature"
    assert on_branch(repo) == "my-feature"
    assert git(repo, "branch", "--list", "cub/r-1") == ""


def test_use_current_branch_stays_even_on_main(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")

    setup = prepare(repo, use_current_branch=True)

    assert setup.branch == "main"
    assert not setup.created
    assert setup.base_commit == git(repo, "rev-parse", "HEAD")
    assert on_branch(repo) == "main"


def test_use_current_branch_refuses_a_detached_head(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "switch", "-q", "--detach")

    with pytest.raises(SetupFailed, match="HEAD is detached") as info:
        prepare(repo, use_current_branch=True)
    assert info.value.reason_code == "branch_failed"


def test_detached_head_gets_the_run_branch(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "switch", "-q", "--detach")

    setup = prepare(repo)

    assert setup.created
    assert setup.previous_branch is None
    assert setup.base_commit == head
    assert on_branch(repo) == "cub/r-1"


def test_from_branch_creates_the_branch_from_that_ref(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "switch", "-q", "-c", "develop")
    develop_head = commit_file(repo, "develop.txt")
    git(repo, "switch", "-q", "main")
    commit_file(repo, "main-only.txt")

    setup = prepare(repo, from_branch="develop", wanted="task/t-1")

    assert setup.created
    assert setup.base_commit == develop_head
    assert on_branch(repo) == "task/t-1"
    assert git(repo, "rev-parse", "HEAD") == develop_head
    assert git(repo, "merge-base", "HEAD", "develop") == develop_head
    assert not (repo / "main-only.txt").exists()


def test_from_a_remote_tracking_branch_sets_no_upstream(tmp_path: Path) -> None:
    upstream = make_repo(tmp_path / "upstream")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(upstream), str(clone))

    setup = prepare(clone, from_branch="origin/main")

    assert setup.created
    assert on_branch(clone) == "cub/r-1"
    # The run branch must not push to, or pull from, the branch it started from.
    probe = subprocess.run(
        ["git", "config", "--get", "branch.cub/r-1.remote"],
        cwd=clone,
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 1, probe.stdout


def test_from_branch_can_be_a_commit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    first = git(repo, "rev-parse", "HEAD")
    commit_file(repo, "second.txt")

    setup = prepare(repo, from_branch=first[:10])

    assert setup.base_commit == first
    assert git(repo, "rev-parse", "HEAD") == first


def test_bad_from_branch_is_a_setup_failure_naming_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")

    with pytest.raises(SetupFailed) as info:
        prepare(repo, from_branch="no-such-branch")

    assert info.value.reason_code == "branch_failed"
    assert str(info.value) == "--from-branch no-such-branch: no such branch or commit"
    assert on_branch(repo) == "main"


def test_existing_branch_is_switched_to_not_reset(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "switch", "-q", "-c", "cub/r-1")
    earlier_work = commit_file(repo, "earlier-work.txt")
    git(repo, "switch", "-q", "main")
    commit_file(repo, "newer-main.txt")

    setup = prepare(repo)

    assert not setup.created
    assert setup.branch == "cub/r-1"
    assert setup.base_commit == earlier_work
    assert on_branch(repo) == "cub/r-1"
    assert (repo / "earlier-work.txt").exists()
    assert not (repo / "newer-main.txt").exists()


def test_uncommitted_changes_come_along(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "README.md").write_text("edited\n")
    (repo / "new.txt").write_text("untracked\n")

    prepare(repo)

    assert on_branch(repo) == "cub/r-1"
    assert (repo / "README.md").read_text() == "edited\n"
    assert (repo / "new.txt").exists()


def test_conflicting_local_changes_are_a_setup_failure_with_gits_reason(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "switch", "-q", "-c", "cub/r-1")
    commit_file(repo, "README.md", "changed on the run branch\n")
    git(repo, "switch", "-q", "main")
    (repo / "README.md").write_text("uncommitted edit on main\n")

    with pytest.raises(SetupFailed) as info:
        prepare(repo)

    message = str(info.value)
    assert info.value.reason_code == "branch_failed"
    assert "\n" not in message
    assert message.startswith("cannot switch to cub/r-1: ")
    assert "local changes" in message
    assert on_branch(repo) == "main"
    assert (repo / "README.md").read_text() == "uncommitted edit on main\n"


def test_repository_without_commits_works(tmp_path: Path) -> None:
    repo = tmp_path / "unborn"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "draft.txt").write_text("not committed\n")

    setup = prepare(repo)

    assert setup == BranchSetup(
        branch="cub/r-1", created=True, base_commit=None, previous_branch="main"
    )
    assert on_branch(repo) == "cub/r-1"
    assert (repo / "draft.txt").exists()
    # The first commit lands on the run branch.
    commit_file(repo, "first.txt")
    assert git(repo, "branch", "--list", "--format=%(refname:short)") == "cub/r-1"


def test_repository_without_commits_with_use_current_branch(tmp_path: Path) -> None:
    repo = tmp_path / "unborn"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "trunk")

    setup = prepare(repo, use_current_branch=True)

    assert setup == BranchSetup(
        branch="trunk", created=False, base_commit=None, previous_branch="trunk"
    )


# --- the commits each task adds (HeadTracker) ----------------------------------------------


@pytest.fixture
def git_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `git` first on PATH that notes each call in a file, then runs the real git."""
    real = shutil.which("git")
    assert real is not None
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir()
    log = tmp_path / "git-calls.log"
    shim = shim_dir / "git"
    shim.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim_dir}{os.pathsep}{os.environ['PATH']}")
    log.touch()
    return log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


def tracking(repo: Path) -> tuple[HeadTracker, str]:
    """A tracker with its first task started, and that task's base commit."""
    tracker = HeadTracker(repo)
    base = tracker.start()
    assert base is not None
    return tracker, base


def short(repo: Path, commit: str) -> str:
    return git(repo, "rev-parse", "--short", commit)


def test_head_tracker_asks_git_nothing_while_no_task_commits(
    tmp_path: Path, git_calls: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    tracker = HeadTracker(repo)
    assert tracker.start() == git(repo, "rev-parse", "HEAD")
    asked = len(calls(git_calls))

    for _ in range(3):  # three tasks that commit nothing
        assert tracker.commits() is None
        tracker.start()

    assert len(calls(git_calls)) == asked


def test_head_tracker_first_start_is_one_git_process(tmp_path: Path, git_calls: Path) -> None:
    """Where HEAD's files are and HEAD itself (full and as git abbreviates it) come from one
    `rev-parse`, checked against the ref files read after it."""
    repo = make_repo(tmp_path / "repo")
    expected = git(repo, "rev-parse", "HEAD")
    asked = len(calls(git_calls))
    tracker = HeadTracker(repo)
    assert tracker.start() == expected
    assert len(calls(git_calls)) == asked + 1
    head = commit_file(repo, "one.txt")
    assert tracker.commits() == f"{short(repo, expected)}..{short(repo, head)}"


def test_repo_root_names_the_common_dir_the_worktree_lock_needs(
    tmp_path: Path, git_calls: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    asked = len(calls(git_calls))
    root = repo_root(repo)
    assert root == repo.resolve()
    assert common_dir(root) == repo.resolve() / ".git"
    assert len(calls(git_calls)) == asked + 1


def test_head_tracker_range_of_each_task_matches_git(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    tracker, first = tracking(repo)
    one = commit_file(repo, "one.txt")
    commit_file(repo, "two.txt")
    three = git(repo, "rev-parse", "HEAD")
    assert tracker.commits() == f"{short(repo, first)}..{short(repo, three)}"

    tracker.start()
    assert tracker.commits() is None  # the next task committed nothing
    tracker.start()
    four = commit_file(repo, "four.txt")
    assert tracker.commits() == f"{short(repo, three)}..{short(repo, four)}"
    assert one != four


def test_head_tracker_sees_commits_with_packed_refs_and_detached_head(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "pack-refs", "--all")  # no loose ref for main any more
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    tracker, base = tracking(repo)
    assert tracker.commits() is None
    tracker.start()
    head = commit_file(repo, "packed.txt")
    assert tracker.commits() == f"{short(repo, base)}..{short(repo, head)}"

    git(repo, "switch", "-q", "--detach")
    tracker.start()
    detached = commit_file(repo, "detached.txt")
    assert tracker.commits() == f"{short(repo, head)}..{short(repo, detached)}"


def test_head_tracker_follows_a_reset_and_a_failed_task_that_committed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    tracker, base = tracking(repo)
    # A task that fails after committing: its commits are not the next task's.
    after_failure = commit_file(repo, "failed-work.txt")
    assert tracker.start() == after_failure
    git(repo, "reset", "-q", "--hard", base)
    assert tracker.commits() == f"{short(repo, after_failure)}..{short(repo, base)}"


def test_head_tracker_in_a_linked_worktree(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "side", str(worktree))
    tracker, base = tracking(worktree)
    commit_file(repo, "on-main.txt")  # the main checkout moving is not this worktree's HEAD
    assert tracker.commits() is None
    tracker.start()
    head = commit_file(worktree, "on-side.txt")
    assert tracker.commits() == f"{short(repo, base)}..{short(repo, head)}"


def test_head_tracker_without_commits_records_no_range(tmp_path: Path) -> None:
    repo = tmp_path / "empty"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    tracker = HeadTracker(repo)
    assert tracker.start() is None
    commit_file(repo, "first.txt")
    assert tracker.commits() is None  # no base to measure from
    assert tracker.start() == git(repo, "rev-parse", "HEAD")
