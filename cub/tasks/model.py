"""A task as cub sees it, and the shape of one task in a task file (the beads export format).

Two structs on purpose: ``TaskEntry`` accepts every spelling a task file may use (priority as
``2`` or ``"P2"``, ``dependsOn`` or ``depends_on``, beads' ``dependencies`` objects), and ``Task``
is the one normalised form the rest of cub reads. Backends never rewrite a task from ``Task``:
they apply a small change-set onto the line's original JSON object, so keys cub does not know
survive every rewrite.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, field

from cub.errors import InvalidTaskId

# `blocked` is beads' own status: accepted so a beads export can be pointed at; never ready.
Status = Literal["open", "in_progress", "retry", "closed", "failed", "blocked"]
IssueType = Literal["task", "feature", "bug", "chore", "epic", "gate"]
PriorityName = Literal["P0", "P1", "P2", "P3", "P4"]
Priority = Annotated[int, Meta(ge=0, le=4)]

STATUSES: tuple[str, ...] = Status.__args__  # type: ignore[attr-defined]
ISSUE_TYPES: tuple[str, ...] = IssueType.__args__  # type: ignore[attr-defined]
MAX_TASK_ID_LENGTH = 128
DEFAULT_PRIORITY = 2

_TASK_ID = re.compile(r"[A-Za-z0-9._-]+")


def validate_task_id(task_id: object) -> None:
    """Raise ``InvalidTaskId`` unless ``task_id`` is safe to use as one directory name."""
    if not isinstance(task_id, str) or not task_id:
        raise InvalidTaskId(f"invalid task id {task_id!r}: must be a non-empty string")
    if len(task_id) > MAX_TASK_ID_LENGTH:
        raise InvalidTaskId(
            f"invalid task id {task_id[:20]!r}...: longer than {MAX_TASK_ID_LENGTH} characters"
        )
    if _TASK_ID.fullmatch(task_id) is None:
        raise InvalidTaskId(
            f"invalid task id {task_id!r}: only letters, digits, '.', '_' and '-' are allowed"
        )
    # Task ids become directory names under runs/<id>/tasks/: never let one climb out.
    if task_id in (".", "..") or ".." in task_id:
        raise InvalidTaskId(f"invalid task id {task_id!r}: must not be '.' or contain '..'")


def parse_priority(value: int | str) -> int:
    """``0``..``4`` or ``"P0"``..``"P4"`` (any case) → 0..4; ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"invalid priority {value!r}: expected 0-4 or P0-P4")
    if isinstance(value, int):
        number = value
    else:
        text = value.strip().upper().removeprefix("P")
        if not text.isdigit():
            raise ValueError(f"invalid priority {value!r}: expected 0-4 or P0-P4")
        number = int(text)
    if not 0 <= number <= 4:
        raise ValueError(f"invalid priority {value!r}: expected 0-4 or P0-P4")
    return number


def now_iso() -> str:
    """UTC timestamp with offset, whole seconds: ``2025-01-31T09:30:00+00:00``."""
    return datetime.now(UTC).isoformat(timespec="seconds")


# Task, TaskEntry and BeadsDependency are untracked by the cyclic garbage collector
# (``gc=False``): they hold only strings, numbers and lists of strings, so they can be in no
# cycle, and a backlog of 100,000 tasks would otherwise add as many objects to every full
# collection.


class Task(msgspec.Struct, frozen=True, gc=False):
    """One task, normalised. Immutable: changes go through a backend, which rewrites the file.

    Build one with keywords; `TaskEntry.to_task` alone passes its fields by position (a third
    of the cost, and it runs once per line of a backlog of up to 100,000)."""

    id: str
    title: str
    description: str = ""
    status: Status = "open"
    priority: int = DEFAULT_PRIORITY
    issue_type: IssueType = "task"
    labels: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    parent: str | None = None
    acceptance_criteria: str | list[str] | None = None
    assignee: str | None = None
    attempts: int = 0
    created_at: str | None = None
    updated_at: str | None = None
    closed_at: str | None = None
    close_reason: str | None = None
    notes: str | None = None

    @property
    def priority_name(self) -> str:
        return f"P{self.priority}"


