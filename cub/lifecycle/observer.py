"""How a run tells its user what is happening, without knowing about terminals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cub.records.schemas import TaskAttempt
    from cub.tasks.model import Task


class RunObserver(Protocol):
    def message(self, text: str) -> None: ...
    def task_started(self, task: Task, attempt: int) -> None: ...
    def task_finished(self, attempt: TaskAttempt) -> None: ...
    # Whole lines of the agent's output, each ending in a newline, as they arrive.
    def agent_output(self, text: str) -> None: ...
    def journaled(self, line: str) -> None: ...  # a line just appended to events.jsonl
    def progress(
        self, task_id: str, attempt: int, elapsed: float, tokens: int, cost: float | None
    ) -> None: ...


class SilentObserver:
    def message(self, text: str) -> None:
        pass

    def task_started(self, task: Task, attempt: int) -> None:
        pass

    def task_finished(self, attempt: TaskAttempt) -> None:
        pass

    def agent_output(self, text: str) -> None:
        pass

    def journaled(self, line: str) -> None:
        pass

    def progress(
        self, task_id: str, attempt: int, elapsed: float, tokens: int, cost: float | None
    ) -> None:
        pass
