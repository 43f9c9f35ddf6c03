"""`--worktree`: the run works in `.cub/worktrees/<run_id>` on a branch of its own.

A worktree is always created on a named branch (never a detached HEAD), so the commits survive
when the worktree is removed at the end of the run. The task file and the run records stay in
the main project.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cub.errors import SetupFailed
from cub.git import GitError, branch_exists, git

if TYPE_CHECKING:
    from cub.run.driver import Run

WORKTREES_DIR = Path(".cub") / "worktrees"


def worktree_path(project_dir: Path, run_id: str) -> Path:
    return project_dir / WORKTREES_DIR / run_id


def create_worktree(repo: Path, path: Path, branch: str, base: str | None) -> None:
    if path.exists():
        raise SetupFailed("worktree_failed", f"cannot create the worktree: {path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if branch_exists(repo, branch):
            git(repo, "worktree", "add", str(path), branch)
        else:
            git(repo, "worktree", "add", "-b", branch, str(path), base or "HEAD")
    except GitError as exc:
        raise SetupFailed(
            "worktree_failed", f"cannot create the worktree {path}: {exc.reason}"
        ) from exc


def remove_worktree(repo: Path, path: Path) -> str | None:
    """Remove the worktree (its branch stays); returns a problem, or None."""
    try:
        git(repo, "worktree", "remove", "--force", str(path))
    except GitError as exc:
        return f"could not remove the worktree {path}: {exc.reason}"
    return None


def finish_worktree(run: Run) -> None:
    """At the end of the run: remove the run's worktree unless --worktree-keep."""
    plan = run.plan
    if plan is None or not plan.request.worktree or run.work_dir is None:
        return
    if not run.work_dir.exists():
        return
    if plan.request.worktree_keep:
        run.machine.note("worktree_kept", data={"path": str(run.work_dir)})
        return
    assert plan.git_root is not None
    problem = remove_worktree(plan.git_root, run.work_dir)
    run.machine.note(
        "worktree_removed" if problem is None else "worktree_left",
        data={"path": str(run.work_dir), "problem": problem},
    )
