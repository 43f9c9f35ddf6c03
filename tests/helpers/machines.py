"""Run machines made in the test process, on cub's own store: for the chart tests, and for
runs whose runner "died" (the crash-recovery tests and the fault soak)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cub.lifecycle.context import RunContext
from cub.lifecycle.machine import RunMachine
from cub.records.redact import Redactor
from cub.records.store import RunStore


def new_machine(
    project: Path,
    run_id: str = "run-test",
    *,
    argv: tuple[str, ...] = ("run", "--test"),
    **kwargs: Any,
) -> RunMachine:
    """A started machine (state `created`) with a run directory under ``project``."""
    store = RunStore.create(project, run_id, Redactor())
    ctx = RunContext(
        run_id=run_id,
        mode="run",
        project_dir=project,
        store=store,
        argv=list(argv),
        cwd=str(project),
    )
    machine = RunMachine(ctx, **kwargs)
    machine.start()
    return machine
