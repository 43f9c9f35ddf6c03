"""Which task runs next, and why nothing can.

All functions are pure and linear in the number of tasks: statuses are looked up in one dict
built per call, so a 10,000-task backlog with long dependency chains selects in milliseconds.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from cub.errors import TaskNotFound
from cub.tasks.model import Task

READY_STATUSES = frozenset({"open", "retry"})
PENDING_STATUSES = frozenset({"open", "retry", "in_progress", "blocked"})
# Containers and checkpoints, not work an agent can do.
UNSELECTABLE_TYPES = frozenset({"epic", "gate"})
# What an explicit `--task ID` may run: ready, or failed and being retried by hand.
CLAIMABLE_BY_ID = frozenset({"open", "retry", "failed"})
_EXAMPLES = 3


def ready_tasks(
    tasks: Sequence[Task], *, epic: str | None = None, label: str | None = None
) -> list[Task]:
    """Ready tasks in run order: priority (P0 first), fresh before retry, then file order."""
    status = _status_by_id(tasks)
    ready = [
        task
        for task in tasks
        if task.status in READY_STATUSES
        and task.issue_type not in UNSELECTABLE_TYPES
        and _matches(task, epic, label)
        and not _unmet(task, status)
    ]
    # sort() is stable, so tasks that tie keep their file order.
    ready.sort(key=lambda task: (task.priority, task.status == "retry"))
    return ready


def pick_task(
    tasks: Sequence[Task],
    *,
    epic: str | None = None,
    label: str | None = None,
    task_id: str | None = None,
    exclude: Collection[str] = (),
) -> Task | None:
    """The task a claim should take: the named one if it may run, else the first ready one.

    ``exclude`` holds ids the caller has given up on in this run (e.g. failed under
    ``continue``), so they are not handed out again.
    """
    if task_id is None:
        ready = ready_tasks(tasks, epic=epic, label=label)
        return next((task for task in ready if task.id not in exclude), None)
    for task in tasks:
        if task.id == task_id:
            if task.id in exclude:
                return None
            claimable = task.status in CLAIMABLE_BY_ID
            return task if claimable and task.issue_type not in UNSELECTABLE_TYPES else None
    raise TaskNotFound(f"no task with id {task_id!r}")


def unmet_dependencies(task: Task, tasks: Sequence[Task]) -> list[str]:
    """Dependencies of ``task`` that are not closed (unknown ids count as unmet)."""
    return _unmet(task, _status_by_id(tasks))


def explain_empty(
    tasks: Sequence[Task], *, epic: str | None = None, label: str | None = None
) -> tuple[str, str]:
    """(reason_code, sentence) for why ``ready_tasks`` came back empty."""
    filters = _describe_filters(epic, label)
    selection = [
        task
        for task in tasks
        if task.issue_type not in UNSELECTABLE_TYPES and _matches(task, epic, label)
    ]
    if filters and not selection:
        return "filtered_out", f"no task matches {filters}{_others_ready(tasks)}"
    pending = [task for task in selection if task.status in PENDING_STATUSES]
    if not pending:
        return "all_tasks_done", _all_done_sentence(selection, filters, tasks)
    ready = ready_tasks(tasks, epic=epic, label=label)
    if ready:
        return "tasks_ready", f"{_count(len(ready), 'task')} ready"
    return "no_ready_tasks", _not_ready_sentence(pending, _status_by_id(tasks))


def _all_done_sentence(selection: list[Task], filters: str, tasks: Sequence[Task]) -> str:
    if not selection:
        return "the backlog has no tasks"
    scope = f" matching {filters}" if filters else ""
    failed = sum(1 for task in selection if task.status == "failed")
    sentence = f"all {_count(len(selection), 'task', verb=False)}{scope} are done"
    if len(selection) == 1:
        sentence = f"the only task{scope} is done"
    if failed:
        sentence += f" ({failed} failed)"
    if filters:
        sentence += _others_ready(tasks)
    return sentence


def _not_ready_sentence(pending: list[Task], status: dict[str, str]) -> str:
    waiting = [t for t in pending if t.status in READY_STATUSES and _unmet(t, status)]
    running = [t for t in pending if t.status == "in_progress"]
    blocked = [t for t in pending if t.status == "blocked"]
    parts: list[str] = []
    if waiting:
        examples = ", ".join(
            f"{t.id} on {_describe_unmet(_unmet(t, status), status)}" for t in waiting[:_EXAMPLES]
        )
        more = ", …" if len(waiting) > _EXAMPLES else ""
        parts.append(
            f"{_count(len(waiting), 'task')} waiting on unmet dependencies ({examples}{more})"
        )
    if running:
        examples = ", ".join(
            f"{t.id} by {t.assignee or 'an unknown run'}" for t in running[:_EXAMPLES]
        )
        more = ", …" if len(running) > _EXAMPLES else ""
        parts.append(f"{_count(len(running), 'task')} in progress elsewhere ({examples}{more})")
    if blocked:
        ids = ", ".join(t.id for t in blocked[:_EXAMPLES])
        parts.append(f"{_count(len(blocked), 'task')} marked blocked ({ids})")
    return "no task is ready: " + "; ".join(parts)


def _describe_unmet(unmet: list[str], status: dict[str, str]) -> str:
    return " and ".join(f"{dep} ({status.get(dep, 'unknown id')})" for dep in unmet[:2]) + (
        " and more" if len(unmet) > 2 else ""
    )


def _others_ready(tasks: Sequence[Task]) -> str:
    others = len(ready_tasks(tasks))
    if not others:
        return ""
    return f"; {_count(others, 'other task')} ready without the filter"


def _count(n: int, noun: str, *, verb: bool = True) -> str:
    plural = noun if n == 1 else f"{noun}s"
    if not verb:
        return f"{n} {plural}"
    return f"{n} {plural} {'is' if n == 1 else 'are'}"


def _describe_filters(epic: str | None, label: str | None) -> str:
    parts = []
    if epic is not None:
        parts.append(f"--epic {epic}")
    if label is not None:
        parts.append(f"--label {label}")
    return " and ".join(parts)


def _status_by_id(tasks: Sequence[Task]) -> dict[str, str]:
    return {task.id: task.status for task in tasks}


def _unmet(task: Task, status: dict[str, str]) -> list[str]:
    return [dep for dep in task.depends_on if status.get(dep) != "closed"]


def _matches(task: Task, epic: str | None, label: str | None) -> bool:
    return (epic is None or task.parent == epic) and (label is None or label in task.labels)
