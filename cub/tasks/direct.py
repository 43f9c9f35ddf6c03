"""A backlog of one task held in memory: `--direct`'s ad-hoc prompt, or a GitHub issue.

The prompt becomes a one-task backlog, so a direct run goes through exactly the
same loop, records, budgets, timeouts, hooks and signal handling as any other run.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from msgspec.structs import replace

from cub.errors import BackendError, TaskNotFound
from cub.tasks.model import Task, epic_members, now_iso

DIRECT_TASK_ID = "direct"


def _title(prompt: str) -> str:
    first = next((line.strip() for line in prompt.splitlines() if line.strip()), "direct prompt")
    return first if len(first) <= 80 else first[:77] + "..."


class DirectBackend:
    """The backlog of a direct run: its one task, in memory."""

    def __init__(self, prompt: str) -> None:
        self.path = Path("-")
        self.task = Task(
            id=DIRECT_TASK_ID, title=_title(prompt), description=prompt, created_at=now_iso()
        )

    def describe(self) -> str:
        return "the --direct prompt"

    def load(self) -> list[Task]:
        return [self.task]

    def get(self, task_id: str) -> Task:
        if task_id != self.task.id:
            raise TaskNotFound(task_id)
        return self.task

    def problems(self) -> list[str]:
        return []

    def epic_tasks(self, epic_id: str) -> list[Task]:
        return epic_members(self.load(), epic_id)

    def claim_next(
        self,
        run_id: str,
        *,
        epic: str | None,
        label: str | None,
        task_id: str | None = None,
        exclude: Collection[str] = (),
    ) -> Task | None:
        task = self.task
        if task.status not in ("open", "retry") or task.id in exclude:
            return None
        self.task = replace(
            task,
            status="in_progress",
            assignee=run_id,
            attempts=task.attempts + 1,
            updated_at=now_iso(),
        )
        return self.task

    def _set(self, run_id: str, **changes: object) -> bool:
        if self.task.status != "in_progress" or self.task.assignee != run_id:
            return False
        self.task = replace(self.task, updated_at=now_iso(), **changes)
        return True

    def release(
        self, task_id: str, run_id: str, note: str | None = None, *, uncount: bool = False
    ) -> bool:
        attempts = self.task.attempts - 1 if uncount else self.task.attempts
        return self._set(
            run_id, status="open", assignee=None, notes=note, attempts=max(0, attempts)
        )

    def mark_retry(self, task_id: str, run_id: str, note: str | None = None) -> bool:
        return self._set(run_id, status="retry", notes=note)

    def mark_failed(self, task_id: str, run_id: str, reason: str) -> bool:
        return self._set(run_id, status="failed", notes=reason)

    def close(self, task_id: str, run_id: str, reason: str) -> Task:
        self._set(run_id, status="closed", close_reason=reason, closed_at=now_iso())
        return self.task

    def update_notes(self, task_id: str, note: str) -> Task:
        self.task = replace(self.task, notes=note)
        return self.task

    def add(
        self,
        title: str,
        *,
        description: str = "",
        priority: int = 2,
        issue_type: str = "task",
        labels: Sequence[str] = (),
        depends_on: Sequence[str] = (),
        parent: str | None = None,
        acceptance_criteria: str | list[str] | None = None,
        task_id: str | None = None,
    ) -> Task:
        raise BackendError("a direct run has no backlog to add tasks to")
