"""After the sandbox's container has ended: its records, its results on the host, the ending.

Each collection step runs once, even when a second interrupt arrives while collecting and the
kill path collects again: the inner record (recovered from the host when the container died
without one), its copy under the host run, the task results on the host backlog, the branch
fetched back, and the host run's `children` entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from cub.errors import CubError, one_line
from cub.lifecycle.machine import signal_word
from cub.modes.sandbox import workspace as ws
from cub.modes.sandbox.container import client
from cub.records.reader import read_run_json
from cub.records.schemas import ChildRun
from cub.recovery.runs import recover_run
from cub.tasks.file_store import FileTaskBackend

if TYPE_CHECKING:
    from pathlib import Path

    from cub.lifecycle.context import RunContext
    from cub.modes.sandbox.supervise import SandboxRun
    from cub.records.schemas import RunRecord

# (trigger, reason_code, reason)
Ending = tuple[str, str, str]

# An inner run that failed for one of these failed on its tasks; anything else is the sandbox's.
TASK_FAILURE_CODES = (
    "task_failed",
    "tasks_failed",
    "retries_exhausted",
    "agent_stuck",
    "verify_failed",
    "hook_failed",
)


def _step(sb: SandboxRun, name: str) -> bool:
    if name in sb.done:
        return False
    sb.done.add(name)
    return True


def collect(sb: SandboxRun) -> None:
    if sb.pump is not None:
        sb.pump.join(2.0)
    if not sb.workspace_made or sb.container is None:
        return  # no container ever ran: nothing to collect
    if _step(sb, "recover"):
        needed, message = recover_inner(sb.inner_project, sb.inner_dir)
        if needed:
            sb.note("inner_recovered", message=message)
    copied = sb.copied_dir
    if _step(sb, "copy") and copied is not None:
        if ws.copy_records(sb.inner_dir, copied):
            sb.note("inner_records_copied", path=str(copied))
        sb.inner = read_run_json(copied)
    if _step(sb, "sync"):
        _sync_tasks(sb)
    if _step(sb, "fetch"):
        ref, problem = ws.fetch_branch(sb.repo, sb.workspace, sb.branch)
        sb.run.ctx.branch = ref
        sb.note("branch_fetched", branch=ref, problem=problem)
    _record_child(sb)


def _sync_tasks(sb: SandboxRun) -> None:
    inner = sb.inner
    if inner is None or not inner.tasks.attempted:
        return

    host = sb.plan.backend
    assert isinstance(host, FileTaskBackend)  # checked when the run was prepared
    copy = ws.inner_backlog(host, sb.task_file, sb.project, sb.inner_project)
    try:
        updated, conflicts = ws.sync_tasks(host, copy, list(inner.tasks.attempted), sb.before)
    except (CubError, OSError) as exc:
        sb.note("task_sync_failed", error=one_line(exc))
        return
    sb.note("task_sync", updated=",".join(updated), conflicts=",".join(conflicts))


def take_counters(ctx: RunContext, tasks: Any, budget: Any) -> None:
    """The inner run's task counts and usage, as the host run's (the limits stay the host's)."""
    ctx.tasks = msgspec.structs.replace(tasks)
    for key in ("tokens_used", "cost_usd", "cost_incomplete", "tasks_used", "iterations"):
        setattr(ctx.budget, key, getattr(budget, key))


def _record_child(sb: SandboxRun) -> None:
    ctx, inner = sb.run.ctx, sb.inner
    if inner is not None:
        take_counters(ctx, inner.tasks, inner.budget)
        if inner.harness is not None:
            ctx.harness = inner.harness
    ctx.children = [
        child_entry(
            sb.inner_id,
            inner,
            container_id=sb.container.id if sb.container is not None else None,
            image=sb.image,
            exit_code=sb.exit_code,
            oom_killed=sb.oom_killed,
        )
    ]


def child_entry(
    inner_id: str,
    inner: RunRecord | None,
    *,
    container_id: str | None,
    image: str | None,
    exit_code: int | None = None,
    oom_killed: bool | None = None,
) -> ChildRun:
    """The host run's `children` entry for the run inside the container."""
    return ChildRun(
        run_id=inner_id,
        state=inner.state if inner is not None else "unknown",
        exit_code=exit_code,
        reason_code=inner.reason_code if inner is not None else None,
        container_id=container_id,
        image=image,
        oom_killed=oom_killed,
    )


def recover_inner(inner_project: Path, inner_dir: Path) -> tuple[bool, str | None]:
    """Record the inner run if it has no run.json: its container is gone, and with it the
    lock the inner runner held, so crash recovery works from the host. (The agent pids in the
    inner status are the container's; a host process is only ever killed by recovery when its
    pid *and* create_time match, and every process of the container died with it anyway.)
    Returns whether it had to, and what recovery said."""
    if not inner_dir.is_dir() or (inner_dir / "run.json").exists():
        return False, None

    return True, recover_run(inner_project, inner_dir)


def kept(sb: SandboxRun) -> str:
    if sb.plan.request.sandbox_keep and sb.container is not None:
        return f" (container {sb.container.id[:12]} kept)"
    return ""


def ending(sb: SandboxRun) -> Ending:
    """How the host run ends, from how the container and the inner run ended."""
    inner, code, keep = sb.inner, sb.exit_code, kept(sb)
    if sb.run.watch.requested:
        word = signal_word(sb.run.watch.first) or "sigint"
        ended = f"ended {inner.state}" if inner else "left no record"
        return (
            "stopped",
            word,
            f"stopped on {word.upper()}; the sandboxed run {sb.inner_id} {ended}{keep}",
        )
    if sb.oom_killed and (inner is None or inner.state != "completed"):
        memory = sb.plan.config.sandbox.memory
        return (
            "children_failed",
            "sandbox_oom",
            f"the sandbox ran out of memory (sandbox.memory {memory}) and was OOM-killed "
            f"(container exit {code}){keep}",
        )
    if inner is None:
        last = sb.pump.tail[-1] if sb.pump is not None and sb.pump.tail else "no output"
        return (
            "children_failed",
            "sandbox_failed",
            f"the sandbox container exited {code} without a run record: {last}{keep}",
        )
    said = (
        f"the sandboxed run {sb.inner_id} ended {inner.state} ({inner.reason_code}): "
        f"{inner.reason}{keep}"
    )
    if inner.state == "completed":
        quiet = inner.reason_code in ("no_ready_tasks", "filtered_out")
        return ("children_done", "no_ready_tasks" if quiet else "all_tasks_done", said)
    if inner.state == "budget_exhausted":
        return ("exhaust_budget", inner.reason_code, said)
    if inner.state == "failed" and inner.reason_code in TASK_FAILURE_CODES:
        return ("children_failed", "tasks_failed", said)
    return ("children_failed", "sandbox_failed", said)


def clean_up(sb: SandboxRun) -> None:
    """Remove the container (unless --sandbox-keep) and the workspace; the branch stays."""
    container = sb.container
    if container is not None and _step(sb, "container"):
        if sb.plan.request.sandbox_keep:
            sb.note("sandbox_kept", container_id=container.id)
        else:
            try:
                client(10).api.remove_container(container.id, force=True)
                sb.note("sandbox_removed", container_id=container.id)
            except Exception as exc:
                sb.note("sandbox_left", container_id=container.id, error=one_line(exc))
    if sb.workspace_made and _step(sb, "workspace"):
        problem = ws.remove_workspace(sb.workspace)
        sb.note(
            "workspace_removed" if problem is None else "workspace_left",
            path=str(sb.workspace),
            problem=problem,
        )
