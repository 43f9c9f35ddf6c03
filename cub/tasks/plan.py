"""The whole plan of a run: every task it would take, in the order it would take them.

`cub run --ready` shows this, not only what is ready now: a task becomes ready when the tasks it
depends on are done, so the run takes it later. The plan assumes every task succeeds (a failed
one would hold its dependents back); what the run would never take is listed apart, with why.

Simulated the way the loop selects — the first ready task by priority, fresh before retry, then
file order — with a heap keyed the same way, so a plan of 10,000 tasks costs one pass, not one
selection per task.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

from cub.tasks.model import Task
from cub.tasks.selection import CLAIMABLE_BY_ID, READY_STATUSES, UNSELECTABLE_TYPES


class Step(NamedTuple):
    task: Task
    ready_now: bool
    after: list[str]  # the tasks of this plan it waits for (none when ready now)


class Waiting(NamedTuple):
    task: Task
    why: str


class Plan(NamedTuple):
    steps: list[Step]
    waiting: list[Waiting]
    filtered_out: int  # open tasks that --epic/--label leave out


def plan_run(
    tasks: Sequence[Task],
    *,
    epic: str | None = None,
    label: str | None = None,
    task_id: str | None = None,
    max_tasks: int | None = None,
) -> Plan:
    if task_id is not None:
        return _plan_one(tasks, task_id)
    status = {task.id: task.status for task in tasks}
    candidates = [
        (index, task)
        for index, task in enumerate(tasks)
        if task.status in READY_STATUSES and task.issue_type not in UNSELECTABLE_TYPES
    ]
    selectable = {
        task.id: (index, task)
        for index, task in candidates
        if (epic is None and label is None) or _matches(task, epic, label)
    }
    filtered_out = len(candidates) - len(selectable)

    unmet_at_start: dict[str, list[str]] = {}  # what each task waits for, in Step's form
    waits_on: dict[str, int] = {}  # how many of those are not planned yet
    dependents: dict[str, list[str]] = {}
    heap: list[tuple[int, bool, int, str]] = []
    for id_, (index, task) in selectable.items():
        unmet = sorted({dep for dep in task.depends_on if status.get(dep) != "closed"})
        unmet_at_start[id_] = unmet
        waits_on[id_] = len(unmet)
        for dep in unmet:
            dependents.setdefault(dep, []).append(id_)
        if not unmet:
            heap.append((task.priority, task.status == "retry", index, id_))
    heapq.heapify(heap)

    steps: list[Step] = []
    while heap:
        picked = heapq.heappop(heap)[3]
        after = unmet_at_start[picked]
        steps.append(Step(selectable[picked][1], not after, after))
        for dependent in dependents.get(picked, ()):
            waits_on[dependent] -= 1
            if not waits_on[dependent]:
                index, other = selectable[dependent]
                heapq.heappush(heap, (other.priority, other.status == "retry", index, dependent))

    waiting = _waiting(steps, selectable, unmet_at_start, status)
    if max_tasks is not None and len(steps) > max_tasks:
        waiting = [
            Waiting(step.task, f"beyond the run's limit of {max_tasks} task(s)")
            for step in steps[max_tasks:]
        ] + waiting
        steps = steps[:max_tasks]
    return Plan(steps, waiting, filtered_out)


def _waiting(
    steps: list[Step],
    selectable: Mapping[str, tuple[int, Task]],
    unmet_at_start: Mapping[str, list[str]],
    status: Mapping[str, str],
) -> list[Waiting]:
    """The selectable tasks the plan never reaches, each with what holds it back."""
    if len(steps) == len(selectable):
        return []
    planned = {step.task.id for step in steps}
    return [
        Waiting(task, _blocked_by(unmet_at_start[id_], planned, status, selectable))
        for id_, (_, task) in selectable.items()
        if id_ not in planned
    ]


def _plan_one(tasks: Sequence[Task], task_id: str) -> Plan:
    for task in tasks:
        if task.id != task_id:
            continue
        if task.status in CLAIMABLE_BY_ID and task.issue_type not in UNSELECTABLE_TYPES:
            return Plan([Step(task, True, [])], [], 0)
        return Plan([], [Waiting(task, f"it is {task.status}")], 0)
    return Plan([], [], 0)


def _blocked_by(
    unmet: list[str],
    planned: Collection[str],
    status: Mapping[str, str],
    selectable: Collection[str],
) -> str:
    """Why a task never gets ready: what it waits for that this run will never finish."""
    parts = []
    for dep in (dep for dep in unmet if dep not in planned):
        if dep not in status:
            parts.append(f"{dep} (no such task)")
        elif dep in selectable:
            parts.append(f"{dep} (waiting itself)")
        elif status[dep] in READY_STATUSES:
            parts.append(f"{dep} ({status[dep]}, not in this run's selection)")
        else:
            parts.append(f"{dep} ({status[dep]})")
    return "blocked by " + ", ".join(parts) if parts else "blocked"


def _matches(task: Task, epic: str | None, label: str | None) -> bool:
    return (epic is None or task.parent == epic) and (label is None or label in task.labels)
