"""What each backend operation changes on a task, as a small dict of keys to set.

Kept apart from storage so every backend follows the same rules: a release only undoes the
releasing run's own claim, attempts are counted at claim time (so they survive a crash), and
notes are appended, never overwritten. A value of ``None`` means "remove the key".
"""

from __future__ import annotations

from typing import Any

from cub.tasks.model import Task, now_iso

Changes = dict[str, Any]


def claim(task: Task, run_id: str) -> Changes:
    return {
        "status": "in_progress",
        "assignee": run_id,
        "attempts": task.attempts + 1,
        "updated_at": now_iso(),
    }


def owned_by(task: Task, run_id: str) -> bool:
    """Only the run that claimed a task may hand it back or mark its outcome."""
    return task.status == "in_progress" and task.assignee == run_id


def release(task: Task, run_id: str, note: str | None, uncount: bool = False) -> Changes | None:
    """Hand a claimed task back. ``uncount``: the agent never started, so the claim's attempt
    is given back too (a failing pre-task hook must not use up a task's retries)."""
    if not owned_by(task, run_id):
        return None
    changes: Changes = {"status": "open", "assignee": None, "updated_at": now_iso()}
    if uncount:
        changes["attempts"] = max(0, task.attempts - 1)
    return _with_note(task, note, changes)


def retry(task: Task, run_id: str, note: str | None) -> Changes | None:
    if not owned_by(task, run_id):
        return None
    return _with_note(task, note, {"status": "retry", "assignee": None, "updated_at": now_iso()})


def fail(task: Task, run_id: str, reason: str) -> Changes | None:
    if not owned_by(task, run_id):
        return None
    changes: Changes = {"status": "failed", "assignee": None, "updated_at": now_iso()}
    return _with_note(task, f"failed: {reason}", changes)


def fail_closed(task: Task, reason: str) -> Changes:
    """A task its child run closed, whose work then did not merge: failed after all."""
    return {
        "status": "failed",
        "assignee": None,
        "closed_at": None,
        "close_reason": None,
        "updated_at": now_iso(),
        "notes": append_note(task.notes, f"failed: {reason}"),
    }


def close(task: Task, run_id: str, reason: str) -> Changes:
    # Closing is allowed from any state: a person may close a task by hand with `cub tasks close`.
    stamp = now_iso()
    changes: Changes = {
        "status": "closed",
        "closed_at": stamp,
        "close_reason": reason,
        "updated_at": stamp,
    }
    if task.status == "in_progress" and task.assignee not in (None, run_id):
        changes["notes"] = append_note(task.notes, f"closed by {run_id} while claimed")
    return changes


def reopen(task: Task) -> Changes:
    """Back to ``open`` for another try, from any status; attempts start again from zero."""
    return {
        "status": "open",
        "assignee": None,
        "closed_at": None,
        "close_reason": None,
        "attempts": None,
        "updated_at": now_iso(),
    }


def note(task: Task, text: str) -> Changes:
    return {"notes": append_note(task.notes, text), "updated_at": now_iso()}


def append_note(existing: str | None, text: str) -> str:
    line = f"[{now_iso()}] {text}"
    return f"{existing}\n{line}" if existing else line


def _with_note(task: Task, text: str | None, changes: Changes) -> Changes:
    if text:
        changes["notes"] = append_note(task.notes, text)
    return changes


def apply(raw: dict[str, Any], changes: Changes) -> None:
    """Apply ``changes`` onto a task's original JSON object, keeping every other key."""
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
