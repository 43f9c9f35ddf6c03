"""The task backlog: the task model, selection rules, and the backends that store tasks."""

from __future__ import annotations

from cub.tasks.backend import TaskBackend, open_backend
from cub.tasks.model import Task, parse_priority, validate_task_id
from cub.tasks.selection import explain_empty, pick_task, ready_tasks

__all__ = [
    "Task",
    "TaskBackend",
    "explain_empty",
    "open_backend",
    "parse_priority",
    "pick_task",
    "ready_tasks",
    "validate_task_id",
]