class BeadsDependency(msgspec.Struct, kw_only=True, gc=False):
    """An entry of beads' ``dependencies`` list; only blocking and parent links matter here."""

    depends_on_id: str
    type: str = "blocks"


class TaskEntry(msgspec.Struct, kw_only=True, gc=False):
    """One task as written in a file: lenient about spellings, strict about types."""

    id: str
    title: str
    description: str | None = None
    status: Status = "open"
    priority: Priority | PriorityName = DEFAULT_PRIORITY
    issue_type: IssueType = "task"
    labels: list[str] | None = None
    dependsOn: list[str] | None = None  # the file's own spelling
    depends_on: list[str] | None = None
    dependencies: list[BeadsDependency] | None = None
    parent: str | None = None
    acceptance_criteria: str | list[str] | None = None
    assignee: str | None = None
    attempts: Annotated[int, Meta(ge=0)] = 0
    created_at: str | None = None
    updated_at: str | None = None
    closed_at: str | None = None
    close_reason: str | None = None
    notes: str | None = None

    def to_task(self) -> Task:
        priority = self.priority
        parent = self.parent
        depends_on = self.dependsOn or self.depends_on or []
        if self.dependsOn and self.depends_on:
            # Both spellings on one line: honour both rather than silently drop one.
            depends_on = list(dict.fromkeys([*self.dependsOn, *self.depends_on]))
        if self.dependencies:
            depends_on, parent = _merge_beads_links(depends_on, parent, self.dependencies)
        # By position, in the order of Task's fields (tests/tasks/test_model.py checks it).
        return Task(
            self.id,
            self.title,
            self.description or "",
            self.status,
            priority if isinstance(priority, int) else int(priority[1]),
            self.issue_type,
            self.labels or [],
            depends_on,
            parent,
            self.acceptance_criteria,
            self.assignee,
            self.attempts,
            self.created_at,
            self.updated_at,
            self.closed_at,
            self.close_reason,
            self.notes,
        )


def epic_members(tasks: Iterable[Task], epic_id: str) -> list[Task]:
    """The epic ``epic_id`` (when it is one of ``tasks``) and the tasks under it, in order."""
    return [t for t in tasks if epic_id in (t.id, t.parent)]


def _merge_beads_links(
    depends_on: list[str], parent: str | None, links: list[BeadsDependency]
) -> tuple[list[str], str | None]:
    merged = list(depends_on)
    for link in links:
        if link.type == "blocks" and link.depends_on_id not in merged:
            merged.append(link.depends_on_id)
        elif link.type == "parent-child" and parent is None:
            parent = link.depends_on_id
    return merged, parent


def depends_on_key(raw: dict[str, Any]) -> str:
    """The spelling a line already uses for dependencies, so a rewrite keeps it."""
    return "depends_on" if "depends_on" in raw and "dependsOn" not in raw else "dependsOn"


def new_task_dict(
    task_id: str,
    title: str,
    *,
    description: str = "",
    priority: int = DEFAULT_PRIORITY,
    issue_type: str = "task",
    labels: list[str] | None = None,
    depends_on: list[str] | None = None,
    parent: str | None = None,
    acceptance_criteria: str | list[str] | None = None,
    depends_on_spelling: str = "dependsOn",
) -> dict[str, Any]:
    """The JSON object for a new task, with only the keys that carry information."""
    stamp = now_iso()
    raw: dict[str, Any] = {
        "id": task_id,
        "title": title,
        "description": description,
        "status": "open",
        "priority": priority,
        "issue_type": issue_type,
    }
    if labels:
        raw["labels"] = list(labels)
    if depends_on:
        raw[depends_on_spelling] = list(depends_on)
    if parent:
        raw["parent"] = parent
    if acceptance_criteria:
        raw["acceptance_criteria"] = acceptance_criteria
    raw["created_at"] = stamp
    raw["updated_at"] = stamp
    return raw


TASK_ENTRY_DECODER = msgspec.json.Decoder(TaskEntry)
