"""`--worktree`: the run works in `.cub/worktrees/<run_id>` on a branch of its own.

A worktree is always created on a named branch (never a detached HEAD), so the commits survive
when the worktree is removed at the end of the run. The task file and the run records stay in
the main project.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from cub.errors import SetupFailed
from cub.records.durable import keep_out_of_git
from cub.workspace.git import GitError, branch_exists, common_dir, git

WORKTREES_DIR = Path(".cub") / "worktrees"


def worktree_path(project_dir: Path, run_id: str) -> Path:
    return project_dir / WORKTREES_DIR / run_id


# Taken around every `git worktree add` and `remove` of cub's, in the repository's common git
# directory, which every worktree of it shares: the children of a `--parallel` run start at the
# same instant, and git's own lock files make a concurrent one fail rather than wait.
WORKTREE_LOCK = "cub-worktree.lock"
# A git command that still meets a lock file (one of git's own, held by a command cub does not
# know of) is tried again this many times, after 0.1 s, 0.2 s, 0.4 s, ...
_LOCKED_RETRIES = 5


def create_worktree(repo: Path, path: Path, branch: str, base: str | None) -> bool:
    """Check ``branch`` out at ``path`` (creating it from ``base`` if needed); returns whether
    the branch was created here."""
    if path.exists():
        raise SetupFailed("worktree_failed", f"cannot create the worktree: {path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    keep_out_of_git(path.parent)  # the checkout's `git status` never lists the runs' worktrees
    try:
        with worktree_lock(repo):
            created = not branch_exists(repo, branch)
            for retry in range(_LOCKED_RETRIES + 1):
                try:
                    # After a failed try, git is asked again: that try may have made the branch.
                    _add_worktree(repo, path, branch, base, None if retry else not created)
                    return created
                except GitError as exc:
                    if retry == _LOCKED_RETRIES or not _met_a_lock(exc):
                        raise
                _undo_partial_add(repo, path)
                time.sleep(0.1 * 2**retry)
    except (GitError, OSError) as exc:
        reason = exc.reason if isinstance(exc, GitError) else str(exc)
        raise SetupFailed(
            "worktree_failed", f"cannot create the worktree {path}: {reason}"
        ) from exc
    raise AssertionError("unreachable: the last try returns or raises")


def _add_worktree(
    repo: Path, path: Path, branch: str, base: str | None, exists: bool | None
) -> None:
    """``exists``: whether ``branch`` exists, if known (None: ask git)."""
    if exists is None:
        exists = branch_exists(repo, branch)  # also one that a failed try had made
    if exists:
        git(repo, "worktree", "add", str(path), branch)
    else:
        git(repo, "worktree", "add", "-b", branch, str(path), base or "HEAD")


def _met_a_lock(exc: GitError) -> bool:
    reason = exc.reason.lower()
    return ".lock" in reason or "cannot lock" in reason or "unable to lock" in reason


def _undo_partial_add(repo: Path, path: Path) -> None:
    """What a failed `git worktree add` may have left: the directory and its registration.
    (Under the lock no other worktree of cub's is half-made, so pruning touches none.)"""
    shutil.rmtree(path, ignore_errors=True)
    git(repo, "worktree", "prune", check=False)


@contextlib.contextmanager
def worktree_lock(repo: Path) -> Iterator[None]:
    """Hold cub's worktree lock of ``repo`` (waiting for it): one add or remove at a time."""
    fd = os.open(common_dir(repo) / WORKTREE_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remove_worktree(repo: Path, path: Path) -> str | None:
    """Remove the worktree (its branch stays); returns a problem, or None."""
    try:
        with worktree_lock(repo):
            git(repo, "worktree", "remove", "--force", str(path))
    except (GitError, OSError) as exc:
        reason = exc.reason if isinstance(exc, GitError) else str(exc)
        return f"could not remove the worktree {path}: {reason}"
    return None
