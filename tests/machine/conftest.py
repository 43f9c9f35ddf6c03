from __future__ import annotations

from pathlib import Path

import pytest

from cub.records.redact import Redactor
from cub.records.store import RunStore
from cub.run.context import RunContext
from cub.run.machine import RunMachine


def new_machine(project: Path, run_id: str = "run-test", **kwargs: object) -> RunMachine:
    store = RunStore.create(project, run_id, Redactor())
    ctx = RunContext(
        run_id=run_id,
        mode="run",
        project_dir=project,
        store=store,
        argv=["run", "--test"],
        cwd=str(project),
    )
    machine = RunMachine(ctx, **kwargs)  # type: ignore[arg-type]
    machine.start()
    return machine


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / ".cub").mkdir()
    return tmp_path
