"""The sandbox's workspace: what the container may write, and how its results come back.

Design: the container gets a standalone clone, never the host repository or a `git worktree`.
A worktree's `.git` is a file pointing into the main repository's `.git/worktrees/<name>`;
mounting that too would make the host's `.git` (every branch, the index, the config) writable
from inside the container. Instead the run's branch is created in the host repository (no
checkout: the host's working tree and HEAD are untouched), cloned with `--no-hardlinks` into
`.cub/worktrees/<run_id>` (already git-ignored; the clone's objects are copies, so nothing in it
shares an inode with the host's `.git`), and only that directory is mounted. When the container
has ended, the branch is fetched back into the host repository (fast-forward only): the agent's
commits come back as commits on that branch, and nothing else on the host was writable.

What the inner run needs besides the committed tree comes along as copies: the task file,
`.cub/config.json`, `.cub/runloop.md` and `.cub/hooks/` (when they are missing or differ in the
clone), and the user's cub config and hooks (under the clone's `.git/`, never tracked).

Task status sync: the inner run claims, closes and fails tasks in its copy of the task file.
The backend API is claim-based (only the run holding a claim may release or fail a task), and
the host never claimed these tasks, so the results are applied by a locked rewrite instead:
under the task file's own lock and atomic replace (the backend's transaction), for each task the
inner run attempted, copy the keys a run changes (status, assignee, attempts, notes,
close_reason, closed_at, updated_at) — but only if the host's task is still exactly as it was
when the sandbox started; a task changed on the host meanwhile is left alone and reported.
"""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from cub.errors import CubError, SetupFailed
from cub.records.durable import make_private_dir, write_atomic
from cub.tasks.file_store import FileTaskBackend
from cub.workspace.git import GitError, branch_exists, git

if TYPE_CHECKING:
    from cub.tasks.backend import TaskBackend
    from cub.tasks.file_store import FileTaskBackend
    from cub.tasks.model import Task

# Where the user's cub config and hooks are copied inside the clone (XDG_CONFIG_HOME).
USER_CONFIG_DIR = Path(".git") / "cub-sandbox-config"
_PROJECT_FILES = ("config.json", "runloop.md")
SYNC_KEYS = ("status", "assignee", "attempts", "notes", "close_reason", "closed_at", "updated_at")


def create_workspace(repo: Path, workspace: Path, branch: str, base: str | None) -> bool:
    """Create ``branch`` in the host repo (unless it exists) and clone it into ``workspace``.
    Returns whether the branch was created. (The caller has made sure it does not exist.)"""
    created = False
    try:
        if not branch_exists(repo, branch):
            git(repo, "branch", "--no-track", branch, base or "HEAD")
            created = True
        workspace.parent.mkdir(parents=True, exist_ok=True)
        git(
            repo,
            "clone",
            "--quiet",
            "--no-hardlinks",
            "--single-branch",
            "--branch",
            branch,
            str(repo),
            str(workspace),
            timeout=600,
        )
        # The clone's origin is a host path the container cannot see anyway.
        git(workspace, "remote", "remove", "origin")
    except GitError as exc:
        shutil.rmtree(workspace, ignore_errors=True)
        raise SetupFailed(
            "sandbox_failed", f"cannot create the sandbox workspace {workspace}: {exc.reason}"
        ) from exc
    return created


def copy_project_files(project: Path, inner_project: Path, host: FileTaskBackend) -> list[str]:
    """Copy the backlog (as the host sees it: its task file with the ledger laid over it) and
    cub's project files into the clone where they are missing or differ; returns what was
    copied (paths relative to the project)."""
    copied = []
    backlog = inner_project / host.path.relative_to(project)
    data = host.snapshot_bytes()
    if not backlog.is_file() or backlog.read_bytes() != data:
        backlog.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(backlog, data, mode=0o644)
        copied.append(str(host.path.relative_to(project)))
    cub_dir = project / ".cub"
    for source in (cub_dir / name for name in _PROJECT_FILES):
        if not source.is_file():
            continue
        target = inner_project / source.relative_to(project)
        if target.is_file() and filecmp.cmp(source, target, shallow=False):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied.append(str(source.relative_to(project)))
    hooks = cub_dir / "hooks"
    if hooks.is_dir():
        shutil.copytree(hooks, inner_project / ".cub" / "hooks", dirs_exist_ok=True)
        copied.append(".cub/hooks/")
    return copied


