"""What a loop asks of a backlog again and again, kept up to date change by change.

A run claims task after task from the same parsed backlog. Selecting afresh each time
(`cub.tasks.selection.ready_tasks`) costs a pass over every task, so a run's cost per task would
grow with the backlog. `BacklogIndex` answers the same questions from state built once per
parsed document and updated by each change the backend applies to it:

- the first ready task in run order (priority, fresh before retry, file order), from a heap per
  ``--epic``/``--label`` filter. An entry is checked against the task as it is now when it
  reaches the top, so an entry a change made stale is dropped there, and every change that
  can make a task ready (its own, or a dependency being closed) pushes it anew;
- the tasks of an epic, for the prompt.

The index is only valid for the document it was built from: a backlog read afresh (another
writer changed the file or the ledger, or a person's change rewrote it) gets a new one.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable

from cub.memory import built_outside_gc
from cub.tasks.model import Task
from cub.tasks.selection import READY_STATUSES, UNSELECTABLE_TYPES

# (priority, a retry, position in the file, id): run order, as `ready_tasks` sorts.
_Entry = tuple[int, bool, int, str]
_Filter = tuple[str | None, str | None]  # (epic, label)


class BacklogIndex:
    def __init__(self, tasks: list[Task], position: Callable[[str], int | None]) -> None:
        # The document's own list and lookup: they see every change the document makes.
        self._tasks = tasks
        self._position = position
        self._dependents: dict[str, list[str]] = {}
        self._children: dict[str, list[str]] = {}
        with built_outside_gc():
            self._link_all(tasks)
        self._heaps: dict[_Filter, list[_Entry]] = {}

    # --- questions -------------------------------------------------------------------------

    def first_ready(
        self, *, epic: str | None, label: str | None, exclude: Collection[str] = ()
    ) -> Task | None:
        """What `selection.pick_task` would pick without a task id, without a pass over
        every task."""
        heap = self._heap((epic, label))
        skipped: list[_Entry] = []
        try:
            while heap:
                task = self._current(heap[0], epic, label)
                if task is None:
                    heapq.heappop(heap)  # stale: the task changed since it was pushed
                elif task.id in exclude:
                    skipped.append(heapq.heappop(heap))  # still ready: kept for later
                else:
                    return task
            return None
        finally:
            for entry in skipped:
                heapq.heappush(heap, entry)

    def epic_tasks(self, epic_id: str) -> list[Task]:
        """The epic (when it is a task) and the tasks under it, in file order."""
        ids = [epic_id, *self._children.get(epic_id, ())]
        return [
            self._tasks[i] for i in sorted(i for i in map(self._position, ids) if i is not None)
        ]

    # --- changes ---------------------------------------------------------------------------

    def changed(self, old: Task | None, new: Task) -> None:
        """The document now holds ``new`` where it held ``old`` (None: ``new`` was added)."""
        if old is None or old.depends_on != new.depends_on or old.parent != new.parent:
            if old is not None:
                self._unlink(old)
            self._link(new)
        if old is None or _selection_fields(old) != _selection_fields(new):
            # (Unchanged, a ready task's entry is on its heaps already.)
            self._offer(new)
        was_closed = old is not None and old.status == "closed"
        if was_closed != (new.status == "closed"):
            # The tasks waiting on this one may have become ready.
            for dependent in self._dependents.get(new.id, ()):
                index = self._position(dependent)
                if index is not None:
                    self._offer(self._tasks[index])

    # --- plumbing --------------------------------------------------------------------------

    def _link_all(self, tasks: Iterable[Task]) -> None:
        # Written out for speed: it runs over the whole backlog at the start of every run.
        # A dependency named twice is linked twice, and unlinked twice.
        dependents, children = self._dependents, self._children
        for task in tasks:
            for dep in task.depends_on:
                if dep in dependents:
                    dependents[dep].append(task.id)
                else:
                    dependents[dep] = [task.id]
            if task.parent is not None:
                if task.parent in children:
                    children[task.parent].append(task.id)
                else:
                    children[task.parent] = [task.id]

    def _link(self, task: Task) -> None:
        self._link_all((task,))

    def _unlink(self, task: Task) -> None:
        for dep in task.depends_on:
            self._dependents[dep].remove(task.id)
        if task.parent is not None:
            self._children[task.parent].remove(task.id)

    def _heap(self, key: _Filter) -> list[_Entry]:
        heap = self._heaps.get(key)
        if heap is None:
            with built_outside_gc():
                heap = self._ready_now(*key)
            heapq.heapify(heap)
            self._heaps[key] = heap
        return heap

    def _ready_now(self, epic: str | None, label: str | None) -> list[_Entry]:
        """The entries of every ready task the filter takes, in one pass (`_ready`'s test,
        with the closed tasks looked up in a set made for it)."""
        closed = {task.id for task in self._tasks if task.status == "closed"}
        unfiltered = epic is None and label is None
        return [
            _entry(index, task)
            for index, task in enumerate(self._tasks)
            if task.status in READY_STATUSES
            and task.issue_type not in UNSELECTABLE_TYPES
            and (unfiltered or _matches(task, epic, label))
            and closed.issuperset(task.depends_on)
        ]

    def _offer(self, task: Task) -> None:
        """Push ``task`` onto every filter's heap it belongs on, if it is ready."""
        if not self._ready(task):
            return
        index = self._position(task.id)
        assert index is not None
        for (epic, label), heap in self._heaps.items():
            if _matches(task, epic, label):
                heapq.heappush(heap, _entry(index, task))

    def _current(self, entry: _Entry, epic: str | None, label: str | None) -> Task | None:
        """The task ``entry`` stands for, if it is still ready, in that place in run order."""
        _, _, index, task_id = entry
        if index >= len(self._tasks) or self._tasks[index].id != task_id:
            return None
        task = self._tasks[index]
        fits = _entry(index, task) == entry and _matches(task, epic, label)
        return task if fits and self._ready(task) else None

    def _ready(self, task: Task) -> bool:
        if task.status not in READY_STATUSES or task.issue_type in UNSELECTABLE_TYPES:
            return False
        return all(self._closed(dep) for dep in task.depends_on)

    def _closed(self, task_id: str) -> bool:
        index = self._position(task_id)
        return index is not None and self._tasks[index].status == "closed"


def _entry(index: int, task: Task) -> _Entry:
    return (task.priority, task.status == "retry", index, task.id)


def _selection_fields(task: Task) -> tuple[object, ...]:
    """What a task's readiness, place in run order and filters depend on."""
    return (task.status, task.issue_type, task.priority, task.depends_on, task.parent, task.labels)


def _matches(task: Task, epic: str | None, label: str | None) -> bool:
    return (epic is None or task.parent == epic) and (label is None or label in task.labels)
