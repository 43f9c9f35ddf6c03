"""The tasks a run held when it ended without handing them back: each settled from the run's own
record of its attempt. A task whose attempt succeeded is closed, as its run would have closed it;
any other goes back to ``open``; an attempt in flight when the runner died is recorded
``killed``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from cub.config.load import load_config
from cub.errors import CubError
from cub.records.location import runs_dir
from cub.records.reader import runner_alive
from cub.records.schemas import Event, StatusRecord, TaskAttempt
from cub.records.store import RunStore, check_safe_name
from cub.tasks.backend import open_backend
from cub.tasks.beads import BeadsBackend
from cub.tasks.changes import owned_by
from cub.tasks.file_store import FileTaskBackend

if TYPE_CHECKING:
    from cub.tasks.model import Task


def settle_stranded_claims(project_dir: Path) -> list[str]:
    """Claims held by runs that have ended (their run.json exists, their runner is gone) are
    stranded: their run could not hand them back (the task file did not parse then, or it
    failed to write). Each is settled from the run's own record of the attempt: a task whose
    attempt succeeded is closed, as its run would have closed it; any other goes back to
    ``open``. Returns one message per claim settled."""
    try:
        backend = open_backend(project_dir, load_config(project_dir).config)
        if isinstance(backend, FileTaskBackend) and not backend.may_hold_claims():
            return []  # every cub command starts here: no parse of a backlog nobody holds
        claims = [t for t in backend.load() if t.status == "in_progress" and t.assignee]
    except (CubError, OSError):
        return []  # no backlog, or it does not parse yet: the claims wait
    messages = []
    for task in claims:
        owner = task.assignee
        assert owner is not None
        try:
            check_safe_name(owner, "run id")
        except CubError:
            continue  # not a run's id (a person's name, say): not cub's to settle
        run_dir = runs_dir(project_dir) / owner
        if not (run_dir / "run.json").exists() or runner_alive(run_dir):
            continue
        outcome = _last_outcome(run_dir, task.id)
        try:
            if outcome == "succeeded":
                backend.close(
                    task.id,
                    owner,
                    reason=f"done in cub run {owner}; closed by recovery (the run ended "
                    "without closing it)",
                )
                messages.append(f"closed {task.id}: run {owner} ended without closing it")
            elif backend.release(
                task.id,
                owner,
                note=f"released by recovery: run {owner} ended without releasing it",
                uncount=outcome in (None, "interrupted", "killed"),
            ):
                messages.append(f"released {task.id}: run {owner} ended without releasing it")
        except (CubError, OSError):
            continue
    return messages


def _last_outcome(run_dir: Path, task_id: str) -> str | None:
    """The outcome of the run's (last) attempt at ``task_id``; None if it never started one."""
    try:
        path = run_dir / "tasks" / task_id / "task.json"
        return msgspec.json.decode(path.read_bytes(), type=TaskAttempt).outcome
    except (OSError, msgspec.DecodeError, RecursionError):
        return None


def release_claims(
    project_dir: Path, run_dir: Path, status: StatusRecord
) -> tuple[list[Task], list[str]]:
    """Give the dead run's claims back to the backlog; returns the tasks it held and the ids
    of those it closed: a task whose attempt the run had already recorded as succeeded (the
    runner died between writing its task.json and closing it) is closed, not reopened."""
    note = f"released by recovery: run {status.run_id} died"
    try:
        backend = open_backend(project_dir, load_config(project_dir).config)
        if isinstance(backend, FileTaskBackend | BeadsBackend):
            backend.drop_stale_temp_files()  # the runner may have died rewriting the backlog
        # Also a claim the runner made but died before writing down in status.json.
        held = [t for t in backend.load() if owned_by(t, status.run_id)]
        closed: list[str] = []
        for task_id in dict.fromkeys([*status.claimed_tasks, *(t.id for t in held)]):
            if _last_outcome(run_dir, task_id) == "succeeded":
                closed.append(task_id)
                backend.close(
                    task_id,
                    status.run_id,
                    reason=f"done in cub run {status.run_id}; closed by recovery (its runner "
                    "died before closing it)",
                )
                continue
            # Killed with its runner: not an attempt of the task's own.
            backend.release(task_id, status.run_id, note=note, uncount=True)
    except (CubError, OSError):
        # The backlog is unreadable right now; the run is still recorded, and the claim stays
        # visible (assignee = this run id) for a person to clear.
        return [], []
    return held, closed


def record_lost_attempts(
    store: RunStore, status: StatusRecord, held: list[Task], events: list[Event]
) -> int:
    """The attempt in flight when the runner died still gets its task.json: the one status.json
    names, or one whose agent had started (its harness.log exists, its task.json does not)
    before the runner could write that down — found from the claims, or, when the backlog
    cannot be read (its agent broke it), from the run's own directory and journal. Returns how
    many were recorded."""
    lost = []
    if status.current_task is not None:
        task = status.current_task
        lost.append((task.id, task.title, task.attempt, task.started_at))
    journaled = {
        e.task_id: int(e.data.get("attempt") or 1)
        for e in events
        if e.trigger == "start_task" and e.task_id
    }
    titles = {claim.id: (claim.title, claim.attempts) for claim in held}
    tasks_dir = store.run_dir / "tasks"
    started_dirs = sorted(tasks_dir.iterdir()) if tasks_dir.is_dir() else []
    for task_dir in started_dirs:
        task_id = task_dir.name
        if any(task_id == known for known, *_ in lost) or not (task_dir / "harness.log").exists():
            continue
        if task_id not in titles and (task_dir / "task.json").exists():
            continue  # an attempt that ended and was recorded
        title, attempt = titles.get(task_id, (task_id, journaled.get(task_id, 1)))
        # The prompt is written just before the agent starts.
        started = datetime.fromtimestamp((task_dir / "prompt.md").stat().st_mtime, UTC)
        lost.append((task_id, title, attempt, started.isoformat()))
    recorded = 0
    for task_id, title, attempt, started_at in lost:
        path = store.run_dir / "tasks" / task_id / "task.json"
        if path.exists():
            try:
                if msgspec.json.decode(path.read_bytes(), type=TaskAttempt).attempt >= attempt:
                    continue
            except (msgspec.DecodeError, RecursionError):
                pass
        recorded += 1
        store.write_attempt(
            TaskAttempt(
                task_id=task_id,
                title=title,
                attempt=attempt,
                outcome="killed",
                started_at=started_at,
                ended_at=status.updated_at,
                duration_s=0.0,
                error=None,
            )
        )
    return recorded
