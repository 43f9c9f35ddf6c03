"""The task backend interface, and how a project's backend is found.

Detection order (``backend.mode: auto``): ``backend.path`` or ``.cub/tasks.jsonl`` → JSONL,
``prd.json`` at the project root → prd, a ``.beads/`` directory → beads.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Protocol

from cub.config.schema import Config
from cub.errors import Rejected
from cub.tasks.beads import BeadsBackend
from cub.tasks.jsonl import DEFAULT_PATH as JSONL_PATH
from cub.tasks.jsonl import JsonlBackend
from cub.tasks.model import DEFAULT_PRIORITY, Task
from cub.tasks.prd import DEFAULT_PATH as PRD_PATH
from cub.tasks.prd import PrdBackend


class TaskBackend(Protocol):
    """Where tasks live. Every change is atomic; ``claim_next`` never hands a task out twice."""

    path: Path

    def describe(self) -> str:
        """One phrase for messages and records, e.g. ``jsonl .cub/tasks.jsonl``."""
        ...

    def load(self) -> list[Task]:
        """All tasks in file order; raises ``TaskFileError`` naming file, line and problem."""
        ...

    def get(self, task_id: str) -> Task:
        """One task; raises ``TaskNotFound``."""
        ...

    def problems(self) -> list[str]:
        """Non-fatal issues (unknown dependencies, cycles), one line each."""
        ...

    def epic_tasks(self, epic_id: str) -> list[Task]:
        """The epic ``epic_id`` (when it is a task) and the tasks under it, in backlog order:
        what a task's prompt shows of its epic."""
        ...

    def claim_next(
        self,
        run_id: str,
        *,
        epic: str | None,
        label: str | None,
        task_id: str | None = None,
        exclude: Collection[str] = (),
    ) -> Task | None:
        """Under the lock: pick the first ready task not in ``exclude`` (or ``task_id``), mark
        it in_progress for ``run_id`` and count the attempt. None when nothing may be claimed;
        ``TaskNotFound`` when ``task_id`` names no task."""
        ...

    def release(
        self, task_id: str, run_id: str, note: str | None = None, *, uncount: bool = False
    ) -> bool:
        """Back to ``open`` if still claimed by ``run_id``; False (no change) otherwise.
        ``uncount`` also gives back the attempt the claim counted."""
        ...

    def mark_retry(self, task_id: str, run_id: str, note: str | None = None) -> bool:
        """To ``retry`` if still claimed by ``run_id``; False otherwise."""
        ...

    def close(self, task_id: str, run_id: str, reason: str) -> Task:
        """To ``closed`` with ``closed_at`` and ``close_reason``, from any status."""
        ...

    def mark_failed(self, task_id: str, run_id: str, reason: str) -> bool:
        """To ``failed`` (reason appended to notes) if still claimed by ``run_id``."""
        ...

    def update_notes(self, task_id: str, note: str) -> Task:
        """Append a timestamped line to the task's notes."""
        ...

    def add(
        self,
        title: str,
        *,
        description: str = "",
        priority: int = DEFAULT_PRIORITY,
        issue_type: str = "task",
        labels: Sequence[str] = (),
        depends_on: Sequence[str] = (),
        parent: str | None = None,
        acceptance_criteria: str | list[str] | None = None,
        task_id: str | None = None,
    ) -> Task:
        """A new open task; its id is ``<prefix>-<n>`` unless ``task_id`` is given."""
        ...


def open_backend(project_dir: Path, config: Config, *, by_hand: bool = False) -> TaskBackend:
    """The backend ``config.backend`` names, or the one found in ``project_dir``. ``by_hand``:
    a person's closes and notes are written into a task file (a run's go to its ledger, see
    `cub.tasks.ledger`)."""
    mode = config.backend.mode
    configured = _resolve(project_dir, config.backend.path)
    if mode == "jsonl":
        path = configured or project_dir / JSONL_PATH
        return _existing(JsonlBackend(path, project_dir, by_hand=by_hand))
    if mode == "prd":
        path = configured or project_dir / PRD_PATH
        return _existing(PrdBackend(path, project_dir, by_hand=by_hand))
    if mode == "beads":
        if not (project_dir / ".beads").is_dir():
            raise _no_backend(project_dir, "backend.mode is beads but there is no .beads/")
        return BeadsBackend(project_dir)
    return _detect(project_dir, configured, by_hand)


def _detect(project_dir: Path, configured: Path | None, by_hand: bool) -> TaskBackend:
    if configured is not None:
        # A configured path says which file; its suffix says which format.
        backend: TaskBackend = (
            PrdBackend(configured, project_dir, by_hand=by_hand)
            if configured.suffix == ".json"
            else JsonlBackend(configured, project_dir, by_hand=by_hand)
        )
        return _existing(backend)
    if (project_dir / JSONL_PATH).is_file():
        return JsonlBackend(project_dir / JSONL_PATH, project_dir, by_hand=by_hand)
    if (project_dir / PRD_PATH).is_file():
        return PrdBackend(project_dir / PRD_PATH, project_dir, by_hand=by_hand)
    if (project_dir / ".beads").is_dir():
        return BeadsBackend(project_dir)
    raise _no_backend(project_dir)


def _resolve(project_dir: Path, path: str | None) -> Path | None:
    if path is None:
        return None
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else project_dir / candidate


def _existing(backend: TaskBackend) -> TaskBackend:
    if not backend.path.is_file():
        raise Rejected(
            "no_backend",
            f"task file {backend.path} does not exist; run `cub init` to create one",
        )
    return backend


def _no_backend(project_dir: Path, why: str | None = None) -> Rejected:
    looked = (
        f"no task backend found in {project_dir} "
        "(looked for .cub/tasks.jsonl, prd.json, .beads/); run `cub init` to create one"
    )
    return Rejected("no_backend", f"{why}: {looked}" if why else looked)