def copy_user_config(user_config: Path, workspace: Path) -> Path | None:
    """Copy the user's cub config file and hooks into the clone's .git/; returns the directory
    to use as XDG_CONFIG_HOME inside the container, or None when there is nothing to copy."""
    source = user_config.parent  # .../cub
    config_file, hooks = source / "config.json", source / "hooks"
    if not config_file.is_file() and not hooks.is_dir():
        return None
    home = workspace / USER_CONFIG_DIR
    (home / "cub").mkdir(parents=True, exist_ok=True)
    if config_file.is_file():
        shutil.copy2(config_file, home / "cub" / "config.json")
    if hooks.is_dir():
        shutil.copytree(hooks, home / "cub" / "hooks", dirs_exist_ok=True)
    return home


def git_identity(repo: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """GIT_AUTHOR_*/GIT_COMMITTER_* for the container: from the host environment, else from
    the host repository's git config (the container sees neither ~/.gitconfig nor .git/config
    of the host)."""
    env = env or {}
    identity = {}
    configured = {
        "name": git(repo, "config", "user.name", check=False),
        "email": git(repo, "config", "user.email", check=False),
    }
    for role in ("AUTHOR", "COMMITTER"):
        for part in ("name", "email"):
            key = f"GIT_{role}_{part.upper()}"
            value = env.get(key) or configured[part]
            if value:
                identity[key] = value
    return identity


def fetch_branch(repo: Path, workspace: Path, branch: str) -> tuple[str, str | None]:
    """Bring the clone's branch back into the host repository (fast-forward only).

    Returns (the host ref that now holds the work, a problem or None). When the host branch
    cannot be fast-forwarded (changed meanwhile, or checked out), the work is kept under
    ``<branch>-sandbox`` instead, never lost and never forced over the host's branch."""

    def fetch(refspec: str) -> None:
        git(repo, "fetch", "--quiet", "--no-tags", str(workspace), refspec, timeout=600)

    try:
        fetch(f"refs/heads/{branch}:refs/heads/{branch}")
        return branch, None
    except GitError as exc:
        fallback = f"{branch}-sandbox"
        try:
            fetch(f"+refs/heads/{branch}:refs/heads/{fallback}")
        except GitError as again:
            return branch, f"could not fetch {branch} back: {exc.reason}; {again.reason}"
        return (
            fallback,
            f"{branch} could not be fast-forwarded ({exc.reason}); the work is on {fallback}",
        )


# Under the host run's directory: the backlog as the sandbox got it.
BACKLOG_AT_START_DIR = "sandbox-backlog"


def keep_backlog_at_start(host: FileTaskBackend, run_dir: Path) -> Path:
    """Copy the host backlog into the run's records as the sandbox gets it, so that even a
    recovery after the host died can tell the host's own later changes from the sandbox's."""
    target = run_dir / BACKLOG_AT_START_DIR / host.path.name
    make_private_dir(target.parent)
    write_atomic(target, host.snapshot_bytes())
    return target


def backlog_at_start(run_dir: Path, task_file: Path) -> Path | None:
    path = run_dir / BACKLOG_AT_START_DIR / task_file.name
    return path if path.is_file() else None


def inner_backlog(
    host: FileTaskBackend, task_file: Path, project: Path, inner_project: Path
) -> FileTaskBackend:
    """The inner run's copy of the host's task file, read the way the host reads its own."""
    return type(host)(inner_project / task_file.relative_to(project), inner_project)


def copy_records(source: Path, target: Path) -> bool:
    """Copy the inner run's directory under the host run (replacing an earlier copy)."""
    if not source.is_dir():
        return False
    make_private_dir(target.parent)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, symlinks=True)
    return True


def remove_workspace(workspace: Path) -> str | None:
    try:
        shutil.rmtree(workspace)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"could not remove the sandbox workspace {workspace}: {exc}"
    return None


def snapshot(backend: TaskBackend) -> dict[str, Task]:
    return {task.id: task for task in backend.load()}


def sync_tasks(
    host: TaskBackend, inner: TaskBackend, task_ids: list[str], before: dict[str, Task]
) -> tuple[list[str], list[str]]:
    """Apply the inner run's changes to ``task_ids`` onto the host backlog (see the module
    docstring). Returns (tasks updated, tasks left alone because the host changed them)."""
    if not isinstance(host, FileTaskBackend):
        raise CubError(f"cannot apply task changes to {host.describe()}")
    results = {task.id: task for task in inner.load() if task.id in task_ids}
    updated: list[str] = []
    conflicts: list[str] = []
    with host._transaction() as document:  # the backend's own lock and atomic replace
        for task_id in task_ids:
            index = document.position(task_id)
            result, original = results.get(task_id), before.get(task_id)
            if index is None or result is None or original is None:
                continue
            if document.tasks[index] != original:
                conflicts.append(task_id)
                continue
            changes = {
                key: getattr(result, key)
                for key in SYNC_KEYS
                if getattr(result, key) != getattr(original, key)
            }
            if changes:
                document.update(index, changes)
                updated.append(task_id)
    return updated, conflicts
