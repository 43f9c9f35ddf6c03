"""What the parent of a parallel run needs of a child run and of the engine that starts it: a
process on this machine (`children.LocalChildren`), or a service of a Docker Swarm
(`cub.modes.swarm`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cub.records.schemas import BudgetUse, ChildRun, RunRecord


class Child(Protocol):
    """A child run as the parent sees it, wherever it runs (`ChildProcess` on this machine)."""

    task_id: str
    run_id: str
    order: int  # selection order: branches are merged in this order
    started_at: float
    signalled: bool
    record: RunRecord | None

    def where(self) -> dict[str, object]: ...
    def ended(self) -> bool: ...
    def has_started(self) -> bool: ...
    def live_budget(self) -> BudgetUse | None: ...
    def signal_group(self, sig: int) -> None: ...
    def kill(self) -> None: ...
    def collect(self, project_dir: Path) -> RunRecord | None: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def state(self) -> str: ...
    def summary(self) -> ChildRun: ...


def child_summary(
    child: Child, *, image: str | None = None, node: str | None = None, problem: str | None = None
) -> ChildRun:
    """What the parent's record says of ``child``, with what its engine knows of where it ran
    (a swarm's image and node) and why it left no record."""
    record = child.record
    return ChildRun(
        run_id=child.run_id,
        state=child.state,
        task_id=child.task_id,
        exit_code=child.exit_code,
        reason_code=record.reason_code if record is not None else None,
        image=image,
        node=node,
        problem=problem,
    )


@dataclass(frozen=True)
class ChildSpec:
    """One child to start: its task, its names, and what is left of the shared budgets."""

    task_id: str
    run_id: str
    parent_id: str
    run_branch: str | None  # the parent's branch, which the child starts from
    order: int  # selection order
    limits: list[str]  # `cub run` flags: what is left of the run's budgets


class ChildEngine(Protocol):
    # How long a stopping child gets beyond its grace and SIGTERM→SIGKILL step.
    stop_margin: float

    def start(self, spec: ChildSpec) -> Child: ...
    def close(self) -> None: ...
