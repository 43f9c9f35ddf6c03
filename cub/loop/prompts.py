"""The prompts an agent gets: the loop's rules (system) and the task at hand."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from cub.agents.harness import neutralize_signals

if TYPE_CHECKING:
    from cub.tasks.model import Task

RETRY_LOG_TAIL_BYTES = 4000


def system_prompt(project_dir: Path) -> str:
    """`.cub/runloop.md` when the project has one, else the bundled default."""
    override = project_dir / ".cub" / "runloop.md"
    if override.is_file():
        return override.read_text(encoding="utf-8")
    return _bundled_rules()


@cache
def _bundled_rules() -> str:
    # Read once: the package's own file does not change under a run, the project's may.
    return resources.files("cub.templates").joinpath("runloop.md").read_text(encoding="utf-8")


def _criteria(task: Task) -> list[str]:
    criteria = task.acceptance_criteria
    if not criteria:
        return []
    if isinstance(criteria, str):
        return [line for line in criteria.splitlines() if line.strip()]
    return [str(c) for c in criteria]


def task_prompt(task: Task, backlog: list[Task], previous_log: Path | None = None) -> str:
    """The task at hand, from the task's (and its epic's) text and, on a retry, the end of the
    previous attempt's output. None of it is cub's to vouch for: the agent's signals are
    neutralised in it (`neutralize_signals`), so only the agent's own count."""
    lines = [f"## Task {task.id}: {task.title}", ""]
    if task.description:
        lines += [task.description.strip(), ""]
    criteria = _criteria(task)
    if criteria:
        lines += ["### Acceptance criteria", *[f"- {c.lstrip('- ')}" for c in criteria], ""]
    if task.labels:
        lines += [f"Labels: {', '.join(task.labels)}", ""]
    lines += _epic_context(task, backlog)
    if previous_log is not None and previous_log.exists():
        tail = _tail(previous_log)
        lines += [
            f"### Previous attempt (attempt {task.attempts - 1} of this task failed)",
            "The end of its output:",
            "```",
            tail,
            "```",
            "",
        ]
    return neutralize_signals("\n".join(lines).rstrip() + "\n")


def _epic_context(task: Task, backlog: list[Task]) -> list[str]:
    if not task.parent:
        return []
    by_id = {t.id: t for t in backlog}
    parent = by_id.get(task.parent)
    lines = ["### Context"]
    if parent is not None:
        lines.append(f"Part of epic {parent.id}: {parent.title}")
        if parent.description:
            lines.append(parent.description.strip())
    siblings = [t for t in backlog if t.parent == task.parent and t.id != task.id]
    if siblings:
        lines.append("Other tasks of this epic:")
        lines += [f"- {t.id} [{t.status}] {t.title}" for t in siblings]
    return [*lines, ""]


def _tail(path: Path) -> str:
    with path.open("rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - RETRY_LOG_TAIL_BYTES))
        return fh.read().decode("utf-8", "replace").strip()
