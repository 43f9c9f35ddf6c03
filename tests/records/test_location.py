"""Where a project's state lives: in the repository's common git directory (shared by its
worktrees), per project inside a repository, and in the user's state directory outside git."""

from __future__ import annotations

from pathlib import Path

from cub.records.location import repository_top, runs_dir, state_dir
from tests.helpers.git import git, make_repo


def test_a_repository_keeps_state_in_its_git_directory(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    assert state_dir(repo) == repo / ".git" / "cub"
    assert runs_dir(repo) == repo / ".git" / "cub" / "runs"


def test_a_linked_worktree_shares_the_repositorys_state(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "-b", "side", str(linked))
    assert (linked / ".git").is_file()
    assert state_dir(linked) == (repo / ".git" / "cub").resolve()
    assert repository_top(linked / "sub") == linked


def test_a_project_in_a_subdirectory_has_state_of_its_own(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "apps" / "web").mkdir(parents=True)
    web = state_dir(repo / "apps" / "web")
    assert web.is_relative_to(repo / ".git" / "cub") and web != state_dir(repo)
    assert web != state_dir(repo / "apps")


def test_outside_git_state_is_in_the_users_state_directory(
    tmp_path: Path, isolated_home: Path
) -> None:
    one, two = tmp_path / "a" / "proj", tmp_path / "b" / "proj"
    one.mkdir(parents=True)
    two.mkdir(parents=True)
    base = isolated_home / ".local" / "state" / "cub" / "projects"
    assert state_dir(one).parent == base and state_dir(one).name.startswith("proj-")
    assert state_dir(one) != state_dir(two)  # same name, different projects
    assert state_dir(one) == state_dir(one)
