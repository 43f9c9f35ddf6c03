"""What a run knows about itself: identity, counters, and how it is ending."""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from cub import __version__
from cub.records.schemas import (
    BudgetUse,
    ChildRun,
    CurrentTask,
    ErrorInfo,
    HarnessInfo,
    RunnerInfo,
    RunRecord,
    TaskCounts,
    Transition,
)
from cub.records.store import RunStore, utc_now


def error_info(exc: BaseException) -> ErrorInfo:
    return ErrorInfo(
        type=type(exc).__name__,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
    )


@dataclass
class RunContext:
    """The mutable facts of one run. The machine turns them into status.json and run.json."""

    run_id: str
    mode: str
    project_dir: Path | None
    store: RunStore | None
    argv: list[str] = field(default_factory=lambda: list(sys.argv[1:]))
    cwd: str = field(default_factory=os.getcwd)
    parent_run_id: str | None = None
    started_at: str = field(default_factory=utc_now)
    started_monotonic: float = field(default_factory=time.monotonic)
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    cub_version: str = __version__
    config: dict[str, Any] = field(default_factory=dict)
    harness: HarnessInfo | None = None
    branch: str | None = None
    tasks: TaskCounts = field(default_factory=TaskCounts)
    budget: BudgetUse = field(default_factory=BudgetUse)
    history: list[Transition] = field(default_factory=list)
    children: list[ChildRun] = field(default_factory=list)
    current_task: CurrentTask | None = None
    claimed_tasks: list[str] = field(default_factory=list)
    # How the run is ending; set by the trigger that enters a terminal state.
    reason: str | None = None
    reason_code: str | None = None
    error: ErrorInfo | None = None
    interrupt_signal: str | None = None
    last_event: str | None = None
    runner_create_time: float | None = None
    # Set by recovery: the last moment the dead runner was known to be alive.
    ended_at: str | None = None

    def runner(self) -> RunnerInfo:
        if self.runner_create_time is None:
            self.runner_create_time = psutil.Process(self.pid).create_time()
        return RunnerInfo(pid=self.pid, create_time=self.runner_create_time, host=self.host)

    def elapsed(self) -> float:
        if self.ended_at is not None:
            start = datetime.fromisoformat(self.started_at)
            return max(0.0, (datetime.fromisoformat(self.ended_at) - start).total_seconds())
        return time.monotonic() - self.started_monotonic


def add_child_totals(ctx: RunContext, spent: BudgetUse, record: RunRecord) -> None:
    """An ended child's task counts go into the parent's, its usage into ``spent``."""
    tasks, mine = record.tasks, ctx.tasks
    mine.selected += tasks.selected
    mine.succeeded += tasks.succeeded
    mine.failed += tasks.failed
    mine.interrupted += tasks.interrupted
    mine.skipped += tasks.skipped
    mine.killed += tasks.killed
    mine.attempted += [t for t in tasks.attempted if t not in mine.attempted]
    spent.add(record.budget)
    spent.iterations += record.budget.iterations
    ctx.budget.iterations = spent.iterations
