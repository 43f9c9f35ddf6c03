"""A sandboxed run whose host cub died (SIGKILL, OOM): what its own ending would have done.

Nothing on the host stops the container when the host dies, and the work is still in the
workspace clone. Crash recovery (`cub.recovery.runs`) calls `recover_sandbox`, which works from
what the host wrote down while it ran (the journal's `sandbox_workspace` and `sandbox_started`
notes, and the backlog as the sandbox got it): it stops the container (removed, or only
stopped under ``--sandbox-keep``), lets the inner run be recovered, copies its records under
the host run, brings its task results to the host backlog and its commits back as the run's
branch, and removes the workspace once all of that worked.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cub.config.load import load_config
from cub.errors import CubError, one_line
from cub.modes.sandbox import workspace as ws
from cub.modes.sandbox.container import stop_containers_of
from cub.modes.sandbox.results import child_entry, recover_inner, take_counters
from cub.records.reader import read_run_json
from cub.records.schemas import Event
from cub.tasks.backend import open_backend
from cub.tasks.file_store import FileTaskBackend
from cub.workspace.git import repo_root
from cub.workspace.worktree import worktree_path

if TYPE_CHECKING:
    from cub.lifecycle.context import RunContext


def recover_sandbox(
    project_dir: Path, run_dir: Path, ctx: RunContext, events: list[Event]
) -> tuple[dict[str, Any], str]:
    """Returns what was done (the data of the run's `sandbox_recovered` note) and the words
    that add it to the run's reason."""
    workspace_note = _last_note(events, "sandbox_workspace")
    started = _last_note(events, "sandbox_started")
    keep = bool(started.get("keep"))
    containers, problem = stop_containers_of(ctx.run_id, keep=keep, timeout=10)
    done: dict[str, Any] = {"containers": containers, "kept": keep, "problem": problem}
    if problem is not None:
        words = f"; the Docker engine could not stop its container: {problem}"
    elif containers:
        words = "; its container was stopped" + (" and kept" if keep else "")
    else:
        words = ""
    workspace = Path(workspace_note.get("path") or worktree_path(project_dir, ctx.run_id))
    if not workspace.is_dir():
        return done, words
    if problem is None and started.get("inner_dir") and workspace_note.get("branch"):
        done.update(
            _salvage(
                project_dir,
                run_dir,
                ctx,
                workspace,
                Path(started["inner_dir"]),
                workspace_note["branch"],
                started,
            )
        )
        if done.get("branch") is not None:
            words += f"; its work was fetched back to {done['branch']}"
    if done.get("workspace_removed"):
        return done, words
    return done, words + f"; its workspace is kept at {workspace}"


def _salvage(
    project_dir: Path,
    run_dir: Path,
    ctx: RunContext,
    workspace: Path,
    inner_dir: Path,
    branch: str,
    started: dict[str, Any],
) -> dict[str, Any]:
    """The steps of a normal ending after the container (see `results.collect`)."""
    repo = repo_root(project_dir)
    # The project's place in the workspace's clone is its place in the host repository.
    inner_project = (
        workspace / project_dir.resolve().relative_to(repo.resolve()) if repo else workspace
    )
    inner_id = inner_dir.name
    done: dict[str, Any] = {"inner_run_id": inner_id}
    needed, message = recover_inner(inner_project, inner_dir)
    if needed:
        done["inner_recovered"] = message
    copied = run_dir / "inner" / inner_id
    inner = read_run_json(copied) if ws.copy_records(inner_dir, copied) else None
    notes: list[str] = []  # worth saying, but the workspace has nothing more to give
    if inner is not None:
        take_counters(ctx, inner.tasks, inner.budget)
        done["tasks_updated"], task_problem = _sync_tasks(
            project_dir, run_dir, inner_project, list(inner.tasks.attempted)
        )
        if task_problem is not None:
            notes.append(task_problem)
    ctx.children = [
        child_entry(
            inner_id, inner, container_id=started.get("container_id"), image=started.get("image")
        )
    ]
    if repo is None:
        done["problems"] = [*notes, f"{project_dir} is no longer in a git repository"]
        return done
    ref, fetch_problem = ws.fetch_branch(repo, workspace, branch)
    if fetch_problem is not None and ref == branch:  # not even under <branch>-sandbox
        done["problems"] = [*notes, fetch_problem]
        return done  # the commits exist only in the workspace: it stays
    done["branch"] = ctx.branch = ref
    if fetch_problem is not None:
        notes.append(fetch_problem)
    removal_problem = ws.remove_workspace(workspace)
    done["workspace_removed"] = removal_problem is None
    done["problems"] = notes if removal_problem is None else [*notes, removal_problem]
    return done


def _sync_tasks(
    project_dir: Path, run_dir: Path, inner_project: Path, attempted: list[str]
) -> tuple[list[str], str | None]:
    """The inner run's task results onto the host backlog, where the host left them alone."""
    if not attempted:
        return [], None

    try:
        host = open_backend(project_dir, load_config(project_dir).config)
        if not isinstance(host, FileTaskBackend):
            return [], f"cannot apply task results to {host.describe()}"
        at_start = ws.backlog_at_start(run_dir, host.path)
        if at_start is None:
            return [], "the backlog as the sandbox got it was not recorded"
        before = ws.snapshot(type(host)(at_start, project_dir))
        copy = ws.inner_backlog(host, host.path, project_dir, inner_project)
        updated, conflicts = ws.sync_tasks(host, copy, attempted, before)
    except (CubError, OSError, ValueError) as exc:
        return [], f"task results not applied: {one_line(exc)}"
    if conflicts:
        return updated, f"changed on the host meanwhile, left alone: {', '.join(conflicts)}"
    return updated, None


def _last_note(events: list[Event], kind: str) -> dict[str, Any]:
    found = next((e for e in reversed(events) if e.kind == kind), None)
    return dict(found.data or {}) if found is not None else {}
