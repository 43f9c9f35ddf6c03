"""Problems in a backlog that are not decoding errors: it still loads, but a task can never run.

A dependency on an unknown id is allowed (the task simply waits), and so is a cycle, but the
user should hear about both; ``TaskBackend.problems()`` reports what this module finds.
"""

from __future__ import annotations

from collections.abc import Sequence

from cub.tasks.model import Task


def dependency_problems(tasks: Sequence[Task]) -> list[tuple[str, str]]:
    """(task_id, message) for unknown dependencies/parents, self-dependencies and cycles."""
    known = {task.id for task in tasks}
    found: list[tuple[str, str]] = []
    for task in tasks:
        for dep in task.depends_on:
            if dep == task.id:
                found.append((task.id, f"task {task.id!r} depends on itself"))
            elif dep not in known:
                found.append(
                    (task.id, f"task {task.id!r} depends on unknown task {dep!r} (never ready)")
                )
        if task.parent is not None and task.parent not in known:
            found.append((task.id, f"task {task.id!r} has unknown parent {task.parent!r}"))
    for cycle in _cycles(tasks, known):
        found.append((cycle[0], "dependency cycle (never ready): " + " -> ".join(cycle)))
    return found


def _cycles(tasks: Sequence[Task], known: set[str]) -> list[list[str]]:
    """One representative per cycle, by iterative depth-first search (no recursion limit)."""
    edges = {task.id: [d for d in task.depends_on if d in known and d != task.id] for task in tasks}
    state: dict[str, int] = {}  # absent: unvisited, 1: on the current path, 2: finished
    cycles: list[list[str]] = []
    for root in edges:
        if root in state:
            continue
        path: list[str] = [root]
        iterators = [iter(edges[root])]
        state[root] = 1
        while iterators:
            nxt = next(iterators[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iterators.pop()
            elif state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                iterators.append(iter(edges[nxt]))
    return cycles
